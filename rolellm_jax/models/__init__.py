"""Flax NNX decoders for the LLaMA, GLM, GLM-4-0414, Qwen2, Qwen3, Mistral, Gemma 2 and Gemma 3 (text) families:
``build_model(cfg, rngs=...)``.

Build::

    from flax import nnx
    from rolellm_jax.models import build_model
    from rolellm_jax.models.config import ModelConfig
    model = build_model(cfg, rngs=nnx.Rngs(0))      # or nnx.eval_shape(lambda: build_model(...))

Parameters: ``nnx.to_pure_dict(nnx.state(model, nnx.Param))`` is the tree of checkpoints/tensor_layout.py (HF names
without ``model.``, kernels [in, out], every layer param stacked on a leading L axis); each
``nnx.Param`` carries its logical axis names in ``out_sharding`` metadata (sharding.shard_params
reads them). Params are ``cfg.param_dtype``; compute runs in ``cfg.dtype``.

Forward (training / scoring)::

    logits = model(input_ids, positions=None, segment_ids=None)

- ``input_ids`` int32 [B, T].
- ``positions`` int32 [B, T], the rotary position of every token; default ``arange(T)`` per row.
  For packed rows restart at 0 in each segment; for left-padded rows use ``cumsum(mask) - 1``
  clipped at 0.
- ``segment_ids`` int32 [B, T]; token i attends to token j <= i only when both carry the same
  non-zero id; 0 marks padding (a pad token attends only to itself, so nothing is NaN; ignore its
  logits). Default: all ones (plain causal attention).
- returns float32 logits [B, T, V].

Generation with a KV cache (static shapes; all rows advance in lockstep)::

    cache = model.init_cache(batch, max_len)          # dtype defaults to cfg.dtype
    logits, cache = model(prompt_ids, positions=pos, segment_ids=seg, cache=cache)   # prefill
    logits, cache = model(next_ids[:, None], positions=pos_next[:, None],
                          segment_ids=jnp.ones((B, 1), jnp.int32), cache=cache)     # each step

- ``cache`` is a plain dict pytree: ``k``, ``v`` [L, B, max_len, KV, hd], ``segment_ids``
  [B, max_len] (0 = empty or padding) and ``index`` (int32 scalar: the next slot to write).
  A call with T tokens writes them at slots ``index .. index+T-1`` (they may attend to every earlier
  slot with the same segment id, and causally among themselves) and returns ``index + T``.
  The caller keeps ``index + T <= max_len``; nothing checks it under jit.
- A window of the cache (the serving engine's decode step): with ``window_start`` (int32 scalar) in
  the dict and ``segment_ids`` [B', S'] narrower than ``k`` / ``v`` (B' <= B rows, S' <= max_len
  slots), a call of B' rows writes its keys at the absolute ``index`` of rows ``[0, B')`` and attends
  only over slots ``[window_start, window_start + S')``; it returns the whole ``k`` / ``v`` (written
  in place when donated) and the window's ``segment_ids``.
- Left-padded prompts: pad on the left with segment id 0 and positions ``cumsum(mask) - 1``
  (clipped at 0); real tokens use segment id 1. Each decode step then passes
  ``positions = last position + 1`` per row and segment id 1. Logits at padded slots are junk.
- ``positions`` defaults to ``index + arange(T)`` (right for unpadded batches only);
  ``segment_ids`` defaults to ones.
- Logits from prefill + decode equal the full forward logits of the same tokens (tested).
- Attention kernel: ``cfg.attention_impl`` "xla" (anywhere), "cudnn" (GPU, bf16/fp16 compute) or
  "splash" (TPU Pallas kernel, sequence lengths multiple of 128; cache steps fall back to "xla").
- Shapes that do not fit raise ``ModelInputError`` (one line) at trace time.
- Wrap the call in ``nnx.jit`` (or split/merge + ``jax.jit``); the cache can be donated.
"""

from __future__ import annotations

from flax import nnx

from rolellm_jax.models.config import ModelConfig
from rolellm_jax.models.gemma2 import Gemma2ForCausalLM
from rolellm_jax.models.gemma3 import Gemma3ForCausalLM
from rolellm_jax.models.glm import GlmForCausalLM
from rolellm_jax.models.glm4 import Glm4ForCausalLM
from rolellm_jax.models.layers import CausalLM, ModelInputError
from rolellm_jax.models.llama import LlamaForCausalLM
from rolellm_jax.models.mistral import MistralForCausalLM
from rolellm_jax.models.qwen2 import Qwen2ForCausalLM
from rolellm_jax.models.qwen3 import Qwen3ForCausalLM

FAMILY_MODELS: dict[str, type[CausalLM]] = {
    "llama": LlamaForCausalLM,
    "glm": GlmForCausalLM,
    "glm4": Glm4ForCausalLM,
    "qwen2": Qwen2ForCausalLM,
    "qwen3": Qwen3ForCausalLM,
    "mistral": MistralForCausalLM,
    "gemma2": Gemma2ForCausalLM,
    "gemma3": Gemma3ForCausalLM,
}


def build_model(cfg: ModelConfig, *, rngs: nnx.Rngs) -> CausalLM:
    """A randomly initialised model of ``cfg.family`` (load weights with nnx.update afterwards)."""
    return FAMILY_MODELS[cfg.family](cfg, rngs=rngs)


__all__ = [
    "build_model",
    "CausalLM",
    "ModelInputError",
    "LlamaForCausalLM",
    "GlmForCausalLM",
    "Glm4ForCausalLM",
    "Qwen2ForCausalLM",
    "Qwen3ForCausalLM",
    "MistralForCausalLM",
    "Gemma2ForCausalLM",
    "Gemma3ForCausalLM",
    "FAMILY_MODELS",
    "ModelConfig",
]
