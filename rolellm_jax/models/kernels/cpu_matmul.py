"""A dense matmul whose backward pass XLA:CPU runs on its fast GEMM path (``weight_grad="cpu"``).

XLA differentiates ``y = x @ w`` into ``dx = dy @ w.T`` and ``dw = x.T @ dy``. For the second,
XLA:CPU transposes ``dy`` in memory and then runs a dot that contracts dimension 0 of ``x`` and
dimension 1 of the transposed ``dy``: that dot misses the YNNPACK GEMM and runs on Eigen's generic
contraction, ~3x slower inside the train step (68 vs ~200 GFLOP/s for the LM head's weight
gradient, measured with jax.profiler on the 2-core CPU of benchmarks/RESULTS.md). Here the weight
gradient is written as ``transpose(x) @ dy`` (or ``transpose(transpose(dy) @ x)`` when ``dy`` is the
narrower of the two, so the copy is smaller) with the transposes behind optimization barriers, so
XLA keeps a plain ``[in, tokens] x [tokens, out]`` GEMM and one copy of the narrower activation.
Same products and sums, so the same values up to float rounding order.

The output carries the checkpoint name ``DENSE_OUTPUT`` so that the dots-saveable remat policies
keep it instead of recomputing it (a custom_vjp output is not a ``dot_general`` to them).

That layout is for CPUs only (``cpu_layout=True``): GPU and TPU compilers choose operand layouts
themselves, and the barrier would cost them a copy of every activation. ``weight_grad="auto"``
resolves to it on a CPU training mesh.

Either way the backward runs in the operands' dtype: a float32 output (the LM head's logits from
bf16 operands) would otherwise carry its float32 cotangent into both backward GEMMs, and XLA would
upcast the bf16 operands to run them float32 x float32 (on a GPU: TF32 at best, half the bf16
rate), as the H100-compiled ~1B benchmark step showed. With float32 operands the casts are no-ops.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

DENSE_OUTPUT = "dense_output"


def matmul(x: jax.Array, w: jax.Array, out_dtype=None, *, cpu_layout: bool = True) -> jax.Array:
    """``x @ w`` for ``x [..., in]`` and ``w [in, out]``, its backward in the operands' dtype and,
    with ``cpu_layout``, laid out for XLA:CPU's fast GEMM."""
    return checkpoint_name(_matmul(x, w, None if out_dtype is None else jnp.dtype(out_dtype), cpu_layout), DENSE_OUTPUT)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _matmul(x, w, out_dtype, cpu_layout):
    return jnp.matmul(x, w, preferred_element_type=out_dtype)


def _matmul_fwd(x, w, out_dtype, cpu_layout):
    return _matmul(x, w, out_dtype, cpu_layout), (x, w)


def _matmul_bwd(out_dtype, cpu_layout, residuals, dy):
    x, w = residuals
    dx = jnp.matmul(dy.astype(w.dtype), w.T, preferred_element_type=x.dtype)
    tokens_x = x.reshape(-1, x.shape[-1])
    tokens_dy = dy.reshape(-1, dy.shape[-1]).astype(x.dtype)
    if not cpu_layout:
        return dx, jnp.matmul(tokens_x.T, tokens_dy, preferred_element_type=w.dtype)
    if tokens_dy.shape[1] < tokens_x.shape[1]:  # transpose the narrower operand: less to copy
        dw_t = jnp.matmul(transposed_copy(tokens_dy), tokens_x, preferred_element_type=w.dtype)
        return dx, jax.lax.optimization_barrier(dw_t).T
    dw = jnp.matmul(transposed_copy(tokens_x), tokens_dy, preferred_element_type=w.dtype)
    return dx, dw


def transposed_copy(x: jax.Array) -> jax.Array:
    """``[..., r, d] -> [..., d, r]`` as a real copy: the barrier stops XLA folding the transpose
    back into the following dot, which would then contract a leading dimension (the slow path)."""
    return jax.lax.optimization_barrier(jnp.swapaxes(x, -1, -2))


_matmul.defvjp(_matmul_fwd, _matmul_bwd)


def dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None, **kwargs):
    """``jax.lax.dot_general`` for ``nnx.Linear(dot_general=...)``: its ``[..., in] x [in, out]``
    contraction goes through :func:`matmul`, anything else to lax unchanged."""
    (lhs_contract, rhs_contract), batch = dimension_numbers
    if (
        lhs_contract == (lhs.ndim - 1,)
        and rhs_contract == (0,)
        and rhs.ndim == 2
        and batch == ((), ())
        and precision is None
        and kwargs.get("out_sharding") is None
    ):
        return matmul(lhs, rhs, preferred_element_type)
    return jax.lax.dot_general(
        lhs, rhs, dimension_numbers, precision=precision, preferred_element_type=preferred_element_type, **kwargs
    )
