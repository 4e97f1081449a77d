"""training/glibc_thp.py: when `python -m rolellm_jax.train` re-runs itself with glibc's huge-page
malloc, what it keeps of the environment, and the re-run seen from outside (one help text, exit 0)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rolellm_jax.training import glibc_thp

REPO = Path(__file__).resolve().parents[2]
CPU = {"JAX_PLATFORMS": "cpu"}
HERE = glibc_thp.why_not(CPU)  # None where this machine qualifies (Linux, glibc >= 2.35, THP madvise)


def test_a_users_own_choice_and_non_cpu_runs_are_left_alone():
    assert glibc_thp.why_not({**CPU, "ROLELLM_HUGE_PAGES": "0"}) == "ROLELLM_HUGE_PAGES=0"
    assert "already sets" in glibc_thp.why_not({**CPU, "GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"})
    if HERE is None:
        assert glibc_thp.why_not({"JAX_PLATFORMS": "cuda"}) == "not a CPU run"
        assert glibc_thp.why_not({"JAX_PLATFORMS": "cpu,tpu"}) == "not a CPU run"


def test_the_re_run_keeps_other_tunables_and_carries_the_guard():
    env = glibc_thp.environment_with_huge_pages({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2", "X": "1"})
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
    assert env["X"] == "1" and env["ROLELLM_HUGE_PAGES"] == "0"
    assert glibc_thp.why_not(env) is not None  # the re-run does not run again


def test_the_modes_that_need_no_re_run(monkeypatch, tmp_path):
    mode = tmp_path / "enabled"
    monkeypatch.setattr(glibc_thp, "THP_MODE", mode)
    for text in ("[always] madvise never\n", "always madvise [never]\n"):
        mode.write_text(text)
        assert glibc_thp.why_not(CPU) in ("transparent huge pages not in madvise mode " + f"({mode})", HERE)


@pytest.mark.skipif(HERE is not None, reason=f"no re-run on this machine: {HERE}")
def test_the_train_cli_re_runs_itself_once_and_then_works():
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "ROLELLM_HUGE_PAGES")} | CPU
    command = [sys.executable, "-m", "rolellm_jax.train", "--help"]
    run = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stderr.count("re-running with GLIBC_TUNABLES=glibc.malloc.hugetlb=1") == 1
    assert "python -m rolellm_jax.train" in run.stdout
    opted_out = subprocess.run(
        command, cwd=REPO, env=env | {"ROLELLM_HUGE_PAGES": "0"}, capture_output=True, text=True, timeout=300
    )
    assert opted_out.returncode == 0 and "re-running" not in opted_out.stderr
    assert opted_out.stdout == run.stdout


def test_an_opt_out_value_other_than_0_or_1_is_refused_in_one_line():
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"} | CPU | {"ROLELLM_HUGE_PAGES": "off"}
    run = subprocess.run(
        [sys.executable, "-m", "rolellm_jax.train", "--help"], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert run.returncode != 0 and "re-running" not in run.stderr
    assert (
        run.stderr.strip().splitlines()[-1] == "ROLELLM_HUGE_PAGES='off': expected 0 (keep the process as started) or 1"
    )
