"""The parameter-level building blocks of every layer: logical-axis metadata, dense layers, RMSNorm."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from rolellm_jax.models.config import ModelConfig
from rolellm_jax.models.kernels import cpu_decode_kernels, cpu_matmul


def axes(*names: str) -> dict[str, Any]:
    """Param metadata: logical axis names, mapped to the mesh later by sharding.LOGICAL_RULES.

    eager_sharding=False so that a model builds with no mesh at all; shard_params places it.
    """
    return {"out_sharding": names, "eager_sharding": False}


class Dense(nnx.Linear):
    """``nnx.Linear`` that adds a low-rank term when training attaches one (training/lora.py sets
    ``lora_a [in, r]``, ``lora_b [r, out]`` and ``lora_scale``): ``y = x W + scale (x A) B``.

    Computed unmerged, as PEFT does: the frozen ``W`` then needs no weight gradient, where a kernel
    merged before the dot (``W + scale A B``) costs a full ``[in, out]`` gradient GEMM per target
    and step (~10% of the FLOPs of a LoRA step on q/k/v/o; unmerging took the SmolLM2-shape step from
    148 to 185 tokens/s, benchmarks/RESULTS.md), and in bf16 compute the small delta is no longer
    rounded into the bf16 copy of ``W``. Export still merges (lora.merge): equal up to rounding.
    """

    lora_a: nnx.Param | None = None  # class defaults: a layer without an adapter has none

    def __call__(self, inputs: jax.Array, out_sharding=None) -> jax.Array:
        y = super().__call__(inputs, out_sharding=out_sharding)
        return y if self.lora_a is None else self.add_low_rank(inputs, y)

    def add_low_rank(self, inputs: jax.Array, y: jax.Array) -> jax.Array:
        """``y + scale (inputs A) B`` in ``y``'s dtype (also for the untied LM head, which reads its kernel
        itself). The sum carries DENSE_OUTPUT, so the dots-saveable remat policies keep it rather than
        both of its terms."""
        x, a, b = self.promote_dtype((inputs, self.lora_a[...], self.lora_b[...]), dtype=self.dtype)
        contract = (((x.ndim - 1,), (0,)), ((), ()))
        low = self.dot_general(self.dot_general(x, a, contract), b, contract)
        return checkpoint_name(y + (self.lora_scale * low).astype(y.dtype), cpu_matmul.DENSE_OUTPUT)


class PackedDense(nnx.Module):
    """A bias-or-not dense layer on ``cpu_decode_kernels``'s panel kernel, for decoding on a CPU
    (``cpu_decoding.for_cpu_decoding``; forward only). The kernel is packed in the compute dtype,
    which is what ``nnx.Linear`` casts it to before its dot, so the values are the same."""

    def __init__(self, layer: Dense):
        self.dtype = layer.dtype or layer.kernel.dtype
        self.features = layer.out_features
        self.packed = nnx.Param(cpu_decode_kernels.pack(layer.kernel[...].astype(self.dtype)))
        self.bias = layer.bias

    def __call__(self, x: jax.Array, out_dtype=None) -> jax.Array:
        y = cpu_decode_kernels.matmul(x, self.packed[...], self.features).astype(out_dtype or self.dtype)
        return y if self.bias is None else y + self.bias[...].astype(y.dtype)


class PackedEmbedding(nnx.Module):
    """A tied embedding kept once, as the LM head's packed panels: lookups gather rows from them."""

    def __init__(self, table: jax.Array, dtype):
        self.num_embeddings = table.shape[0]
        self.packed = nnx.Param(cpu_decode_kernels.pack(table.astype(dtype).T))

    def rows(self, ids: jax.Array, dtype) -> jax.Array:
        return cpu_decode_kernels.rows(self.packed[...], ids).astype(dtype)

    def logits(self, x: jax.Array) -> jax.Array:
        return cpu_decode_kernels.matmul(x, self.packed[...], self.num_embeddings)


def dense(
    rngs: nnx.Rngs, cfg: ModelConfig, d_in: int, d_out: int, in_axis: str, out_axis: str, bias: bool = False
) -> Dense:
    """A linear layer with HF's N(0, 0.02) init, kernel [in, out] (the HF weight transposed)."""
    return Dense(
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


def embed_rows(table: jax.Array, ids: jax.Array, dtype) -> jax.Array:
    """``table[ids]`` cast to ``dtype``: the rows are gathered first, then cast (nnx.Embed casts the
    whole [V, D] table first), and a 16-bit table is gathered as its uint16 bits, because XLA:CPU
    runs a bf16 gather by converting the whole table to float32 on every call (113 MB for
    SmolLM2's embedding at every decode step). Same values either way."""
    if cpu_matmul.is_16bit_float(table.dtype):
        return _gather_16bit(table, ids).astype(dtype)
    return jnp.take(table, ids, axis=0).astype(dtype)


@jax.custom_vjp
def _gather_16bit(table, ids):
    bits = jax.lax.bitcast_convert_type(table, jnp.uint16)
    return jax.lax.bitcast_convert_type(jnp.take(bits, ids, axis=0), table.dtype)


def _gather_16bit_fwd(table, ids):
    return _gather_16bit(table, ids), (table, ids)


def _gather_16bit_bwd(residuals, grad):
    table, ids = residuals  # the gradient of a gather: the rows' gradients added into a zero table
    return jnp.zeros_like(table).at[ids].add(grad.astype(table.dtype)), None


_gather_16bit.defvjp(_gather_16bit_fwd, _gather_16bit_bwd)


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
