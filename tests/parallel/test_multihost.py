"""Multi-host training on one machine: 2 processes x 4 CPU devices (jax.distributed over gloo on
127.0.0.1) train like 1 process x 8 devices, each tokenising only its own data shard and loading
only its own rows of every global batch, and the checkpoint they write restores in a single process.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import textwrap
from pathlib import Path

import numpy as np

from rolellm_jax.training.run import run
from rolellm_jax.training.run_config import parse_args
from tests.helpers.subprocesses import start_python
from tests.training.test_train import assert_trees_equal, exported, losses, tiny_args, tokenizer_dir  # noqa: F401 (fixture)

REPO = Path(__file__).resolve().parents[2]
STEPS = 5
GLOBAL_BATCH = 8

# Each process records how many examples it tokenised and the tokens of every batch part it
# loaded, then trains as usual.
CHILD = textwrap.dedent(
    """
    import json, os, sys
    from rolellm_jax.data import packing as data
    from rolellm_jax import train

    loaded, examples = {}, []
    original = data.PackedBatches.batch

    def recording_batch(self, step):
        out = original(self, step)
        loaded[step] = out["input_ids"].tolist()
        examples[:] = [self.stats.examples]
        return out

    data.PackedBatches.batch = recording_batch
    rc = train.main(sys.argv[1:])
    with open(os.environ["ROWS_LOG"], "w") as f:
        json.dump({"process_count": __import__("jax").process_count(), "rows": loaded, "examples": examples[0]}, f)
    sys.exit(rc)
    """
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_train_like_one_and_their_checkpoint_restores_in_one(tokenizer_dir, tmp_path):
    common = [
        f"--train.steps={STEPS}",
        "--checkpoint.every=5",
        "--checkpoint.async_save=false",
        f"--train.global_batch_size={GLOBAL_BATCH}",
        "--mesh.data=2",
        "--mesh.fsdp=2",
        "--mesh.tensor=2",
    ]
    two_out = tmp_path / "two"
    args = tiny_args(tokenizer_dir, two_out, *common)
    port = free_port()
    children = []
    for pid in range(2):
        env = dict(
            os.environ,
            PYTHONPATH=str(REPO),
            JAX_PLATFORMS="cpu",
            XLA_FLAGS="--xla_force_host_platform_device_count=4",
            JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
            JAX_NUM_PROCESSES="2",
            JAX_PROCESS_ID=str(pid),
            ROWS_LOG=str(tmp_path / f"rows-{pid}.json"),
        )
        children.append(start_python(CHILD, *args, env=env, stderr=subprocess.STDOUT))
    outputs = []
    try:
        for child in children:
            outputs.append(child.communicate(timeout=600)[0])
    finally:
        for child in children:
            child.kill()
    for pid, (child, out) in enumerate(zip(children, outputs)):
        assert child.returncode == 0, f"process {pid} failed:\n{out[-3000:]}"

    # each process tokenised only its own data shard (one per process by default) and loaded only
    # its own half of every global batch; together, the batches of one process holding both shards
    logs = [json.loads((tmp_path / f"rows-{pid}.json").read_text()) for pid in range(2)]
    assert [log["process_count"] for log in logs] == [2, 2]
    one_process, _ = parse_args(tiny_args(tokenizer_dir, tmp_path / "one", *common, "--data.shards=2"))
    from rolellm_jax.checkpoints.tokenizer import load_tokenizer
    from rolellm_jax.data.examples import load_examples
    from rolellm_jax.data.packing import PackedBatches

    examples, _ = load_examples(one_process.data)
    whole = PackedBatches(one_process.data, load_tokenizer(tokenizer_dir), "llama", GLOBAL_BATCH, examples=examples)
    assert [log["examples"] for log in logs] == [len(examples[0::2]), len(examples[1::2])]
    for step in range(STEPS):
        halves = [log["rows"][str(step)] for log in logs]
        assert all(len(h) == GLOBAL_BATCH // 2 for h in halves)
        assert halves[0] + halves[1] == whole.batch(step)["input_ids"].tolist()

    # the same loss trajectory as one process with 8 devices and the same two data shards
    run(one_process)
    reference = losses(tmp_path / "one")
    assert len(reference) == STEPS
    np.testing.assert_allclose(losses(two_out), reference, rtol=0, atol=1e-5)

    # the 2-process checkpoint restores in one process (nothing left to run) and exports the same params
    restore, _ = parse_args(
        tiny_args(tokenizer_dir, two_out, *common, "--mesh.data=1", "--mesh.tensor=1", "--mesh.fsdp=-1")
    )
    on_two = exported(two_out)
    assert run(restore).steps_run == 0
    assert_trees_equal(exported(two_out), on_two)
    # and the 2-process run ends with the 1-process parameters (same steps, same data)
    params_two, params_one = on_two, exported(tmp_path / "one")
    for a, b in zip(*(sorted(_flat(p).items()) for p in (params_two, params_one))):
        np.testing.assert_allclose(a[1], b[1], rtol=0, atol=1e-5, err_msg=a[0])


def _flat(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = np.asarray(value)
    return out
