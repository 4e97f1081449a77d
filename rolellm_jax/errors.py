"""Users' errors and exit codes of the JAX side: data_gen.errors' (the one base class and runner)
plus the accelerator's out-of-memory, which is the user's to fix with a smaller configuration."""

from __future__ import annotations

from data_gen.errors import (
    EXIT_DOES_NOT_FIT,
    EXIT_OK,
    EXIT_USAGE,
    EXIT_USER_ERROR,
    ConfigError,
    UserError,
    print_error,
    run_cli,
)

OOM_HINT = (
    "lower train.global_batch_size or raise train.grad_accum, lower data.seq_len, "
    "set model.remat_policy=full, or enable lora (lora.enabled=true), or use more devices (mesh.fsdp)"
)


def is_oom(err: BaseException) -> bool:
    """XLA's out-of-memory (RESOURCE_EXHAUSTED), at compile time or when allocating."""
    text = str(err)
    return "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower()


__all__ = [
    "EXIT_DOES_NOT_FIT",
    "EXIT_OK",
    "EXIT_USAGE",
    "EXIT_USER_ERROR",
    "OOM_HINT",
    "ConfigError",
    "UserError",
    "is_oom",
    "print_error",
    "run_cli",
]
