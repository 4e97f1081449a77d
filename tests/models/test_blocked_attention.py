"""Blocked causal attention with the flash-style backward (models/kernels/blocked_attention.py) against
PyTorch's scaled_dot_product_attention, and what the dots remat policies keep of it."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from rolellm_jax.models import build_model
from rolellm_jax.models.config import ModelConfig
from rolellm_jax.models.kernels.blocked_attention import allowed_mask, causal_blocks_attention, causal_query_blocks
from rolellm_jax.parallel import sharding
from tests.helpers.jaxpr_eqns import all_eqns
from tests.helpers.tiny_models import tiny_config


def packed_segments(batch: int, length: int, borders: list[int], pad_from: int) -> np.ndarray:
    """Segment ids 1, 2, ... starting at ``borders`` (crossing block borders), 0 from ``pad_from``."""
    seg = np.searchsorted(borders, np.arange(length), side="right").astype(np.int32)
    seg[pad_from:] = 0
    return np.repeat(seg[None], batch, 0)


def tiny_llama(**runtime) -> ModelConfig:
    """A 2-layer grouped-query LLaMA (4 heads, 2 kv heads) for 256-token sequences."""
    return tiny_config(max_position_embeddings=256, dtype="float32", **runtime)


def torch_attention(q, k, v, allowed):
    """transformers' eager recipe: kv heads repeated (repeat_kv), boolean mask, SDPA."""
    groups = q.shape[2] // k.shape[2]
    tq, tk, tv = (torch.tensor(np.asarray(a)).transpose(1, 2).requires_grad_() for a in (q, k, v))
    out = torch.nn.functional.scaled_dot_product_attention(
        tq,
        tk.repeat_interleave(groups, dim=1),
        tv.repeat_interleave(groups, dim=1),
        attn_mask=torch.tensor(np.asarray(allowed))[:, None],
    )
    return out, (tq, tk, tv)


@pytest.mark.parametrize("length,heads,kv_heads", [(256, 8, 2), (512, 4, 4)], ids=["4blocks-gqa", "8blocks-mha"])
def test_blocked_attention_matches_torch_sdpa(length, heads, kv_heads):
    """Outputs and q/k/v gradients equal PyTorch's on packed rows with trailing padding."""
    blocks = causal_query_blocks(length)
    assert blocks == length // 64
    rng = np.random.default_rng(0)
    q = rng.normal(size=(2, length, heads, 16)).astype(np.float32) * 2  # peaked rows: errors show
    k = rng.normal(size=(2, length, kv_heads, 16)).astype(np.float32) * 2
    v = rng.normal(size=(2, length, kv_heads, 16)).astype(np.float32)
    d_out = rng.normal(size=q.shape).astype(np.float32)
    seg = jnp.asarray(packed_segments(2, length, [0, 50, 70, 131, 200], pad_from=length - 9))

    def loss(q, k, v):
        return jnp.sum(causal_blocks_attention(q, k, v, seg, seg, blocks) * d_out)

    out = causal_blocks_attention(q, k, v, seg, seg, blocks)
    grads = jax.grad(loss, argnums=(0, 1, 2))(q, k, v)
    ref_out, ref_inputs = torch_attention(q, k, v, allowed_mask(seg, seg, 0))
    (ref_out * torch.tensor(d_out).transpose(1, 2)).sum().backward()
    np.testing.assert_allclose(out, ref_out.detach().transpose(1, 2).numpy(), atol=2e-5)
    for name, ours, theirs in zip("qkv", grads, ref_inputs):
        np.testing.assert_allclose(ours, theirs.grad.transpose(1, 2).numpy(), atol=1e-4, err_msg=f"d{name}")


def batched_dots(jaxpr) -> int:
    """dot_generals with batch dimensions (the attention products) in a jaxpr and its sub-jaxprs."""
    return sum(
        eqn.primitive.name == "dot_general" and bool(eqn.params["dimension_numbers"][1][0]) for eqn in all_eqns(jaxpr)
    )


def test_dots_remat_policies_keep_attention_residuals():
    """Under the dots policies a layer's backward does not rerun the attention forward: as many
    attention products as without remat (fwd: QK, PV; bwd: QK, dV, dP, dQ, dK per block), while
    "full" reruns QK and PV of every block."""
    ids = jnp.zeros((1, 256), jnp.int32)
    blocks = causal_query_blocks(256)

    def count(remat_policy: str) -> int:
        graphdef, state = nnx.split(build_model(tiny_llama(remat_policy=remat_policy), rngs=nnx.Rngs(0)))
        grad = jax.grad(lambda st: jnp.mean(nnx.merge(graphdef, st)(ids) ** 2))
        return batched_dots(jax.make_jaxpr(grad)(state).jaxpr)

    assert count("none") == 7 * blocks  # the scanned layer body appears once forward, once backward
    assert count("dots_with_no_batch_dims_saveable") == count("dots_saveable") == 7 * blocks
    assert count("full") == 9 * blocks


def test_blocked_attention_grads_on_8_device_mesh():
    """The custom VJP and its transposes under GSPMD: grads of a 256-token model on a (2, 2, 2)
    mesh (kv heads split over `tensor`, rows over `data` x `fsdp`) equal one device's."""
    assert jax.device_count() == 8
    cfg = tiny_llama(remat_policy="dots_with_no_batch_dims_saveable")
    rng = np.random.default_rng(1)
    ids = jnp.asarray(rng.integers(1, 64, (4, 256)), jnp.int32)
    seg = jnp.asarray(packed_segments(4, 256, [0, 90, 170], pad_from=250))
    model = build_model(cfg, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    grad = jax.jit(jax.grad(lambda st, ids, seg: jnp.mean(nnx.merge(graphdef, st)(ids, segment_ids=seg) ** 2)))
    single = nnx.to_pure_dict(grad(state, ids, seg))
    mesh = sharding.make_mesh(sharding.MeshConfig(data=2, fsdp=2, tensor=2))
    with jax.set_mesh(mesh):
        sharded_state = sharding.shard_params(state, mesh)
        rows = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(("data", "fsdp")))
        on_mesh = nnx.to_pure_dict(grad(sharded_state, jax.device_put(ids, rows), jax.device_put(seg, rows)))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), on_mesh, single)
