"""Multi-host start-up: call `jax.distributed.initialize` when, and only when, there are peers.

Detection order (the first that applies wins):
1. explicit env: JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID (what
   launch/gpu/slurm.sbatch exports, and what tests use on 127.0.0.1);
2. SLURM with more than one task (jax reads SLURM's own variables);
3. a Cloud TPU VM (jax asks the TPU metadata server for the workers);
4. otherwise a single host: nothing to do.
It must run before anything touches a jax backend, so train/evaluate call it first thing.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from rolellm_jax.errors import UserError

log = logging.getLogger(__name__)

EXPLICIT_VARS = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


class DistributedError(UserError, RuntimeError):
    """Multi-host environment that is set up inconsistently."""


def detect(env: Mapping[str, str] | None = None) -> tuple[str, dict]:
    """Return (how, initialize kwargs); how is 'explicit', 'slurm', 'tpu' or 'single'."""
    env = os.environ if env is None else env
    present = [v for v in EXPLICIT_VARS if v in env]
    if present:
        missing = [v for v in EXPLICIT_VARS if v not in env]
        if missing:
            raise DistributedError(f"{', '.join(present)} set but {', '.join(missing)} missing")
        kwargs = {
            "coordinator_address": env["JAX_COORDINATOR_ADDRESS"],
            "num_processes": int(env["JAX_NUM_PROCESSES"]),
            "process_id": int(env["JAX_PROCESS_ID"]),
        }
        if "JAX_LOCAL_DEVICE_IDS" in env:
            kwargs["local_device_ids"] = [int(i) for i in env["JAX_LOCAL_DEVICE_IDS"].split(",")]
        return "explicit", kwargs
    if "SLURM_JOB_ID" in env and int(env.get("SLURM_NTASKS", "1")) > 1:
        return "slurm", {}
    if _on_cloud_tpu_vm(env):
        return "tpu", {}
    return "single", {}


def _on_cloud_tpu_vm(env: Mapping[str, str]) -> bool:
    if env.get("TPU_SKIP_MDS_QUERY"):
        return False
    try:  # jax's own probe (libtpu present and TPU chips visible); private but stable
        from jax._src.cloud_tpu_init import running_in_cloud_tpu_vm
    except ImportError:
        return False
    return bool(running_in_cloud_tpu_vm)


def maybe_initialize(mode: str = "auto", env: Mapping[str, str] | None = None) -> str:
    """Initialise jax.distributed if this is one of several processes. Returns how it was done.

    mode: 'auto' (detect), 'off' (never). Safe to call twice.
    """
    import jax

    if mode == "off":
        return "off"
    if mode != "auto":
        raise DistributedError(f"distributed mode {mode!r}: expected 'auto' or 'off'")
    if jax.distributed.is_initialized():
        return "already"
    how, kwargs = detect(env)
    if how == "single":
        return how
    if (env or os.environ).get("JAX_PLATFORMS", "") == "cpu":
        # CPU processes need a real collective backend for cross-process psum/all-gather.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    log.info("jax.distributed.initialize (%s) %s", how, {k: v for k, v in kwargs.items()})
    jax.distributed.initialize(**kwargs)
    return how
