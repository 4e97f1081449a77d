"""The packed-panel CPU kernel (models/kernels/cpu_decode_kernels.py, csrc/cpu_decode_kernels.cc): its products
against numpy's in float64, the panel layout, the embedding rows read from it, the bf16 prefill
route, and what happens where it cannot be built (decoding keeps XLA's dots and says why)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rolellm_jax.models.kernels import cpu_decode_kernels
from tests.models.test_cpu_decoding import weight_sized_moves

UNAVAILABLE = cpu_decode_kernels.unavailable_reason()
pytestmark = pytest.mark.skipif(UNAVAILABLE is not None, reason=f"kernel unavailable: {UNAVAILABLE}")

REPO = Path(__file__).resolve().parents[2]
SHAPES = [(1, 576, 960), (7, 70, 33), (8, 1, 16), (9, 64, 15), (17, 100, 48), ((2, 3), 40, 1)]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("rows, k, n", SHAPES, ids=[str(s) for s in SHAPES])
def test_products_equal_numpys(dtype, rows, k, n):
    rng = np.random.default_rng(0)
    lead = rows if isinstance(rows, tuple) else (rows,)
    w = jnp.asarray(rng.normal(size=(k, n)), dtype)
    x = jnp.asarray(rng.normal(size=(*lead, k)), jnp.float32)
    got = jax.jit(cpu_decode_kernels.matmul, static_argnums=2)(x, cpu_decode_kernels.pack(w), n)
    want = np.asarray(x, np.float64) @ np.asarray(w.astype(jnp.float32), np.float64)  # the weights as stored
    assert got.shape == (*lead, n) and got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5 * np.sqrt(k))


def test_panels_hold_sixteen_columns_row_after_row_and_unpack():
    w = jnp.arange(3 * 20, dtype=jnp.float32).reshape(3, 20)
    packed = cpu_decode_kernels.pack(w)
    assert packed.shape == (2, 3, 16)
    np.testing.assert_array_equal(packed[1, 2, :4], w[2, 16:20])
    np.testing.assert_array_equal(packed[1, :, 4:], 0)  # the padding columns
    np.testing.assert_array_equal(cpu_decode_kernels.unpack(packed, 20), w)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_embedding_rows_from_the_head_panels(dtype):
    table = jnp.asarray(np.random.default_rng(0).normal(size=(300, 64)), dtype)  # [V, D], V not a panel multiple
    packed = cpu_decode_kernels.pack(table.T)
    ids = jnp.asarray([[0, 15, 16, 299], [7, 7, 1, 298]], jnp.int32)
    np.testing.assert_array_equal(cpu_decode_kernels.rows(packed, ids), jnp.take(table, ids, axis=0))
    hlo = jax.jit(cpu_decode_kernels.rows).lower(packed, ids).compile().as_text()
    assert weight_sized_moves(hlo, 300 * 64) == []  # a bf16 gather that converts the table would show here


def test_a_bf16_prefill_runs_on_xlas_gemm_and_a_decode_on_the_kernel():
    w = cpu_decode_kernels.pack(jnp.ones((64, 32), jnp.bfloat16))
    few, many = jnp.ones((cpu_decode_kernels.BF16_MAX_ROWS, 64)), jnp.ones((cpu_decode_kernels.BF16_MAX_ROWS + 1, 64))

    def hlo(x):
        return jax.jit(cpu_decode_kernels.matmul, static_argnums=2).lower(x, w, 32).compile().as_text()

    assert "rolellm_packed_matmul" in hlo(few) and "rolellm_packed_matmul" not in hlo(many)
    np.testing.assert_array_equal(cpu_decode_kernels.matmul(many.astype(jnp.bfloat16), w, 32), 64.0)


def test_a_malformed_panel_array_is_refused_by_the_kernel():
    result = jax.ShapeDtypeStruct((1, 16), jnp.float32)
    call = jax.ffi.ffi_call("rolellm_packed_matmul", result)
    with pytest.raises(Exception, match=r"packed weight must be \[N/16, K, 16\]"):
        jax.block_until_ready(call(jnp.ones((1, 4)), jnp.ones((2, 4, 8))))


def _in_a_fresh_process(code: str, tmp_path, **env) -> subprocess.CompletedProcess:
    environ = dict(os.environ, JAX_PLATFORMS="cpu", ROLELLM_KERNEL_CACHE=str(tmp_path / "cache"), **env)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environ, timeout=300, cwd=REPO
    )


def test_built_once_into_the_cache_then_reused(tmp_path):
    code = "from rolellm_jax.models.kernels import cpu_decode_kernels; print(cpu_decode_kernels.unavailable_reason())"
    first = _in_a_fresh_process(code, tmp_path)
    assert first.stdout.strip() == "None", first.stderr[-2000:]
    built = list((tmp_path / "cache").iterdir())
    assert len(built) == 1 and built[0].suffix == ".so"  # no temporary left beside it
    stamp = built[0].stat().st_mtime_ns
    second = _in_a_fresh_process(code, tmp_path)
    assert second.stdout.strip() == "None" and built[0].stat().st_mtime_ns == stamp


@pytest.mark.parametrize("lanes", [4, 8])
def test_each_narrower_vector_width_passes_the_kernel_tests(lanes):
    """The kernel has one copy per vector width (16 lanes: AVX-512, 8: AVX2, 4: 128-bit) and runs the widest
    the CPU has, which the tests above check; here each narrower copy the CPU can run, asked for with
    ROLELLM_CPU_KERNEL_LANES in a fresh process, passes the same products and attention tests."""
    widest = cpu_decode_kernels.vector_lanes()
    if lanes == widest:
        pytest.skip(f"this CPU's widest copy has {widest} lanes: the tests above ran it")
    if lanes > widest:
        pytest.skip(f"this CPU cannot run the {lanes}-lane copy (widest: {widest})")
    env = dict(os.environ, JAX_PLATFORMS="cpu", ROLELLM_CPU_KERNEL_LANES=str(lanes))
    code = "from rolellm_jax.models.kernels import cpu_decode_kernels as k; print(k.vector_lanes())"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300, cwd=REPO)
    assert run.stdout.strip() == str(lanes), run.stderr[-2000:]
    selected = "(products or attention) and not narrower_vector_width"  # not this test again
    tests = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k", selected]
    run = subprocess.run(tests, capture_output=True, text=True, env=env, timeout=900, cwd=REPO)
    assert run.returncode == 0 and " passed" in run.stdout, run.stdout[-3000:]


def test_a_lane_count_the_kernel_has_no_copy_for_is_refused_in_one_line(tmp_path):
    code = "from rolellm_jax.models.kernels import cpu_decode_kernels as k; print(k.unavailable_reason())"
    run = _in_a_fresh_process(code, tmp_path, ROLELLM_CPU_KERNEL_LANES="6")
    assert run.stdout.strip() == "ROLELLM_CPU_KERNEL_LANES=6: the kernel has copies of 4, 8 or 16 lanes", run.stderr


LATIN1_COMPILER = "#!/bin/sh\nprintf 'erreur \\351\\n' >&2\nexit 1\n"  # a localised message, not UTF-8


@pytest.mark.parametrize(
    "env, reason",
    [
        ({"CXX": "/bin/false"}, "cpu_decode_kernels.cc did not build or load"),
        ({"CXX": "latin-1"}, "erreur"),
        ({"ROLELLM_CPU_KERNELS": "0"}, "=0"),
    ],
    ids=["compiler-fails", "compiler-fails-in-latin-1", "switched-off"],
)
def test_without_the_kernel_decoding_keeps_xlas_dots_and_says_why(tmp_path, env, reason):
    if env.get("CXX") == "latin-1":
        compiler = tmp_path / "cc"
        compiler.write_text(LATIN1_COMPILER)
        compiler.chmod(0o755)
        env = {"CXX": str(compiler)}
    code = """
from rolellm_jax.models.cpu_decoding import for_cpu_decoding
from rolellm_jax.models.modules import Dense
from tests.models.test_models import hf_llama, ported
layer = for_cpu_decoding(ported(hf_llama(kv_heads=2))).layers[0]
print(type(layer.self_attn.qkv_proj) is Dense and type(layer.mlp.down_proj) is Dense)
"""
    run = _in_a_fresh_process(code, tmp_path, **env)
    assert run.stdout.strip() == "True", run.stderr[-2000:]
    warning = [line for line in run.stderr.splitlines() if "CPU decode kernels off" in line]
    assert len(warning) == 1 and reason in warning[0], run.stderr[-2000:]


ATTENTION_SHAPES = [(4, 4, 8), (9, 3, 64), (8, 2, 136)]  # hd: a tail only, whole lanes, lanes + tail


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize(
    "heads, kv_heads, hd", ATTENTION_SHAPES, ids=[f"{h}q{kv}kv{hd}" for h, kv, hd in ATTENTION_SHAPES]
)
@pytest.mark.parametrize("window, softcap", [(None, None), (3, None), (None, 5.0)], ids=["plain", "window", "softcap"])
def test_one_query_attention_equals_the_xla_path(dtype, heads, kv_heads, hd, window, softcap):
    """Rows: full, left-padded, and a padding query (segment 0, which reads only its own slot); the
    query at a traced cache offset, as in a decode step."""
    from rolellm_jax.models.attention import CPU_DECODE, attention

    b, s = 3, 11
    rng = np.random.default_rng(0)
    q = jnp.asarray(rng.normal(size=(b, 1, heads, hd)), dtype)
    k, v = (jnp.asarray(rng.normal(size=(b, s, kv_heads, hd)), dtype) for _ in range(2))
    kv_segments = np.ones((b, s), np.int32)
    kv_segments[1, :4] = 0
    kv_segments[2, -1] = 0
    q_segments = jnp.asarray([[1], [1], [0]], jnp.int32)
    args = (q, k, v, q_segments, jnp.asarray(kv_segments))
    kw = dict(q_offset=jnp.int32(s - 1), window=window, softcap=softcap)
    got = jax.jit(lambda *a: attention(*a, impl=CPU_DECODE, **kw))(*args)
    f32 = [a.astype(jnp.float32) if a.dtype == dtype else a for a in args]
    want = attention(*f32, impl="xla", **kw)  # the same stored values, all in float32
    assert got.shape == q.shape and got.dtype == q.dtype
    tol = 1e-5 if dtype == "float32" else 1e-2  # bf16: the output's own rounding
    np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want), atol=tol, rtol=tol)
    np.testing.assert_allclose(np.asarray(got[2, 0, 0], np.float32), np.asarray(v[2, -1, 0], np.float32), atol=tol)
    hlo = jax.jit(lambda *a: attention(*a, impl=CPU_DECODE, **kw)).lower(*args).compile().as_text()
    assert 'custom_call_target="rolellm_decode_attention"' in hlo


def test_attention_the_kernel_does_not_take_goes_to_xla():
    from rolellm_jax.models.attention import CPU_DECODE, attention

    for t, hd in ((2, 16), (1, 272)):  # two query tokens (a prefill); a head size over 256
        q = jnp.ones((1, t, 2, hd))
        k = v = jnp.ones((1, 4, 2, hd))
        segments = (jnp.ones((1, t), jnp.int32), jnp.ones((1, 4), jnp.int32))
        call = jax.jit(lambda q, k, v, segments=segments: attention(q, k, v, *segments, q_offset=2, impl=CPU_DECODE))
        assert "rolellm_decode_attention" not in call.lower(q, k, v).compile().as_text()
        np.testing.assert_allclose(call(q, k, v), 1.0, rtol=1e-6)


def test_attention_broadcast_segments_and_a_row_with_no_allowed_slot_equal_the_xla_path():
    """Segment ids of batch 1 for a batch of 3 (the kernel reads a mask row per batch row), and a query past the
    cache with a window (no slot allowed: XLA's path averages v, the kernel must not divide 0 by 0)."""
    from rolellm_jax.models.attention import CPU_DECODE, attention

    b, s = 3, 6
    rng = np.random.default_rng(1)
    q = jnp.asarray(rng.normal(size=(b, 1, 4, 8)), jnp.float32)
    k, v = (jnp.asarray(rng.normal(size=(b, s, 2, 8)), jnp.float32) for _ in range(2))
    segments = (jnp.ones((1, 1), jnp.int32), jnp.ones((1, s), jnp.int32))
    for kw in (dict(q_offset=jnp.int32(s - 1)), dict(q_offset=jnp.int32(s + 3), window=2)):
        got = jax.jit(lambda *a, kw=kw: attention(*a, impl=CPU_DECODE, **kw))(q, k, v, *segments)
        want = attention(q, k, v, *segments, impl="xla", **kw)
        assert np.isfinite(np.asarray(got)).all()
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5, rtol=1e-5)
