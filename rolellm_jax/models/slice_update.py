"""``dynamic_update_slice`` that stays an in-place write for 16-bit floats on XLA:CPU.

XLA:CPU's ``float-normalization-bf16`` pass upcasts a bf16 / fp16 dynamic-update-slice to float32,
with a convert of the whole buffer before and after it: a KV cache write then read and rewrote the
layer's whole cache twice per token instead of writing one slot (benchmarks/RESULTS.md). Writing the
16-bit pattern as uint16 (a bitcast: no data moves, on any backend) keeps it one slot. Same bits,
so the same values.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from rolellm_jax.models.kernels.cpu_matmul import is_16bit_float


def update_slice(buffer: jax.Array, update: jax.Array, start: Sequence) -> jax.Array:
    """``jax.lax.dynamic_update_slice(buffer, update.astype(buffer.dtype), start)``."""
    update = update.astype(buffer.dtype)
    if not is_16bit_float(buffer.dtype):
        return jax.lax.dynamic_update_slice(buffer, update, start)
    bits = lambda a: jax.lax.bitcast_convert_type(a, jnp.uint16)  # noqa: E731
    return jax.lax.bitcast_convert_type(jax.lax.dynamic_update_slice(bits(buffer), bits(update), start), buffer.dtype)
