"""On a GPU only (skipped elsewhere; benchmarks/gpu_check.sh runs it with JAX_PLATFORMS=cuda):
cuDNN's fused attention, as attention() hands it packed rows (the segment mask as a bias, and
cuDNN's own causal mask), against the float32 XLA attention, forward and backward; and a bf16
model with cuDNN attention against the same model with XLA attention, loss and gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rolellm_jax.models import build_model
from rolellm_jax.models.attention import attention
from tests.helpers.tiny_models import tiny_config

pytestmark = pytest.mark.skipif(jax.default_backend() != "gpu", reason="needs a GPU (run with JAX_PLATFORMS=cuda)")

FAST = "cudnn"  # the implementation under test; the reference is float32 "xla"


SEGMENT_STARTS = np.array([0, 50, 131, 300])  # of a packed row's examples; the last 9 tokens pad


def packed_rows(batch: int, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Segment ids (1, 2, 3, 4 from SEGMENT_STARTS, padding 0) and each token's position in its example."""
    seg = np.searchsorted(SEGMENT_STARTS, np.arange(length), side="right")
    positions = np.arange(length) - SEGMENT_STARTS[seg - 1]
    seg[length - 9 :] = 0
    return tuple(np.repeat(a[None].astype(np.int32), batch, 0) for a in (seg, positions))


def near(got, want, scale: float):
    got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, want, atol=scale * float(np.max(np.abs(want))))


def test_fused_attention_matches_float32_xla_on_packed_rows():
    rng = np.random.default_rng(0)
    q = jnp.asarray(rng.normal(size=(2, 512, 8, 64)), jnp.float32)
    k, v = (jnp.asarray(rng.normal(size=(2, 512, 2, 64)), jnp.float32) for _ in range(2))
    d_out = jnp.asarray(rng.normal(size=q.shape), jnp.float32)
    seg = jnp.asarray(packed_rows(2, 512)[0])

    def loss(q, k, v, impl):
        out = attention(q, k, v, seg, seg, impl=impl)
        return jnp.sum(out.astype(jnp.float32) * d_out), out

    (_, want), want_grads = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(q, k, v, "xla")
    bf16 = [a.astype(jnp.bfloat16) for a in (q, k, v)]
    (_, got), got_grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True), static_argnums=3)(
        *bf16, FAST
    )
    near(got, want, 2e-2)
    for got_grad, want_grad in zip(got_grads, want_grads):
        near(got_grad, want_grad, 3e-2)


def test_bf16_model_with_fused_attention_matches_xla_attention():
    cfg = tiny_config(
        vocab_size=512,
        hidden_size=256,
        intermediate_size=512,
        max_position_embeddings=512,
        dtype="bfloat16",
        attention_impl=FAST,
    )
    fast = build_model(cfg, rngs=nnx.Rngs(0))
    ref = build_model(cfg.replace(attention_impl="xla"), rngs=nnx.Rngs(1))
    nnx.update(ref, nnx.state(fast, nnx.Param))
    rng = np.random.default_rng(1)
    ids = jnp.asarray(rng.integers(2, 512, (2, 512)), jnp.int32)
    seg, positions = (jnp.asarray(a) for a in packed_rows(2, 512))

    def loss_and_grads(model):
        graphdef, params = nnx.split(model)

        def loss(params):
            logits = nnx.merge(graphdef, params)(ids, positions=positions, segment_ids=seg)
            logp = jax.nn.log_softmax(logits[:, :-1], axis=-1)
            nll = -jnp.take_along_axis(logp, ids[:, 1:, None], axis=-1)[..., 0]
            return jnp.sum(nll * (seg[:, 1:] > 0)) / jnp.sum(seg[:, 1:] > 0)

        return jax.jit(jax.value_and_grad(loss))(params)

    (got_loss, got_grads), (want_loss, want_grads) = loss_and_grads(fast), loss_and_grads(ref)
    assert abs(float(got_loss) - float(want_loss)) < 2e-2 * abs(float(want_loss))
    jax.tree.map(lambda g, w: near(g, w, 5e-2), got_grads, want_grads)
