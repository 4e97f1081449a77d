"""Decode-time kernels for a CPU (``csrc/cpu_decode_kernels.cc``): GEMMs on weights packed in
16-column panels, and one-query attention over a KV cache read in place.

At decode a dense layer multiplies 1-16 rows by its weight, and XLA:CPU's GEMM libraries spend more
time packing the weight on every call than reading it; it has no bf16 GEMV at all (it converts the
weight to a float32 copy per call). Here each weight is packed once, when ``for_cpu_decoding`` lays
the model out, as ``[ceil(N / 16), K, 16]`` panels (``pack``), and an XLA FFI kernel streams every
panel once per call, bf16 weights as bf16 (benchmarks/RESULTS.md, "Packed-panel decode kernels").
XLA:CPU runs a one-token attention as dots that first copy each layer's whole K and V cache
transposed (and the bf16 V converted to float32): ``attention`` reads them as they lie instead.

The kernel is C++ built on first use with the machine's compiler (``$CXX``, else ``c++``/``g++``)
against jaxlib's own FFI headers, into ``$ROLELLM_KERNEL_CACHE`` (default
``~/.cache/rolellm_jax/kernels``), one file per source, jaxlib version and compiler, written
atomically. Without a compiler, or with ``ROLELLM_CPU_KERNELS=0``, ``available()`` is False and
decoding keeps XLA's dots (a one-line warning says why). Forward only: nothing here has a VJP.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np

PANEL = 16  # columns per panel: one 64-byte cache line of float32
# bf16 GEMMs with more rows than this (a prefill) run on XLA's dot over the unpacked weight: its
# AVX512-BF16 GEMM beats the kernel there (0.63x at 320 rows; float32 is ahead at every size measured)
BF16_MAX_ROWS = 64
_TARGET = "rolellm_packed_matmul"
_ATTENTION_TARGET = "rolellm_decode_attention"
_SOURCE = Path(__file__).with_name("csrc") / "cpu_decode_kernels.cc"
_log = logging.getLogger(__name__)
_LIBRARY: list[ctypes.CDLL] = []  # the loaded kernel library, once built


def packable(dtype) -> bool:
    """The weight dtypes the kernel reads."""
    return jnp.dtype(dtype) in (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16))


@functools.cache
def unavailable_reason() -> str | None:
    """None once the kernel is built (or found in the cache) and registered with XLA:CPU; else why not."""
    if os.environ.get("ROLELLM_CPU_KERNELS", "1") == "0":
        return "ROLELLM_CPU_KERNELS=0"
    lanes = os.environ.get("ROLELLM_CPU_KERNEL_LANES")
    if lanes is not None and lanes not in ("4", "8", "16"):  # the library would quietly run its widest copy
        return f"ROLELLM_CPU_KERNEL_LANES={lanes}: the kernel has copies of 4, 8 or 16 lanes"
    compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if not compiler:
        return "no C++ compiler found (set CXX)"
    try:
        library = _load(compiler)
        _LIBRARY.append(library)
        jax.ffi.register_ffi_target(_TARGET, jax.ffi.pycapsule(library.rolellm_packed_matmul), platform="cpu")
        attention_handler = jax.ffi.pycapsule(library.rolellm_decode_attention)
        jax.ffi.register_ffi_target(_ATTENTION_TARGET, attention_handler, platform="cpu")
    except Exception as err:  # any failure to build or load means XLA's dots, never a crash
        return f"{_SOURCE.name} did not build or load: {type(err).__name__}: {err}"
    return None


def available() -> bool:
    """True when the packed kernel can run here; warns once, in one line, when it cannot."""
    reason = unavailable_reason()
    if reason is not None and not getattr(available, "_warned", False):
        available._warned = True
        _log.warning("CPU decode kernels off, XLA's dots instead: %s", reason)
    return reason is None


def vector_lanes() -> int | None:
    """Float lanes of the kernel copy this CPU runs: 16 (AVX-512), 8 (AVX2) or 4 (128-bit: SSE, NEON; or
    fewer asked for with ``ROLELLM_CPU_KERNEL_LANES``); None without the kernel."""
    return _LIBRARY[0].rolellm_cpu_kernel_lanes() if available() else None


def _load(compiler: str) -> ctypes.CDLL:
    """The built library; a cached file that does not load (truncated by a crash) is rebuilt once."""
    path = _built(compiler)
    try:
        return ctypes.CDLL(str(path))
    except OSError:
        path.unlink(missing_ok=True)
        return ctypes.CDLL(str(_built(compiler)))


def _built(compiler: str) -> Path:
    flags = ["-O3", "-std=c++17", "-shared", "-fPIC", "-w", f"-I{jax.ffi.include_dir()}"]
    key = hashlib.sha256(
        b"\0".join([_SOURCE.read_bytes(), jaxlib.__version__.encode(), compiler.encode(), platform.machine().encode()])
        + " ".join(flags).encode()
    ).hexdigest()[:16]
    cache = Path(os.environ.get("ROLELLM_KERNEL_CACHE") or Path.home() / ".cache" / "rolellm_jax" / "kernels")
    target = cache / f"cpu_decode_kernels-{key}.so"
    if target.exists():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:  # built aside, then renamed: never a half-written .so
        partial = Path(tmp) / target.name
        command = [compiler, *flags, str(_SOURCE), "-o", str(partial)]
        run = subprocess.run(command, capture_output=True, text=True, errors="replace", timeout=600)
        if run.returncode != 0:
            last = (run.stderr.strip().splitlines() or ["(no output)"])[-1]
            raise RuntimeError(f"{compiler} exited with {run.returncode}: {last}")
        os.replace(partial, target)
    return target


def pack(w: jax.Array) -> jax.Array:
    """``[K, N] -> [ceil(N / 16), K, 16]``: panel ``s`` holds columns ``16 s .. 16 s + 15`` row after row
    (the last one zero-padded)."""
    k, n = w.shape
    pad = -n % PANEL
    w = jnp.pad(w, ((0, 0), (0, pad))) if pad else w
    return w.reshape(k, (n + pad) // PANEL, PANEL).transpose(1, 0, 2)


def unpack(packed: jax.Array, n: int) -> jax.Array:
    """The ``[K, n]`` weight back from its panels."""
    s, k, _ = packed.shape
    return packed.transpose(1, 0, 2).reshape(k, s * PANEL)[:, :n]


def matmul(x: jax.Array, packed: jax.Array, n: int) -> jax.Array:
    """``x [..., K] @ W [K, n]`` in float32 for ``packed = pack(W)``: products of ``x`` (cast to float32)
    and the weights as stored, summed in float32, the same values as a dot with a float32 result up
    to summation order. bf16 weights with more than ``BF16_MAX_ROWS`` rows (a prefill) go to XLA's
    bf16 GEMM instead, with ``x`` rounded to bf16 (in a bf16 model it already is)."""
    lead, k = x.shape[:-1], x.shape[-1]
    rows = x.reshape(-1, k)
    if packed.dtype == jnp.bfloat16 and rows.shape[0] > BF16_MAX_ROWS:
        out = jnp.matmul(rows.astype(jnp.bfloat16), unpack(packed, n), preferred_element_type=jnp.float32)
    else:
        result = jax.ShapeDtypeStruct((rows.shape[0], packed.shape[0] * PANEL), jnp.float32)
        out = jax.ffi.ffi_call(_TARGET, result)(rows.astype(jnp.float32), packed)[:, :n]
    return out.reshape(*lead, n)


def rows(packed: jax.Array, ids: jax.Array) -> jax.Array:
    """Rows ``ids`` of ``W.T`` (``W = unpack(packed)``, so ``[..., K]``): a tied head's embedding lookup,
    read from its panels. A 16-bit table is gathered as its bits (XLA:CPU converts a whole bf16 table
    to float32 for a gather)."""
    bits = jax.lax.bitcast_convert_type(packed, jnp.uint16) if packed.dtype == jnp.bfloat16 else packed
    out = bits[ids // PANEL, :, ids % PANEL]
    return jax.lax.bitcast_convert_type(out, packed.dtype) if packed.dtype == jnp.bfloat16 else out


def attention_supported(q: jax.Array, k: jax.Array, v: jax.Array) -> bool:
    """The shapes and dtypes :func:`attention` takes (one query token, head size up to 256, k and v
    alike), with the kernel built here."""
    shapes = q.shape[1] == 1 and q.shape[-1] <= 256 and k.shape == v.shape and k.dtype == v.dtype
    return shapes and packable(k.dtype) and available()


def attention(
    q: jax.Array, k: jax.Array, v: jax.Array, allowed: jax.Array, scale: float, softcap: float | None
) -> jax.Array:
    """One query token per row, q [B, 1, H, hd], against k, v [B, S, KV, hd] as stored (float32 or
    bf16) with ``allowed`` [B, 1, S]: scores in float32 (``softcap * tanh(scores / softcap)`` with a
    soft-cap), masked, softmax, times v, cast to q's dtype. Query head h reads kv head h // (H / KV)."""
    b, _, h, hd = q.shape
    allowed = jnp.broadcast_to(allowed[:, 0], (b, k.shape[1]))  # the kernel reads one bias row per batch row
    bias = jnp.where(allowed, 0.0, -jnp.inf).astype(jnp.float32)  # -inf: the kernel skips the slot's key
    result = jax.ShapeDtypeStruct((b, h, hd), jnp.float32)
    call = jax.ffi.ffi_call(_ATTENTION_TARGET, result)
    out = call(q[:, 0].astype(jnp.float32), k, v, bias, scale=np.float32(scale), softcap=np.float32(softcap or 0.0))
    return out[:, None].astype(q.dtype)
