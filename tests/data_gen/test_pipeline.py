"""data_gen end to end against a local OpenAI-compatible server: layout, manifest, offline
rebuild, SIGKILL + restart (no request paid twice, byte-identical output), bad input, secrets."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from data_gen.__main__ import main
from tests.helpers.fake_openai_server import FakeOpenAIServer, hash_faults, rolebench_responder

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "data_gen" / "demo"
KEY = "sk-test-key"


def build_args(srv_url: str | None, work: Path, out: Path, version: str = "0.1.0", *extra: str) -> list[str]:
    args = [
        "build",
        "--work",
        str(work),
        "--out",
        str(out),
        "--version",
        version,
        "--scripts",
        str(DEMO / "scripts-eng"),
        "--instructions",
        str(DEMO / "instructions-eng.jsonl"),
        "--segment-tokens",
        "250",
        "--model",
        "fake-model",
        "--concurrency",
        "4",
        "--timeout",
        "30",
        "--backoff-base",
        "0.05",
        "--no-progress",
        *extra,
    ]
    if srv_url:
        args += ["--base-url", srv_url]
    return args


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def faults():
    # hangs past the timeout are exercised in test_data_gen_llm (a timed-out answer may still be
    # delivered and counted by the server, which would blur the "paid once" count here)
    return hash_faults(every_429=17, every_500=13, every_malformed=19)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One uninterrupted build with injected faults (shared by several tests)."""
    tmp = tmp_path_factory.mktemp("built")
    with FakeOpenAIServer(rolebench_responder, fault_plan=faults(), retry_after="0", hang_seconds=4) as srv:
        os.environ["OPENAI_API_KEY"] = KEY
        try:
            assert main(build_args(srv.base_url, tmp / "work", tmp / "out")) == 0
        finally:
            del os.environ["OPENAI_API_KEY"]
        stats = srv.stats()
    return tmp, stats


def test_build_writes_rolebench_layout_and_manifest(built):
    tmp, stats = built
    v = tmp / "out" / "v0.1.0"
    files = tree(v)
    base = "rolebench-eng/instruction-generalization"
    for split in ("general", "role_specific"):
        for name in ("train", "test", "rolegpt_baseline"):
            for gen in ("instruction-generalization", "role-generalization"):
                assert f"rolebench-eng/{gen}/{split}/{name}.jsonl" in files
    assert {
        "profiles-eng/desc.json",
        "profiles-eng/scripts.json",
        "profiles-eng/split_info.txt",
        "profiles-eng/profiles-eng-Hamlet.jsonl",
        f"{base}/general/raw.jsonl",
        "manifest.json",
    } <= set(files)
    umask = os.umask(0)
    os.umask(umask)
    modes = {rel: (v / rel).stat().st_mode & 0o777 for rel in files}
    assert set(modes.values()) == {0o666 & ~umask}, modes  # a shard set is for sharing (mkstemp made them 0600)
    rows = lambda rel: [json.loads(x) for x in files[rel].decode().splitlines()]  # noqa: E731
    prof = rows("profiles-eng/profiles-eng-Hamlet.jsonl")
    assert set(prof[0]) == {"act_id", "diag_id", "role", "content"}
    assert any(r["role"] == "Hamlet" for r in prof) and any(r["role"] == "HORATIO" for r in prof)
    train, test = rows(f"{base}/role_specific/train.jsonl"), rows(f"{base}/role_specific/test.jsonl")
    assert train and test
    assert all(isinstance(r["type"], str) and r["type"] in ("script_based", "script_agnostic") for r in train)
    assert all(r["type"] == [r["type"][0]] * len(r["generated"]) for r in test)
    assert {r["type"] for r in train} == {"script_based", "script_agnostic"}
    general = rows(f"{base}/general/train.jsonl")
    assert all(1 <= len(r["generated"]) <= 5 for r in general)
    # instruction generalisation: no test instruction is trained on; role generalisation: no test role
    assert not {r["question"] for r in general} & {r["question"] for r in rows(f"{base}/general/test.jsonl")}
    rg = "rolebench-eng/role-generalization/general"
    assert not {r["role"] for r in rows(f"{rg}/train.jsonl")} & {r["role"] for r in rows(f"{rg}/test.jsonl")}
    raw = rows(f"{base}/general/raw.jsonl")
    instructions = [json.loads(x) for x in (DEMO / "instructions-eng.jsonl").read_text().splitlines()]
    outputs = {i["output"] for i in instructions if "output" in i}
    assert raw and all(r["generated"][0] in outputs for r in raw)

    manifest = json.loads(files["manifest.json"])
    import hashlib

    for rel, entry in manifest["files"].items():
        assert hashlib.sha256(files[rel]).hexdigest() == entry["sha256"]
        if rel.endswith(".jsonl"):
            assert entry["rows"] == len(files[rel].decode().splitlines())
    assert manifest["models"] == ["fake-model"] and manifest["generator"]["config"]["rolegpt"]["samples"] == 6
    assert manifest["generator"]["config"]["profiles"]["segment_tokens"] == 250  # each stage's own flags
    assert (
        "role_system_en.txt" in manifest["prompt_templates"]
        and "ci_script_based_en.txt" in manifest["prompt_templates"]
    )
    total = manifest["usage"]["total"]
    assert total["prompt_tokens"] > 0 and total["cost_usd"] > 0
    # every distinct request answered by the server once, all of them used
    assert total["requests"] == sum(stats["successes"].values())
    assert max(stats["successes"].values()) == 1
    dropped = manifest["cleaning"]["rolegpt"]["dropped"]
    assert {"breaks_character", "refusal", "empty", "truncated", "wrong_language"} <= set(dropped)
    assert {"low_confidence", "missing_field", "near_duplicate"} <= set(
        manifest["cleaning"]["context_instruct"]["dropped"]
    )


def test_shard_rows_match_real_rolebench_schema(built, rolebench_sample):
    tmp, _ = built
    ours = tmp / "out" / "v0.1.0" / "rolebench-eng" / "instruction-generalization" / "role_specific"
    real = rolebench_sample / "rolebench-eng" / "instruction-generalization" / "role_specific"
    for name in ("test", "rolegpt_baseline"):
        a = json.loads((ours / f"{name}.jsonl").read_text().splitlines()[0])
        b = json.loads((real / f"{name}.jsonl").read_text().splitlines()[0])
        assert {k: type(v) for k, v in a.items()} == {k: type(v) for k, v in b.items()}
    a = json.loads((ours / "train.jsonl").read_text().splitlines()[0])
    b = json.loads((rolebench_sample / "rolebench-zh" / "role_specific" / "train.jsonl").read_text().splitlines()[0])
    assert {k: type(v) for k, v in a.items()} == {k: type(v) for k, v in b.items()}


def test_offline_rebuild_is_bit_for_bit_and_versions_are_immutable(built, capsys):
    tmp, _ = built
    assert main(build_args(None, tmp / "work", tmp / "out", "0.1.1", "--offline")) == 0
    a, b = tree(tmp / "out" / "v0.1.0"), tree(tmp / "out" / "v0.1.1")
    ma, mb = json.loads(a.pop("manifest.json")), json.loads(b.pop("manifest.json"))
    assert a == b
    ma.pop("version"), mb.pop("version")
    assert ma == mb
    capsys.readouterr()
    # an existing version is refused up front, before any request (even online, with no server)
    assert main(build_args("http://127.0.0.1:9/v1", tmp / "work", tmp / "out", "0.1.0", "--api-key", KEY)) == 1
    assert "versions are immutable" in capsys.readouterr().err
    # so is a malformed instructions file (stage 3's input), before stages 1-2 pay for anything
    bad = tmp / "instructions-bad.jsonl"
    bad.write_text('{"instruction": "Say hi."}\n{"instruction": \n', encoding="utf-8")
    args = build_args("http://127.0.0.1:9/v1", tmp / "fresh-work", tmp / "out", "0.1.3", "--api-key", KEY)
    args[args.index("--instructions") + 1] = str(bad)
    assert main(args) == 1
    assert f"{bad}:2: invalid JSON" in capsys.readouterr().err
    assert _journal_rows(tmp / "fresh-work" / "journal.sqlite") == 0
    # offline with a change that needs a new request: fails on the miss, names it
    assert main(build_args(None, tmp / "work", tmp / "out", "0.1.2", "--offline", "--samples", "7")) == 1
    assert "offline replay" in capsys.readouterr().err


def test_shards_records_each_stage_config_and_refuses_stale_stages(built, tmp_path, capsys):
    import shutil

    work = tmp_path / "work"
    shutil.copytree(built[0] / "work", work)
    # shards alone, with other flags than the stages ran with: the manifest keeps what they used
    shards = ["shards", "--work", str(work), "--out", str(tmp_path / "out"), "--model", "another-model"]
    assert main([*shards, "--version", "0.1.0"]) == 0
    manifest = json.loads((tmp_path / "out" / "v0.1.0" / "manifest.json").read_text())
    assert manifest["models"] == ["fake-model"]
    config = manifest["generator"]["config"]
    assert config["profiles"]["segment_tokens"] == 250 and config["shards"]["segment_tokens"] == 1500
    # profiles changed after context-instruct and rolegpt read them: no shard set mixing the two
    desc = work / "profiles-eng" / "desc.json"
    desc.write_text(desc.read_text().replace("Hamlet", "Hamlet the Dane", 1))
    capsys.readouterr()
    assert main([*shards, "--version", "0.1.1"]) == 1
    assert capsys.readouterr().err.strip() == (
        f"error: {desc} changed after the context_instruct stage read it (an earlier "
        "stage was rerun): rerun context-instruct, rolegpt, then shards"
    )
    assert not (tmp_path / "out" / "v0.1.1").exists()


def _journal_rows(path: Path) -> int:
    if not path.exists():
        return 0
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
    except sqlite3.OperationalError:
        return 0
    finally:
        db.close()


def test_sigkill_mid_run_then_restart_pays_nothing_twice_and_matches(built, tmp_path):
    ref_tmp, ref_stats = built
    env = {**os.environ, "OPENAI_API_KEY": KEY, "PYTHONPATH": str(REPO)}
    with FakeOpenAIServer(rolebench_responder, fault_plan=faults(), retry_after="0", hang_seconds=4) as srv:
        cmd = [sys.executable, "-m", "data_gen", *build_args(srv.base_url, tmp_path / "work", tmp_path / "out")]
        srv.hold_after = 120  # mid-run: in the RoleGPT stage, with requests in flight
        proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.time() + 120
        # wait until the server holds requests and the client has journaled every answer it got
        while time.time() < deadline:
            done = sum(srv.successes.values())
            if done >= srv.hold_after and _journal_rows(tmp_path / "work" / "journal.sqlite") >= done:
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        else:
            pytest.fail("pipeline did not reach the kill point")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        paid_before = sum(srv.successes.values())
        srv.hold_after = None
        srv.release.set()
        assert not (tmp_path / "out" / "v0.1.0").exists()
        rerun = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
        assert rerun.returncode == 0, rerun.stderr[-2000:]
        stats = srv.stats()
    assert 0 < paid_before < sum(stats["successes"].values())
    assert max(stats["successes"].values()) == 1, "a request was paid for twice"
    assert stats["successes"].keys() == ref_stats["successes"].keys()
    assert tree(tmp_path / "out" / "v0.1.0") == tree(ref_tmp / "out" / "v0.1.0")
    for name in ("context_instruct-eng.jsonl", "rolegpt-eng.jsonl"):
        assert (tmp_path / "work" / name).read_bytes() == (ref_tmp / "work" / name).read_bytes()


def test_api_key_never_reaches_files_or_output(tmp_path, capfd, caplog):
    secret = "sk-live-SECRET-abcdef0123456789"
    caplog.set_level("DEBUG")
    with FakeOpenAIServer(
        rolebench_responder, keys=(secret,), fault_plan=hash_faults(every_500=5), retry_after="0"
    ) as srv:
        assert main(build_args(srv.base_url, tmp_path / "work", tmp_path / "out", "0.1.0", "--api-key", secret)) == 0
    for p in tmp_path.rglob("*"):
        if p.is_file():
            assert secret.encode() not in p.read_bytes(), p
    out = capfd.readouterr()
    assert secret not in out.out + out.err + caplog.text


def test_rejected_key_stops_at_once(tmp_path, capsys):
    with FakeOpenAIServer(rolebench_responder, keys=("sk-the-right-one",)) as srv:
        code = main(build_args(srv.base_url, tmp_path / "work", tmp_path / "out", "0.1.0", "--api-key", "sk-wrong"))
        assert code == 1
        assert srv.auth_rejections <= 4 and not srv.successes  # concurrency 4: no retries, nothing more
    err = capsys.readouterr().err
    assert "rejected the API key (HTTP 401)" in err and "Traceback" not in err and "sk-wrong" not in err, err


def test_max_cost_stops_cleanly_then_resumes(tmp_path, capsys):
    with FakeOpenAIServer(rolebench_responder) as srv:
        args = build_args(srv.base_url, tmp_path / "work", tmp_path / "out", "0.1.0", "--api-key", KEY)
        assert main(args + ["--max-cost", "0.01"]) == 1
        assert "budget reached" in capsys.readouterr().err
        paid = sum(srv.successes.values())
        assert paid > 0 and not (tmp_path / "out" / "v0.1.0").exists()
        assert main(args) == 0
        assert max(srv.successes.values()) == 1 and sum(srv.successes.values()) > paid


def _cli(args: list[str], capsys) -> tuple[int, str]:
    code = main(args)
    return code, capsys.readouterr().err


def test_unreadable_script_reports_file_and_line(tmp_path, capsys):
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "bad.txt").write_text(
        "TITLE: Bad\nROLE: Ann = ANN\nSCENE 1. A room.\nANN: Hello.\nthis line is prose without a speaker tag\n"
    )
    code, err = _cli(
        ["profiles", "--work", str(tmp_path / "w"), "--scripts", str(scripts), "--api-key", "x", "--no-progress"],
        capsys,
    )
    assert code == 1 and f"{scripts / 'bad.txt'}:5:" in err and "Traceback" not in err


def test_role_without_dialogue_is_named(tmp_path, capsys):
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "mute.txt").write_text("TITLE: Mute\nROLE: Silent Bob = BOB\nSCENE 1.\nANN: Hello?\n")
    code, err = _cli(["profiles", "--work", str(tmp_path / "w"), "--scripts", str(scripts), "--api-key", "x"], capsys)
    assert code == 1 and "role 'Silent Bob' (speaker BOB) has no dialogue" in err


def test_bad_instruction_line_is_reported(tmp_path, capsys, built):
    src, _ = built
    import shutil

    shutil.copytree(src / "work", tmp_path / "work")
    bad = tmp_path / "inst.jsonl"
    bad.write_text('{"instruction": "ok"}\n{"input": "no instruction"}\n')
    code, err = _cli(
        [
            "rolegpt",
            "--work",
            str(tmp_path / "work"),
            "--instructions",
            str(bad),
            "--offline",
            "--segment-tokens",
            "250",
            "--model",
            "fake-model",
        ],
        capsys,
    )
    assert code == 1 and f"{bad}:2: missing 'instruction'" in err


def test_chinese_build_matches_real_rolebench_zh_layout(tmp_path, rolebench_sample):
    with FakeOpenAIServer(rolebench_responder) as srv:
        args = [
            "build",
            "--lang",
            "zh",
            "--work",
            str(tmp_path / "w"),
            "--out",
            str(tmp_path / "o"),
            "--version",
            "0.1.0",
            "--scripts",
            str(DEMO / "scripts-zh"),
            "--instructions",
            str(DEMO / "instructions-zh.jsonl"),
            "--segment-tokens",
            "120",
            "--model",
            "fake-model",
            "--base-url",
            srv.base_url,
            "--api-key",
            KEY,
            "--no-progress",
        ]
        assert main(args) == 0
    v = tmp_path / "o" / "v0.1.0"
    assert json.loads((v / "profiles-zh" / "desc.json").read_text())["孙悟空"].startswith("你")
    for rel in ("general/train.jsonl", "general/test.jsonl", "role_specific/train.jsonl", "role_specific/test.jsonl"):
        ours = json.loads((v / "rolebench-zh" / rel).read_text(encoding="utf-8").splitlines()[0])
        real = json.loads((rolebench_sample / "rolebench-zh" / rel).read_text(encoding="utf-8").splitlines()[0])
        assert {k: type(x) for k, x in ours.items()} == {k: type(x) for k, x in real.items()}, rel
        assert ours["role"] == "孙悟空"
