"""The parameter-level building blocks of every layer: logical-axis metadata, dense layers, RMSNorm."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from rolellm_jax.models.config import ModelConfig
from rolellm_jax.models.kernels import cpu_matmul


def axes(*names: str) -> dict[str, Any]:
    """Param metadata: logical axis names, mapped to the mesh later by sharding.LOGICAL_RULES.

    eager_sharding=False so that a model builds with no mesh at all; shard_params places it.
    """
    return {"out_sharding": names, "eager_sharding": False}


def dense(
    rngs: nnx.Rngs, cfg: ModelConfig, d_in: int, d_out: int, in_axis: str, out_axis: str, bias: bool = False
) -> nnx.Linear:
    """A linear layer with HF's N(0, 0.02) init, kernel [in, out] (the HF weight transposed)."""
    return nnx.Linear(
        d_in,
        d_out,
        use_bias=bias,
        dtype=cfg.dtype,
        param_dtype=cfg.param_dtype,
        kernel_init=nnx.initializers.normal(0.02),
        bias_init=nnx.initializers.zeros_init(),
        kernel_metadata=axes(in_axis, out_axis),
        bias_metadata=axes(out_axis),
        rngs=rngs,
        dot_general=cpu_matmul.dot_general if cfg.weight_grad == "cpu" else jax.lax.dot_general,
    )


class RMSNorm(nnx.Module):
    """x / rms(x) * scale, normalised in float32 and cast back before the scale (as HF does).

    ``plus_one`` (Gemma): x / rms(x) * (1 + scale) with the scale initialised at zero, all in float32
    and cast after the scale, as transformers' Gemma2RMSNorm / Gemma3RMSNorm.
    """

    def __init__(self, dim: int, eps: float, cfg: ModelConfig, plus_one: bool = False):
        init = jnp.zeros if plus_one else jnp.ones
        self.scale = nnx.Param(init((dim,), cfg.param_dtype), **axes("norm"))
        self.eps = eps
        self.dtype = cfg.dtype
        self.plus_one = plus_one

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        if self.plus_one:
            return (x32 * (1.0 + self.scale[...].astype(jnp.float32))).astype(self.dtype)
        return self.scale[...].astype(self.dtype) * x32.astype(self.dtype)
