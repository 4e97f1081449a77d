"""The model laid out for decoding on a CPU: ``for_cpu_decoding(model)``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from rolellm_jax.models.attention import CPU_DECODE
from rolellm_jax.models.kernels import cpu_decode_kernels, cpu_matmul
from rolellm_jax.models.layers import CausalLM, DecoderLayer
from rolellm_jax.models.modules import Dense, PackedDense, PackedEmbedding


def for_cpu_decoding(model: CausalLM, fuse_projections: bool = True, packed_kernels: bool = True) -> CausalLM:
    """The same model laid out for decoding on a CPU (forward only): one module per layer, each with
    arrays of its own (a copy of its slice of the stacked params), and every dense layer on
    cpu_matmul's dot (16-bit GEMMs with a float32 result, cast back). XLA:CPU copies a layer's
    weights out of the stacked [L, ...] arrays before every dot, and upcasts the weights of a dot
    with a bf16 result to float32 copies (benchmarks/RESULTS.md, "Where a decode step goes"), so a
    step moved ~3x the weight bytes it needs.

    On one device (unless ``fuse_projections=False``), each layer's q/k/v kernels become one
    ``qkv_proj`` and gate/up one ``gate_up_proj`` (concatenated on the output axis): a batch-1 step is
    a chain of GEMVs whose fixed cost per call shows on the small ones (k/v ran at half the read
    bandwidth), so fewer, larger calls (SmolLM2 fp32 batch 1: 39.4 -> 38.0 ms a step in one A/B,
    within that machine's run-to-run spread: no loss, no gain beyond the noise; benchmarks/RESULTS.md).
    Params on more than one device keep separate kernels (joining them would reshard the weights,
    and the joined kernel keeps q_proj's axis names, which would cut a tensor axis across the q/k/v
    boundaries). Same values up to float rounding order; the KV cache of
    :meth:`CausalLM.init_cache` becomes per-layer tuples. The stacked model is untouched (its layer
    params are copied, in one compiled call: twice their memory while both are alive). The copy
    costs a pass over the weights, so a caller decoding many times lays the model out once
    (``generate`` and the serving engine take an already laid out model as it is).

    With ``packed_kernels`` (on one device, where ``cpu_decode_kernels.available()``), every dense layer
    without a LoRA adapter and the LM head become ``PackedDense`` / ``PackedEmbedding`` on
    cpu_decode_kernels's panel kernel: a weight read once per call, bf16 read as bf16 (the XLA:CPU GEMMs
    packed the weight on every call and had no bf16 GEMV). A tied embedding is then kept only as
    the head's panels, which the lookup reads too. One-token attention steps then read the KV cache
    in place (``cpu_decode_kernels.attention``; XLA's dots copied it transposed every step)."""
    if model.unstacked:
        return model
    graphdef, state = nnx.split(model)
    copy = nnx.merge(graphdef, state)  # shares the arrays; only .layers is replaced
    one_device = all(len(leaf.sharding.device_set) == 1 for leaf in jax.tree.leaves(nnx.state(model.layers)))
    pack = packed_kernels and one_device and cpu_decode_kernels.available()
    copy.layers = _unstacked(model.layers, model.cfg.num_hidden_layers, fuse_projections and one_device, pack)
    if pack:
        _pack_head(copy)
    for _, module in nnx.iter_modules(copy):
        if isinstance(module, nnx.Linear):
            module.dot_general = cpu_matmul.dot_general
    return copy


@nnx.jit(static_argnums=(1, 2, 3))
def _unstacked(layers: DecoderLayer, num_layers: int, fuse: bool, pack: bool) -> nnx.List:
    layer_def, layer_state = nnx.split(layers)
    out = nnx.List(nnx.merge(layer_def, jax.tree.map(lambda a, i=i: a[i], layer_state)) for i in range(num_layers))
    for layer in out:
        if fuse:
            _fuse_projections(layer)
        if pack:
            _pack_dense_layers(layer)
            layer.self_attn.impl = CPU_DECODE
    return out


def _pack_dense_layers(module: nnx.Module) -> None:
    """Every ``Dense`` under ``module`` without a LoRA adapter, in a dtype the kernel reads -> ``PackedDense``."""
    for name, child in list(vars(module).items()):
        if isinstance(child, Dense):
            if child.lora_a is None and cpu_decode_kernels.packable(child.dtype or child.kernel.dtype):
                setattr(module, name, PackedDense(child))
        elif isinstance(child, nnx.Module):
            _pack_dense_layers(child)


@nnx.jit
def _pack_head(model: CausalLM) -> None:
    cfg = model.cfg
    if not cpu_decode_kernels.packable(cfg.dtype):
        return
    if cfg.tie_word_embeddings:
        model.embed_tokens = PackedEmbedding(model.embed_tokens.embedding[...], cfg.dtype)
    elif model.lm_head.lora_a is None:
        model.lm_head = PackedDense(model.lm_head)


def _fuse_projections(layer: DecoderLayer) -> None:
    """q/k/v -> ``self_attn.qkv_proj`` and gate/up -> ``mlp.gate_up_proj`` (the layout GLM's checkpoints
    have for gate/up), unless a dense layer carries a LoRA adapter (it would be lost)."""
    attn, mlp = layer.self_attn, layer.mlp
    if not any(d.lora_a is not None for _, d in nnx.iter_modules(layer) if isinstance(d, Dense)):
        attn.qkv_proj = _concatenated(attn.q_proj, attn.k_proj, attn.v_proj)
        attn.fused_qkv = True
        del attn.q_proj, attn.k_proj, attn.v_proj
        if not mlp.fused:
            mlp.gate_up_proj = _concatenated(mlp.gate_proj, mlp.up_proj)
            mlp.fused = True
            del mlp.gate_proj, mlp.up_proj


def _concatenated(*parts: Dense) -> Dense:
    """The first dense layer, its kernel (and bias) now all the parts' side by side on the output axis."""
    first = parts[0]
    first.kernel.set_value(jnp.concatenate([p.kernel[...] for p in parts], axis=-1))
    if first.bias is not None:
        first.bias.set_value(jnp.concatenate([p.bias[...] for p in parts], axis=-1))
    first.out_features = sum(p.out_features for p in parts)
    return first
