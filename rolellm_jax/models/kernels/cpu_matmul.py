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

16-bit operands (bf16 compute) ask XLA:CPU for a float32 result and cast it, in the forward
(``dot_general``) and the CPU-layout backward: XLA:CPU upcasts both operands of a dot with a bf16
result to float32 copies, so without it bf16 compute ran slower than float32 (benchmarks/RESULTS.md).

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


def matmul(
    x: jax.Array, w: jax.Array, out_dtype=None, *, cpu_layout: bool = True, transposed: bool = False
) -> jax.Array:
    """``x @ w`` for ``x [..., in]`` and ``w [in, out]`` (``transposed``: ``x @ w.T`` for ``w [out, in]``,
    a tied LM head's embedding, read where it is: XLA:CPU would copy ``w.T`` out on every call), its
    backward in the operands' dtype and, with ``cpu_layout``, laid out for XLA:CPU's fast GEMM."""
    out_dtype = None if out_dtype is None else jnp.dtype(out_dtype)
    return checkpoint_name(_matmul(x, w, out_dtype, cpu_layout, transposed), DENSE_OUTPUT)


def _contract(x, w, transposed, out_dtype):
    dims = (((x.ndim - 1,), (1 if transposed else 0,)), ((), ()))
    return jax.lax.dot_general(x, w, dims, preferred_element_type=out_dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _matmul(x, w, out_dtype, cpu_layout, transposed):
    return _contract(x, w, transposed, out_dtype)


def _matmul_fwd(x, w, out_dtype, cpu_layout, transposed):
    return _matmul(x, w, out_dtype, cpu_layout, transposed), (x, w)


def _matmul_bwd(out_dtype, cpu_layout, transposed, residuals, dy):
    x, w = residuals
    # on a CPU, 16-bit GEMMs ask for a float32 result and cast it (see dot_general below)
    dot = _f32_result_matmul if cpu_layout else jnp.matmul
    dx = dot(dy.astype(w.dtype), w if transposed else w.T, preferred_element_type=x.dtype)
    tokens_x = x.reshape(-1, x.shape[-1])
    tokens_dy = dy.reshape(-1, dy.shape[-1]).astype(x.dtype)
    if not cpu_layout:
        dw = dot(tokens_x.T, tokens_dy, preferred_element_type=w.dtype)
    elif tokens_dy.shape[1] < tokens_x.shape[1]:  # transpose the narrower operand: less to copy
        dw_t = dot(transposed_copy(tokens_dy), tokens_x, preferred_element_type=w.dtype)
        return dx, dw_t if transposed else jax.lax.optimization_barrier(dw_t).T
    else:
        dw = dot(transposed_copy(tokens_x), tokens_dy, preferred_element_type=w.dtype)
    return dx, dw.T if transposed else dw


def is_16bit_float(dtype) -> bool:
    """bf16 / fp16: the dtypes XLA:CPU upcasts to float32 copies in a dot with such a result, and in a gather."""
    dtype = jnp.dtype(dtype)
    return dtype.itemsize == 2 and jnp.issubdtype(dtype, jnp.floating)


def _f32_result_matmul(a, b, preferred_element_type):
    """``a @ b`` in ``preferred_element_type``; for 16-bit results computed as float32 and cast.
    Same values: XLA:CPU computes a bf16 x bf16 -> bf16 dot by upcasting both operands to float32
    copies first (every weight, every call: benchmarks/RESULTS.md), and with a float32 result it
    runs the 16-bit GEMM on the operands as they are."""
    out = jnp.dtype(preferred_element_type)
    if is_16bit_float(out):
        return jnp.matmul(a, b, preferred_element_type=jnp.float32).astype(out)
    return jnp.matmul(a, b, preferred_element_type=out)


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
        result = jnp.result_type(lhs, rhs) if preferred_element_type is None else jnp.dtype(preferred_element_type)
        if is_16bit_float(result):  # see _f32_result_matmul
            return matmul(lhs, rhs, jnp.float32).astype(result)
        return matmul(lhs, rhs, preferred_element_type)
    return jax.lax.dot_general(
        lhs, rhs, dimension_numbers, precision=precision, preferred_element_type=preferred_element_type, **kwargs
    )
