"""TPU splash attention (Pallas) behind ``models.attention.attention(..., impl="splash")``.

Causal + segment-id masked, grouped-query: each kv head serves its group of query heads through
the MQA form of the kernel (MaxText's arrangement). Under a mesh the kernel runs per device in a
``shard_map`` (batch over the "activation_batch" mesh axes, heads over "activation_heads" when
the kv heads divide too), because a Pallas call cannot be partitioned by GSPMD.

On a backend other than TPU the same kernel runs in Pallas interpret mode: slow, but it lets the
CPU tests check this path against the XLA one. Only full-sequence calls use it (training,
scoring, prefill without a cache); KV-cache steps use the XLA path.
"""

from __future__ import annotations

import functools
import math

import jax
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as splash
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as splash_mask
from jax.sharding import PartitionSpec

from rolellm_jax.errors import ConfigError
from rolellm_jax.parallel.sharding import logical_to_spec

BLOCK_SIZES = (512, 256, 128)  # the largest that divides the sequence wins


@functools.lru_cache(maxsize=32)
def _kernel(seq_len: int, group: int, interpret: bool):
    block = next((b for b in BLOCK_SIZES if seq_len % b == 0), None)
    if block is None:
        raise ConfigError(f"attention_impl='splash' needs a sequence length that is a multiple of 128, got {seq_len}")
    sizes = splash.BlockSizes(
        block_q=block,
        block_kv=block,
        block_kv_compute=block,
        block_q_dkv=block,
        block_kv_dkv=block,
        block_kv_dkv_compute=block,
        block_q_dq=block,
        block_kv_dq=block,
    )
    mask = splash_mask.MultiHeadMask([splash_mask.CausalMask((seq_len, seq_len))] * group)
    with jax.ensure_compile_time_eval():  # concrete mask tables: the cached kernel outlives this trace
        return splash.make_splash_mqa_single_device(mask=mask, block_sizes=sizes, interpret=interpret)


def _attend_local(q: jax.Array, k: jax.Array, v: jax.Array, segment_ids: jax.Array) -> jax.Array:
    """q [B, T, H, hd], k/v [B, T, KV, hd], segment_ids [B, T] -> [B, T, H, hd] on one device."""
    b, t, h, hd = q.shape
    kv = k.shape[2]
    kernel = _kernel(t, h // kv, jax.default_backend() != "tpu")
    q = (q * hd**-0.5).transpose(0, 2, 1, 3).reshape(b, kv, h // kv, t, hd)  # the kernel does not scale
    k, v = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)

    def one_row(q, k, v, seg):
        ids = splash.SegmentIds(q=seg, kv=seg)
        return jax.vmap(lambda qg, kh, vh: kernel(qg, kh, vh, segment_ids=ids))(q, k, v)

    out = jax.vmap(one_row)(q, k, v, segment_ids)  # [B, KV, G, T, hd]
    return out.reshape(b, h, t, hd).transpose(0, 2, 1, 3)


def _mesh_axes_size(mesh, axes) -> int:
    if axes is None:
        return 1
    return math.prod(mesh.shape[a] for a in ((axes,) if isinstance(axes, str) else axes))


def splash_attention(q: jax.Array, k: jax.Array, v: jax.Array, segment_ids: jax.Array) -> jax.Array:
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return _attend_local(q, k, v, segment_ids)
    batch = logical_to_spec(("activation_batch",))[0]
    heads = logical_to_spec(("activation_heads",))[0]
    if q.shape[0] % _mesh_axes_size(mesh, batch):
        batch = None
    if k.shape[2] % _mesh_axes_size(mesh, heads):  # fewer kv heads than shards: keep heads whole
        heads = None
    qkv = PartitionSpec(batch, None, heads, None)
    return jax.shard_map(
        _attend_local, in_specs=(qkv, qkv, qkv, PartitionSpec(batch, None)), out_specs=qkv, check_vma=False
    )(q, k, v, segment_ids)
