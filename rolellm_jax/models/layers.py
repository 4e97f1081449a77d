"""The decoder building blocks shared by every family: written once, composed by llama.py / glm.py.

Contents, top to bottom (dense layers and RMSNorm are in modules.py): the attention module (rotary.py,
attention.py) and gated MLP (SwiGLU / GeGLU) modules, one decoder layer, and ``CausalLM``: embeddings + a stacked
layer stack (scanned or unrolled, optionally rematerialised) + final norm + LM head, with a functional KV cache.
Layers that differ (Gemma's sliding and full attention layers: window, rotary base) get their per-layer
values as inputs of the stack, so the scan stays one loop.

Numerics follow transformers' LlamaForCausalLM / GlmForCausalLM: RMSNorm normalises in float32,
rotary angles are computed in float32, attention softmax runs in float32 (as in
``jax.nn.dot_product_attention``); everything else runs in ``cfg.dtype`` with ``cfg.param_dtype``
parameters. Logits are always float32.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rolellm_jax.errors import UserError
from rolellm_jax.models.attention import attention, check_attention_impl
from rolellm_jax.models.config import ModelConfig, StaticConfig
from rolellm_jax.models.kernels import cpu_matmul
from rolellm_jax.models.kernels.blocked_attention import ATTENTION_SAVED, soft_capped
from rolellm_jax.models.modules import PackedDense, PackedEmbedding, RMSNorm, axes, dense, embed_rows
from rolellm_jax.models.rotary import RotaryLayout, apply_rotary, rotary_inv_freq
from rolellm_jax.models.slice_update import update_slice
from rolellm_jax.parallel.sharding import constrain

BATCH, LENGTH, EMBED = "activation_batch", "activation_length", "activation_embed"


# custom-VJP outputs the dots policies keep too: weight_grad="cpu" dense outputs and the
# blocked attention's output / residuals (so its forward is not rerun before its backward)
_SAVE_DENSE = jax.checkpoint_policies.save_only_these_names(cpu_matmul.DENSE_OUTPUT, ATTENTION_SAVED)


REMAT_POLICIES = {  # by name: config.REMAT_POLICY_NAMES lists them (with "none") for validation
    "full": None,  # save nothing: recompute the whole layer in the backward pass
    "dots_saveable": jax.checkpoint_policies.save_from_both_policies(
        jax.checkpoint_policies.dots_saveable, _SAVE_DENSE
    ),
    "dots_with_no_batch_dims_saveable": jax.checkpoint_policies.save_from_both_policies(
        jax.checkpoint_policies.dots_with_no_batch_dims_saveable, _SAVE_DENSE
    ),
}


class ModelInputError(UserError, ValueError):
    """Inputs the model cannot take (the message names the argument and its shape)."""


NO_WINDOW = int(np.iinfo(np.int32).max)  # the per-layer window of a full-attention layer among sliding ones


class NormNames(NamedTuple):
    """The parameter names of a layer's RMSNorms (None: the family has no such norm). Pre-norms before
    each branch; post-norms on each branch's output, before it joins the residual stream."""

    pre_attn: str = "input_layernorm"
    post_attn: str | None = None
    pre_mlp: str = "post_attention_layernorm"
    post_mlp: str | None = None


class Attention(nnx.Module):
    """q/k/v projections (optional bias), optional per-head RMSNorm on q and k (Qwen3, Gemma 3; before
    rotary), rotary, attention() (scale, soft-cap and window from the config), bias-free output projection."""

    def __init__(self, cfg: ModelConfig, family: type[CausalLM], *, rngs: nnx.Rngs):
        d, hd = cfg.hidden_size, cfg.head_size
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, hd
        self.q_proj = dense(rngs, cfg, d, self.num_heads * hd, "embed", "heads", cfg.attention_bias)
        self.k_proj = dense(rngs, cfg, d, self.num_kv_heads * hd, "embed", "kv_heads", cfg.attention_bias)
        self.v_proj = dense(rngs, cfg, d, self.num_kv_heads * hd, "embed", "kv_heads", cfg.attention_bias)
        self.o_proj = dense(rngs, cfg, self.num_heads * hd, d, "heads", "embed")
        self.fused_qkv = False  # cpu_decoding.for_cpu_decoding fuses q/k/v into qkv_proj
        self.qk_norm = family.qk_norm
        if family.qk_norm:
            plus_one = family.norm_plus_one
            self.q_norm = RMSNorm(hd, cfg.rms_norm_eps, cfg, plus_one)
            self.k_norm = RMSNorm(hd, cfg.rms_norm_eps, cfg, plus_one)
        self.rotary_layout = family.rotary_layout
        self.inv_freq = tuple(float(f) for f in rotary_inv_freq(cfg))  # static constants, not params
        self.impl = cfg.attention_impl
        self.window = cfg.sliding_window
        self.scale = None if cfg.query_pre_attn_scalar is None else float(cfg.query_pre_attn_scalar) ** -0.5
        self.softcap = cfg.attn_logit_softcapping

    def __call__(
        self,
        x: jax.Array,
        positions: jax.Array,
        q_segment_ids: jax.Array,
        kv_segment_ids: jax.Array,
        kv_cache: tuple[jax.Array, jax.Array] | None = None,
        cache_index: jax.Array | int = 0,
        layer_inputs: dict[str, jax.Array] | None = None,
        window_start: jax.Array | int = 0,
    ):
        """``layer_inputs``: this layer's ``window`` (int32 scalar) and ``inv_freq`` (float32 [r/2]) where
        layers differ (CausalLM.per_layer_inputs); None: the config's, the same in every layer.
        ``kv_segment_ids`` [B', S'] narrower than the cache (fewer rows, fewer slots): attention reads only
        the cache's rows ``[0, B')`` and slots ``[window_start, window_start + S')`` (the CausalLM
        cache contract's window)."""
        window, inv_freq = self.window, self.inv_freq
        if layer_inputs is not None:
            window, inv_freq = layer_inputs["window"], layer_inputs["inv_freq"]
        b, t, _ = x.shape
        hd = self.head_dim
        if self.fused_qkv:  # cpu_decoding's [D, (H + 2 KV) hd] kernel: one GEMV, not three
            q_end, k_end = self.num_heads * hd, (self.num_heads + self.num_kv_heads) * hd
            q, k, v = jnp.split(self.qkv_proj(x), (q_end, k_end), axis=-1)
        else:
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        q = q.reshape(b, t, self.num_heads, hd)
        k, v = k.reshape(b, t, self.num_kv_heads, hd), v.reshape(b, t, self.num_kv_heads, hd)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q = constrain(q, (BATCH, LENGTH, "activation_heads", "activation_head_dim"))
        q = apply_rotary(q, positions, inv_freq, self.rotary_layout)
        k = apply_rotary(k, positions, inv_freq, self.rotary_layout)
        if kv_cache is not None:  # write this step's keys/values at the cache index, read all slots
            k_all = update_slice(kv_cache[0], k, (0, cache_index, 0, 0))  # in place, also in bf16
            v_all = update_slice(kv_cache[1], v, (0, cache_index, 0, 0))
            cache_axes = (BATCH, LENGTH, "activation_kv_heads", "activation_head_dim")
            k_all, v_all = constrain(k_all, cache_axes), constrain(v_all, cache_axes)  # rows stay on their devices
            kv_cache = (k_all, v_all)
            rows, span = kv_segment_ids.shape
            if (rows, span) != k_all.shape[:2]:  # a window: only it is read (copied), not the whole cache
                read = lambda a: jax.lax.dynamic_slice(a, (0, window_start, 0, 0), (rows, span, *a.shape[2:]))
                k_all, v_all = read(k_all), read(v_all)
            k, v = k_all.astype(q.dtype), v_all.astype(q.dtype)
        out = attention(
            q,
            k,
            v,
            q_segment_ids,
            kv_segment_ids,
            q_offset=cache_index - window_start,
            impl=self.impl,
            window=window,
            scale=self.scale,
            softcap=self.softcap,
        )
        return self.o_proj(out.reshape(b, t, self.num_heads * self.head_dim)), kv_cache


MLP_ACTIVATIONS = {
    "silu": jax.nn.silu,  # SwiGLU
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),  # GeGLU (Gemma): torch's tanh gelu
}


class GatedMLP(nnx.Module):
    """down(act(gate(x)) * up(x)): SwiGLU (silu) or GeGLU (Gemma's tanh gelu). fused=True keeps gate and up in
    one [D, 2F] kernel (GLM's gate_up_proj, gate first); fused=False has LLaMA's separate gate_proj / up_proj."""

    def __init__(self, cfg: ModelConfig, fused: bool, activation: str = "silu", *, rngs: nnx.Rngs):
        d, f = cfg.hidden_size, cfg.intermediate_size
        self.fused = fused
        self.activation = activation
        if fused:
            self.gate_up_proj = dense(rngs, cfg, d, 2 * f, "embed", "mlp")
        else:
            self.gate_proj = dense(rngs, cfg, d, f, "embed", "mlp")
            self.up_proj = dense(rngs, cfg, d, f, "embed", "mlp")
        self.down_proj = dense(rngs, cfg, f, d, "mlp", "embed")

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.fused:
            gate, up = jnp.split(self.gate_up_proj(x), 2, axis=-1)
        else:
            gate, up = self.gate_proj(x), self.up_proj(x)
        hidden = constrain(MLP_ACTIVATIONS[self.activation](gate) * up, (BATCH, LENGTH, "activation_mlp"))
        return self.down_proj(hidden)


class DecoderLayer(nnx.Module):
    """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x)); a family with post-norms (GLM-4-0414,
    Gemma: the "sandwich") normalises each branch's output too before it joins the residual:
    x + norm(attn(norm(x))). The norms' parameter names are the family's ``norm_names``."""

    def __init__(self, cfg: ModelConfig, family: type[CausalLM], *, rngs: nnx.Rngs):
        self.norm_names = family.norm_names
        for name in family.norm_names:
            if name is not None:
                setattr(self, name, RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, cfg, family.norm_plus_one))
        self.self_attn = Attention(cfg, family, rngs=rngs)
        self.mlp = GatedMLP(cfg, family.fused_gate_up, family.mlp_activation, rngs=rngs)
        self.post_norms = family.norm_names.post_attn is not None  # False skips them (a test's wrong detail)

    def __call__(
        self,
        x,
        positions,
        q_segment_ids,
        kv_segment_ids,
        kv_cache=None,
        cache_index=0,
        layer_inputs=None,
        window_start=0,
    ):
        names = self.norm_names
        h = getattr(self, names.pre_attn)(x)
        attn_out, kv_cache = self.self_attn(
            h, positions, q_segment_ids, kv_segment_ids, kv_cache, cache_index, layer_inputs, window_start
        )
        mlp = self.mlp
        if self.post_norms:
            attn_out = getattr(self, names.post_attn)(attn_out)
            mlp = lambda h: getattr(self, names.post_mlp)(self.mlp(h))  # noqa: E731
        x = constrain(x + attn_out, (BATCH, LENGTH, EMBED))
        x = constrain(x + mlp(getattr(self, names.pre_mlp)(x)), (BATCH, LENGTH, EMBED))
        return x, kv_cache


# ---------------------------------------------------------------- the whole model
class CausalLM(nnx.Module):
    """Embeddings -> L decoder layers (params stacked on a leading "layers" axis) -> norm -> logits.

    A family subclass sets the class attributes below; nothing else differs (q/k/v biases, the sliding
    window and layer types, rotary bases, attention scale and soft-caps come from the config).
    See rolellm_jax/models/__init__.py for the call and KV-cache contract.
    """

    rotary_layout: RotaryLayout = "half"
    fused_gate_up: bool = False
    qk_norm: bool = False
    norm_names: NormNames = NormNames()
    norm_plus_one: bool = False  # Gemma's (1 + w) RMSNorms, every one of them
    mlp_activation: str = "silu"  # a key of MLP_ACTIVATIONS
    scale_embeddings: bool = False  # Gemma: embeddings * sqrt(hidden_size), the factor in the compute dtype

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        check_attention_impl(cfg.attention_impl, cfg.dtype)
        self.static_config = StaticConfig(cfg)
        self.embed_tokens = nnx.Embed(
            cfg.vocab_size,
            cfg.hidden_size,
            dtype=cfg.dtype,
            param_dtype=cfg.param_dtype,
            embedding_init=nnx.initializers.normal(0.02),
            embedding_metadata=axes("vocab", "embed"),
            rngs=rngs,
        )

        # One DecoderLayer per layer, vmapped at construction so every param gets a leading L axis
        # (logical name "layers"); the same layout whether the forward scans or unrolls.
        @nnx.split_rngs(splits=cfg.num_hidden_layers)
        @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: "layers"})
        def make_layers(layer_rngs: nnx.Rngs) -> DecoderLayer:
            return DecoderLayer(cfg, type(self), rngs=layer_rngs)

        self.layers = make_layers(rngs)
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, cfg, type(self).norm_plus_one)
        if not cfg.tie_word_embeddings:
            self.lm_head = dense(rngs, cfg, cfg.hidden_size, cfg.vocab_size, "embed", "vocab")

    @property
    def cfg(self) -> ModelConfig:
        return self.static_config.value

    @property
    def unstacked(self) -> bool:
        """True for a model from :func:`cpu_decoding.for_cpu_decoding`: one module (own arrays) per layer."""
        return isinstance(self.layers, nnx.List)

    # -- KV cache: a plain pytree, so it passes through jit / donation like any array dict
    def init_cache(self, batch: int, max_len: int, dtype: Any = None) -> dict[str, Any]:
        """``k`` / ``v`` [L, B, max_len, KV, hd]; for an unstacked model, tuples of L arrays
        [B, max_len, KV, hd] (each layer's own buffer, updated in place)."""
        cfg = self.cfg
        shape = (batch, max_len, cfg.num_key_value_heads, cfg.head_size)
        dtype = dtype or cfg.dtype
        if self.unstacked:
            k = tuple(jnp.zeros(shape, dtype) for _ in range(cfg.num_hidden_layers))
            v = tuple(jnp.zeros(shape, dtype) for _ in range(cfg.num_hidden_layers))
        else:
            k = v = jnp.zeros((cfg.num_hidden_layers, *shape), dtype)
        return {
            "k": k,
            "v": v,
            "segment_ids": jnp.zeros((batch, max_len), jnp.int32),
            "index": jnp.zeros((), jnp.int32),
        }

    def per_layer_inputs(self) -> dict[str, jax.Array] | None:
        """Per-layer attention inputs, stacked on L, where layers differ (``cfg.layer_types``, Gemma): the
        window (``NO_WINDOW`` in full-attention layers) and the rotary inverse frequencies; None otherwise."""
        cfg = self.cfg
        if cfg.layer_types is None:
            return None
        sliding = [t == "sliding_attention" and cfg.sliding_window is not None for t in cfg.layer_types]
        windows = [cfg.sliding_window if s else NO_WINDOW for s in sliding]
        inv_freq = np.stack([rotary_inv_freq(cfg, t) for t in cfg.layer_types])
        return {"window": jnp.asarray(windows, jnp.int32), "inv_freq": jnp.asarray(inv_freq, jnp.float32)}

    def __call__(
        self,
        input_ids: jax.Array,
        positions: jax.Array | None = None,
        segment_ids: jax.Array | None = None,
        cache: dict[str, jax.Array] | None = None,
    ):
        cfg = self.cfg
        if input_ids.ndim != 2:
            raise ModelInputError(f"input_ids must be [batch, seq], got shape {tuple(input_ids.shape)}")
        b, t = input_ids.shape
        if cache is not None and t > cache["segment_ids"].shape[1]:
            max_len = cache["segment_ids"].shape[1]
            raise ModelInputError(f"{t} input tokens do not fit a KV cache of max_len {max_len}")
        for name, arr in (("positions", positions), ("segment_ids", segment_ids)):
            if arr is not None and tuple(arr.shape) != (b, t):
                raise ModelInputError(f"{name} has shape {tuple(arr.shape)}, expected input_ids' shape {(b, t)}")
        if segment_ids is None:
            segment_ids = jnp.ones((b, t), jnp.int32)
        segment_ids = segment_ids.astype(jnp.int32)
        index = cache["index"] if cache is not None else 0
        window_start = cache.get("window_start", 0) if cache is not None else 0
        if positions is None:
            positions = jnp.broadcast_to(index + jnp.arange(t, dtype=jnp.int32), (b, t))
        kv_segment_ids = segment_ids
        if cache is not None:
            kv_segment_ids = jax.lax.dynamic_update_slice(cache["segment_ids"], segment_ids, (0, index - window_start))

        if isinstance(self.embed_tokens, PackedEmbedding):  # for_cpu_decoding's tied head
            x = self.embed_tokens.rows(input_ids, cfg.dtype)
        else:
            x = embed_rows(self.embed_tokens.embedding[...], input_ids, cfg.dtype)
        if self.scale_embeddings:
            x = x * jnp.asarray(cfg.hidden_size**0.5, cfg.dtype)
        x = constrain(x, (BATCH, LENGTH, EMBED))
        kv_in = (cache["k"], cache["v"]) if cache is not None else None
        layers = self._unstacked_layers if self.unstacked else self._stacked_layers
        per_layer = self.per_layer_inputs()
        x, kv_out = layers(x, positions, segment_ids, kv_segment_ids, kv_in, index, per_layer, window_start)
        x = self.norm(x)
        # logits accumulate in float32 even with bf16 compute (the loss needs them exact); their
        # backward GEMMs run in the compute dtype (models/kernels/cpu_matmul.py)
        logits = self._logits(x)
        logits = soft_capped(logits, cfg.final_logit_softcapping)  # Gemma 2
        logits = constrain(logits, (BATCH, LENGTH, "activation_vocab"))
        if cache is None:
            return logits
        new_cache = {"k": kv_out[0], "v": kv_out[1], "segment_ids": kv_segment_ids, "index": index + t}
        if "window_start" in cache:
            new_cache["window_start"] = window_start
        return logits, new_cache

    def _logits(self, x: jax.Array) -> jax.Array:
        """float32 logits of the final hidden states, from the tied embedding or the LM head."""
        cfg = self.cfg
        tied = cfg.tie_word_embeddings  # the embedding [V, D] is the head, contracted on its own last axis
        if isinstance(self.embed_tokens if tied else self.lm_head, PackedEmbedding | PackedDense):
            return self.embed_tokens.logits(x) if tied else self.lm_head(x, jnp.float32)  # for_cpu_decoding's
        head = self.embed_tokens.embedding[...] if tied else self.lm_head.kernel[...]
        logits = cpu_matmul.matmul(
            x, head.astype(cfg.dtype), jnp.float32, cpu_layout=cfg.weight_grad == "cpu", transposed=tied
        )
        if not tied and self.lm_head.lora_a is not None:  # a LoRA adapter on the untied head (training/lora.py)
            logits = self.lm_head.add_low_rank(x, logits)
        return logits

    def _stacked_layers(self, x, positions, segment_ids, kv_segment_ids, kv_in, index, layer_inputs, window_start):
        """The layer stack on params stacked on a leading L axis: scanned or unrolled."""
        cfg = self.cfg
        graphdef, layer_state = nnx.split(self.layers)

        def layer_step(x, per_layer):
            params, kv, inputs = per_layer
            layer = nnx.merge(graphdef, params)
            return layer(x, positions, segment_ids, kv_segment_ids, kv, index, inputs, window_start)

        if cfg.remat_policy != "none":
            layer_step = jax.checkpoint(
                layer_step, policy=REMAT_POLICIES[cfg.remat_policy], prevent_cse=not cfg.scan_layers
            )
        if cfg.scan_layers:
            return jax.lax.scan(layer_step, x, (layer_state, kv_in, layer_inputs))
        outs = []  # unrolled: the same stacked params, sliced per layer
        for i in range(cfg.num_hidden_layers):
            x, kv = layer_step(x, jax.tree.map(lambda a, i=i: a[i], (layer_state, kv_in, layer_inputs)))
            outs.append(kv)
        return x, None if kv_in is None else jax.tree.map(lambda *a: jnp.stack(a), *outs)

    def _unstacked_layers(self, x, positions, segment_ids, kv_segment_ids, kv_in, index, layer_inputs, window_start):
        """The layer stack of :func:`cpu_decoding.for_cpu_decoding`: each layer's weights and KV cache are arrays of
        their own, so its dots read them where they are and its cache write happens in place."""
        kvs = []
        for i, layer in enumerate(self.layers):
            kv = None if kv_in is None else (kv_in[0][i], kv_in[1][i])
            inputs = None if layer_inputs is None else jax.tree.map(lambda a, i=i: a[i], layer_inputs)
            x, kv = layer(x, positions, segment_ids, kv_segment_ids, kv, index, inputs, window_start)
            kvs.append(kv)
        return x, None if kv_in is None else tuple(zip(*kvs, strict=True))  # (keys per layer, values per layer)
