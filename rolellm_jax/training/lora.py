"""LoRA: low-rank adapters on target kernels of the parameter tree.

The adapters are a separate tree mirroring the base tree: for a target kernel `[..., in, out]`
(a leading layer axis when layers are stacked) they hold `lora_a [..., in, r]` (random) and
`lora_b [..., r, out]` (zeros, so training starts from the base model exactly). The effective
kernel is `kernel + (alpha / r) * lora_a @ lora_b`. Only the adapter tree is handed to the
optimiser, so the base stays frozen and carries no optimiser moments (what lets a 7B model fit a
single accelerator). The train step computes the adapters unmerged (`attach`: models.modules.Dense
adds `scale * (x @ lora_a) @ lora_b` to its output, so the frozen kernel needs no weight gradient);
`merge` folds them into plain weights for export: the same function up to float rounding.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from rolellm_jax.errors import UserError
from rolellm_jax.models.modules import Dense
from rolellm_jax.training.config import LoraConfig


class LoraError(UserError, ValueError):
    """A LoRA config that does not fit the model (the message names the key)."""


def target_kernels(params: dict, targets: list[str]) -> list[tuple[str, ...]]:
    """Paths (tuple of keys) of `kernel` leaves whose module name is a target."""
    found, modules = [], set()

    def visit(node: Any, path: tuple[str, ...]) -> None:
        if isinstance(node, dict):
            for key, child in node.items():
                visit(child, path + (key,))
        elif path[-1] == "kernel" and len(path) >= 2:
            modules.add(path[-2])
            if path[-2] in targets:
                found.append(path)

    visit(params, ())
    missing = [t for t in targets if t not in modules]
    if missing:
        raise LoraError(f"lora.targets: {missing} match no kernel (modules with kernels: {sorted(modules)})")
    return found


def _get(tree: dict, path: tuple[str, ...]) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def _set(tree: dict, path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def init_adapters(params: dict, lora: LoraConfig, key: jax.Array) -> dict:
    """Adapter tree for `params` (arrays or ShapeDtypeStructs); lora_b starts at zero."""
    if lora.rank <= 0:
        raise LoraError(f"lora.rank must be positive, got {lora.rank}")
    adapters: dict = {}
    for i, path in enumerate(target_kernels(params, lora.targets)):
        kernel = _get(params, path)
        *lead, fan_in, fan_out = kernel.shape
        a = jax.random.normal(jax.random.fold_in(key, i), (*lead, fan_in, lora.rank), jnp.float32)
        _set(adapters, path[:-1] + ("lora_a",), (a / jnp.sqrt(fan_in)).astype(kernel.dtype))
        _set(adapters, path[:-1] + ("lora_b",), jnp.zeros((*lead, lora.rank, fan_out), kernel.dtype))
    return adapters


def merge(params: dict, adapters: dict, lora: LoraConfig) -> dict:
    """Plain parameters with every adapter folded into its kernel (a new tree; inputs untouched)."""
    scale = lora.alpha / lora.rank

    def fold(base: Any, adapter: Any) -> Any:
        if not isinstance(base, dict):
            return base
        out = {k: fold(v, adapter.get(k, {}) if isinstance(adapter, dict) else {}) for k, v in base.items()}
        if "kernel" in base and "lora_a" in adapter:
            delta = jnp.einsum("...ir,...ro->...io", adapter["lora_a"], adapter["lora_b"])
            out["kernel"] = (base["kernel"] + scale * delta).astype(base["kernel"].dtype)
        return out

    return fold(params, adapters)


def attach(model: Any, adapters: dict, lora: LoraConfig) -> None:
    """Hand each adapter pair to its layer (in place): ``model``'s Dense at the adapter's path gets
    ``lora_a`` / ``lora_b`` params and ``lora_scale``, and computes its low-rank term unmerged."""
    scale = lora.alpha / lora.rank

    def visit(node: Any, tree: dict) -> None:
        if "lora_a" in tree:
            if not isinstance(node, Dense):
                raise LoraError(f"lora.targets: {type(node).__name__} layers take no adapter (only dense layers do)")
            node.lora_a, node.lora_b = nnx.Param(tree["lora_a"]), nnx.Param(tree["lora_b"])
            node.lora_scale = scale
            return
        for key, child in tree.items():
            visit(getattr(node, key), child)

    visit(model, adapters)


def adapter_logical_axes(base_axes: dict, adapters: dict) -> dict:
    """Logical axes of the adapters from their kernels' axes: the rank axis is never sharded."""

    def visit(axes: Any, node: Any) -> Any:
        if "lora_a" in node:
            kernel = tuple(axes["kernel"])
            return {"lora_a": kernel[:-1] + (None,), "lora_b": kernel[:-2] + (None, kernel[-1])}
        return {k: visit(axes[k], v) for k, v in node.items()}

    return visit(base_axes, adapters)
