"""The LM head's matmul: float32 logits from compute-dtype operands, gradients in the compute dtype.

``einsum(x, w, preferred_element_type=float32)`` gives exact float32 logits from a bf16 GEMM, but
autodiff then carries the float32 cotangent into both backward GEMMs, so XLA upcasts the bf16
operand and runs them as float32 x float32 (on a GPU: TF32 at best, half the bf16 rate; two of the
~1B benchmark model's three vocabulary-sized GEMMs). Here the backward casts the cotangent to the
compute dtype first, as a bf16 LM head followed by ``.float()`` does in transformers, and as
``cpu_matmul``'s backward already does. With float32 compute the casts are no-ops: same grads.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


@jax.custom_vjp
def float32_logits(x: jax.Array, w: jax.Array) -> jax.Array:
    """``x [b, t, d] @ w [d, vocab]`` accumulated and returned in float32."""
    return jnp.einsum("btd,dv->btv", x, w, preferred_element_type=jnp.float32)


def _fwd(x, w):
    return float32_logits(x, w), (x, w)


def _bwd(residuals, dlogits):
    x, w = residuals
    dlogits = dlogits.astype(x.dtype)
    dx = jnp.einsum("btv,dv->btd", dlogits, w, preferred_element_type=x.dtype)
    dw = jnp.einsum("btd,btv->dv", x, dlogits, preferred_element_type=w.dtype)
    return dx, dw


float32_logits.defvjp(_fwd, _bwd)
