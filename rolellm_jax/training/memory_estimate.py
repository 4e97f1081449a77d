"""Will the training state fit? Parameters + gradients + AdamW moments, counted from the config
before anything is allocated, against the host's available memory (CPU) or the devices' limit.

A run whose state alone cannot fit is refused with the figures and the knobs that lower them,
instead of being OOM-killed (rc 137, no message) or failing deep in XLA. Activations, the data and
XLA's scratch come on top: the check refuses only what cannot possibly fit, it does not promise
that what passes will.
"""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np

from rolellm_jax.checkpoints.tensor_layout import flatten, param_shapes
from rolellm_jax.errors import UserError
from rolellm_jax.models.config import ModelConfig
from rolellm_jax.training.config import LoraConfig

MEMORY_KNOBS = (
    "lower model.hidden_size / model.intermediate_size / model.num_hidden_layers / model.vocab_size, "
    "train adapters only (lora.enabled=true), store parameters in bfloat16 (model.param_dtype=bfloat16), "
    "or spread the state over more devices (mesh.fsdp); train.check_memory=false skips this check"
)


class MemoryEstimateError(UserError, MemoryError):
    """The training state cannot fit the memory there is (the message gives the figures)."""


def human_count(n: float) -> str:
    """6738415616 -> '6.74B', 1234567 -> '1.23M', 52000 -> '52.0K' (never '0.00B' for a small model)."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}" if unit != "K" else f"{n / size:.1f}{unit}"
    return str(int(n))


def human_bytes(n: float) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n / 1e3:.1f} kB"


@dataclasses.dataclass(frozen=True)
class StateEstimate:
    parameters: int  # all of the model's
    trainable: int  # the model's (full) or the adapters' (LoRA)
    bytes_per_param: int

    @property
    def params_bytes(self) -> int:  # the model, plus the adapters under LoRA
        extra = self.trainable if self.trainable != self.parameters else 0
        return (self.parameters + extra) * self.bytes_per_param

    @property
    def grads_bytes(self) -> int:
        return self.trainable * self.bytes_per_param

    @property
    def moments_bytes(self) -> int:  # AdamW's mu and nu, in the parameters' dtype
        return 2 * self.trainable * self.bytes_per_param

    @property
    def total_bytes(self) -> int:
        return self.params_bytes + self.grads_bytes + self.moments_bytes

    def describe(self) -> str:
        return (
            f"{human_bytes(self.total_bytes)} (parameters {human_bytes(self.params_bytes)} + gradients "
            f"{human_bytes(self.grads_bytes)} + AdamW moments {human_bytes(self.moments_bytes)})"
        )


def estimate_state(model_cfg: ModelConfig, lora: LoraConfig) -> StateEstimate:
    shapes = flatten(param_shapes(model_cfg))
    parameters = sum(math.prod(s) for s in shapes.values())
    trainable = parameters
    if lora.enabled:  # rank x (fan_in + fan_out) per target kernel (lora.py), per stacked layer
        trainable = sum(
            math.prod(s[:-2]) * lora.rank * (s[-2] + s[-1])
            for path, s in shapes.items()
            if path[-1] == "kernel" and len(path) >= 2 and path[-2] in lora.targets
        )
    return StateEstimate(parameters, trainable, np.dtype(model_cfg.param_dtype).itemsize)


def available_memory(devices: list) -> tuple[int | None, str]:
    """(bytes, where) the training state can use: the devices' limit, or on CPU the host's available memory."""
    if devices and devices[0].platform != "cpu":
        stats = [d.memory_stats() or {} for d in devices]
        limits = [s.get("bytes_limit") for s in stats]
        if all(limits):
            return int(sum(limits)), f"{len(devices)} {devices[0].device_kind} device(s)"
        return None, "the devices (their memory is unknown)"
    try:
        with open("/proc/meminfo") as f:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f}
        return info["MemAvailable"], "this host (available memory)"
    except (OSError, KeyError, ValueError):
        pages = os.sysconf("SC_AVPHYS_PAGES") if hasattr(os, "sysconf") else None
        return (pages * os.sysconf("SC_PAGE_SIZE"), "this host") if pages else (None, "this host")


def check_state_fits(estimate: StateEstimate, available: int | None, where: str, processes: int = 1) -> None:
    """Refuse a training state larger than the memory there is, naming both figures and the knobs."""
    if available is None:
        return
    need = estimate.total_bytes / max(processes, 1)  # each process holds its share of a sharded state
    if need > available:
        raise MemoryEstimateError(
            f"the model has {human_count(estimate.parameters)} parameters "
            f"({human_count(estimate.trainable)} trained, {estimate.bytes_per_param} bytes each): its training "
            f"state needs about {estimate.describe()}"
            + (f", {human_bytes(need)} per process" if processes > 1 else "")
            + f", but {where} has {human_bytes(available)}, before activations: {MEMORY_KNOBS}"
        )
