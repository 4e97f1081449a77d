"""SIGKILL at arbitrary moments: `python -m data_gen build` is killed at random points of every
stage (a few ms after a chosen answer was sent, so answers are in transit) and rerun, several
times in one chain per seed. A kill may lose only the requests in flight (at most --concurrency),
each rerun pays again for exactly those, and the final output is byte-identical to an
uninterrupted run."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.data_gen.test_pipeline import KEY, REPO, build_args, tree
from tests.helpers.fake_openai_server import FakeOpenAIServer, body_key, request_kind, rolebench_responder

CONCURRENCY = 4  # build_args' --concurrency: the most requests a build has in flight
STAGES = ("profiles", "context-instruct", "rolegpt")
ENV = {**os.environ, "OPENAI_API_KEY": KEY, "PYTHONPATH": str(REPO)}


def journal_requests(path: Path) -> list[dict]:
    """The server-side bodies of the journaled answers, in the order they were committed."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT model, request FROM responses WHERE error IS NULL ORDER BY created").fetchall()
    finally:
        db.close()
    return [
        {"model": model, "messages": req["messages"], **req["params"]}
        for model, req in ((m, json.loads(r)) for m, r in rows)
    ]


def command(url: str, tmp: Path) -> list[str]:
    return [sys.executable, "-m", "data_gen", *build_args(url, tmp / "work", tmp / "out")]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted build; returns its folder and the answer ordinals where each stage ends."""
    tmp = tmp_path_factory.mktemp("uninterrupted")
    with FakeOpenAIServer(rolebench_responder) as srv:
        run = subprocess.run(command(srv.base_url, tmp), env=ENV, cwd=REPO, capture_output=True, text=True)
        assert run.returncode == 0, run.stderr[-2000:]
        served = set(srv.successes)
    bodies = journal_requests(tmp / "work" / "journal.sqlite")
    assert {body_key(b) for b in bodies} == served  # journal rows map onto the server's request bodies
    kinds = [request_kind(b) for b in bodies]
    assert kinds == sorted(kinds, key=STAGES.index)  # stages ask one after the other
    ends = [sum(kinds.count(s) for s in STAGES[: i + 1]) for i in range(len(STAGES))]
    return tmp, ends


def run_and_kill(cmd: list[str], srv: FakeOpenAIServer, at: int, delay: float) -> tuple[bool, int]:
    """Run the build; SIGKILL it `delay` s after the server has answered `at` distinct requests.
    Returns (killed, requests open at the server at the kill)."""
    proc = subprocess.Popen(cmd, env=ENV, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    fired = threading.Event()
    state = {"open": 0}

    def kill() -> None:
        state["open"] = srv.open_requests
        proc.send_signal(signal.SIGKILL)

    def on_served(count: int) -> None:
        if count >= at and not fired.is_set():
            fired.set()
            threading.Timer(delay, kill).start()

    srv.on_served = on_served
    try:
        _, err = proc.communicate(timeout=120)
    finally:
        srv.on_served = None
    if proc.returncode == -signal.SIGKILL:
        return True, state["open"]
    assert proc.returncode == 0, err.decode()[-2000:]
    return False, 0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_sigkills_lose_only_requests_in_flight_and_resume_byte_identical(reference, tmp_path, seed):
    ref_tmp, ends = reference
    rng = random.Random(seed)
    starts = [0, *ends[:-1]]
    points = [(rng.randint(lo + 1, hi), rng.uniform(0, 0.03)) for lo, hi in zip(starts, ends)]
    points.append((ends[-1], rng.uniform(0, 0.3)))  # after the last answer: journal writes and the shards stage
    journal = tmp_path / "work" / "journal.sqlite"
    lost_per_kill, open_per_kill = [], []
    with FakeOpenAIServer(rolebench_responder) as srv:
        cmd = command(srv.base_url, tmp_path)
        for at, delay in points:
            killed, open_at_kill = run_and_kill(cmd, srv, at, delay)
            if not killed:
                break
            with srv.lock:
                served = set(srv.successes)
            journaled = {body_key(b) for b in journal_requests(journal)} if journal.exists() else set()
            lost = served - journaled  # answers the server sent that the killed build never committed
            assert len(lost) <= CONCURRENCY, (at, delay, len(lost), open_at_kill)
            lost_per_kill.append(len(lost))
            open_per_kill.append(open_at_kill)
            if (tmp_path / "out" / "v0.1.0").exists():
                break  # killed after the shard set was renamed into place: the build is complete
        else:
            killed, _ = run_and_kill(cmd, srv, 10**9, 0)  # no kill: finish the build
            assert not killed
        paid_again = sum(n - 1 for n in srv.successes.values())
    print(f"seed {seed}: kills at {points}, lost {lost_per_kill}, open at the server {open_per_kill}")
    assert len(lost_per_kill) >= len(STAGES), lost_per_kill  # a kill landed in every stage that asks
    assert paid_again == sum(lost_per_kill)  # nothing else was paid twice
    assert tree(tmp_path / "out" / "v0.1.0") == tree(ref_tmp / "out" / "v0.1.0")
    for name in ("context_instruct-eng.jsonl", "rolegpt-eng.jsonl"):
        assert (tmp_path / "work" / name).read_bytes() == (ref_tmp / "work" / name).read_bytes()
