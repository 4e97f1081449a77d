"""The work folder and a newcomer's first commands: one command per work folder (a lock the OS
drops when its holder dies), failed starts that leave nothing behind, and one-line errors that
name what is wrong (a missing folder, a JSON column, a budget under a cent)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from data_gen.__main__ import main
from data_gen.llm.types import BudgetExceededError
from tests.data_gen.test_kill_resume import ENV
from tests.data_gen.test_llm import client, reqs
from tests.data_gen.test_pipeline import DEMO, KEY, REPO, build_args
from tests.helpers.fake_openai_server import FakeOpenAIServer, rolebench_responder


def test_a_second_command_on_a_busy_work_folder_fails_at_once_naming_the_pid(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    work = tmp_path / "work"
    with FakeOpenAIServer(rolebench_responder) as srv:
        srv.hold_after = 3  # the first build waits on the server, holding the folder
        args = build_args(srv.base_url, work, tmp_path / "out")
        first = subprocess.Popen([sys.executable, "-m", "data_gen", *args], env=ENV, cwd=REPO, stderr=subprocess.PIPE)
        try:
            deadline = time.time() + 60
            while sum(srv.successes.values()) < 3 and time.time() < deadline:
                assert first.poll() is None, first.communicate()
                time.sleep(0.05)
            profiles = [
                "profiles",
                "--work",
                str(work),
                "--scripts",
                str(DEMO / "scripts-eng"),
                "--base-url",
                srv.base_url,
            ]
            for second in (args, profiles):
                assert main(second) == 1
                err = capsys.readouterr().err.strip()
                assert err == (
                    f"error: {work}: in use by another data_gen command (PID {first.pid}); "
                    "wait for it to end or use another --work"
                )
        finally:
            first.send_signal(signal.SIGKILL)  # the OS drops its lock: never stale
            first.wait()
            srv.hold_after = None
            srv.release.set()
        assert main(args) == 0


def test_a_failed_start_leaves_no_work_folder_or_journal(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    work = tmp_path / "work"
    assert main(build_args("http://127.0.0.1:9/v1", work, tmp_path / "out")) == 1
    assert "no API key" in capsys.readouterr().err
    assert not work.exists()  # an empty journal.sqlite was left before


def test_a_missing_scripts_folder_says_no_such_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    missing = tmp_path / "scripts"
    args = [
        "profiles",
        "--work",
        str(tmp_path / "work"),
        "--scripts",
        str(missing),
        "--base-url",
        "http://127.0.0.1:9/v1",
    ]
    assert main(args) == 1
    assert (
        capsys.readouterr().err.strip() == f"error: {missing}: no such folder (--scripts: the folder of *.txt scripts)"
    )
    assert not (tmp_path / "work").exists()


def test_the_budget_message_has_digits_under_a_cent(tmp_path):
    with FakeOpenAIServer() as srv:
        c = client(srv, tmp_path, max_cost=5e-5, concurrency=1)  # less than one worst-case request
        with pytest.raises(BudgetExceededError) as err:
            c.run_many(reqs(2))
        c.close()
    assert "of --max-cost $0.0000500," in str(err.value) and "$0.0000 " not in str(err.value)


@pytest.mark.parametrize("which", ["prices", "desc", "release_manifest", "shard_manifest"])
def test_json_errors_name_line_and_column(tmp_path, which, capsys):
    from data_gen.llm.limits import PriceTable
    from data_gen.release import cli as release
    from data_gen.release.verify import verify_release

    bad = '{\n  "a": 1,\n  "b" 2\n}\n'  # line 3, column 7: a missing ':'
    if which == "prices":
        (tmp_path / "prices.json").write_text(bad)
        with pytest.raises(Exception, match=r"prices.json:3: invalid JSON \(Expecting ':' delimiter at column 7\)"):
            PriceTable.load(tmp_path / "prices.json")
    elif which == "desc":
        (tmp_path / "src" / "profiles-eng").mkdir(parents=True)
        (tmp_path / "src" / "profiles-eng" / "desc.json").write_text(bad)
        assert (
            release.main(["build", "--from", str(tmp_path / "src"), "--version", "1.0.0", "--out", str(tmp_path / "o")])
            == 1
        )
        assert (
            capsys.readouterr().err.strip().endswith("desc.json:3: invalid JSON (Expecting ':' delimiter at column 7)")
        )
    elif which == "release_manifest":
        (tmp_path / "manifest.json").write_text(bad)
        assert verify_release(tmp_path).problems == [
            f"{tmp_path / 'manifest.json'}:3: invalid JSON (Expecting ':' delimiter at column 7)"
        ]
    else:
        (tmp_path / "v1.0.0").mkdir()
        (tmp_path / "v1.0.0" / "manifest.json").write_text(bad)
        assert release.main(["build", "--from", str(tmp_path), "--version", "1.0.0", "--out", str(tmp_path / "o")]) == 1
        assert capsys.readouterr().err.strip() == (
            f"error: {tmp_path / 'v1.0.0' / 'manifest.json'}:3: invalid JSON (Expecting ':' delimiter at column 7)"
        )
