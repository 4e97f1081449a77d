"""Batched KV-cache decoding: one jit-compiled prefill + ``lax.while_loop`` decode, static shapes.

Prompts (token ids, e.g. from ``chat.render_prompts``, the same rendering as training) are
left-padded to a common length rounded up to ``length_multiple`` (fewer recompilations), with
segment id 0 on padding and positions ``cumsum(mask) - 1`` (the models' cache contract). The
cache holds ``prompt_len + max_new_tokens`` slots. Every step samples one token per row:

- greedy (``temperature == 0``), or temperature with optional top-k and top-p (nucleus),
  ``sampling.sample_tokens`` (shared with the serving engine), after transformers'
  ``repetition_penalty`` over the row's prompt and generated tokens (1 = off; a row's left padding
  does not count as seen, so a row gets what transformers gives its prompt alone);
- randomness from ``seed`` only: step s uses ``fold_in(PRNGKey(seed), s)``, so a run is
  reproducible for the same prompts, batch size and settings;
- a row stops at an EOS id (returned without it) or after ``max_new_tokens``; the loop ends when
  every row has stopped. ``min_new_tokens`` (transformers' meaning) keeps the EOS ids' logits at
  -inf until a row has that many new tokens; ``no_repeat_ngram_size`` bans every token that would
  repeat an n-gram of the row's prompt and new tokens (transformers' too).

Pass ``mesh`` to run under ``jax.set_mesh`` (params already placed with ``sharding.shard_params``):
activations follow the models' logical-axis constraints, batch over (data, fsdp).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rolellm_jax.errors import UserError
from rolellm_jax.inference.sampling import (
    ban_repeated_ngrams,
    hold_eos,
    mark_seen,
    penalize_repeats,
    sample_tokens,
    seen_tokens,
)
from rolellm_jax.models.cpu_decoding import for_cpu_decoding
from rolellm_jax.models.layers import CausalLM


class GenerationError(UserError, ValueError):
    """Bad generation settings or prompts; the message names the setting."""


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    """How tokens are chosen. ``temperature == 0`` is greedy; ``top_k == 0`` / ``top_p == 1`` /
    ``repetition_penalty == 1`` / ``min_new_tokens == 0`` / ``no_repeat_ngram_size == 0`` are off
    (transformers' meanings)."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0
    eos_token_ids: tuple[int, ...] = ()
    pad_token_id: int = 0
    repetition_penalty: float = 1.0
    min_new_tokens: int = 0
    no_repeat_ngram_size: int = 0

    def check(self, vocab_size: int) -> None:
        if self.max_new_tokens < 1:
            raise GenerationError(f"max_new_tokens={self.max_new_tokens}: must be >= 1")
        if self.temperature < 0:
            raise GenerationError(f"temperature={self.temperature}: must be >= 0 (0 = greedy)")
        if not 0 <= self.top_k <= vocab_size:
            raise GenerationError(f"top_k={self.top_k}: must be in [0, vocab_size={vocab_size}] (0 = off)")
        if not 0 < self.top_p <= 1:
            raise GenerationError(f"top_p={self.top_p}: must be in (0, 1] (1 = off)")
        if not self.repetition_penalty > 0:
            raise GenerationError(f"repetition_penalty={self.repetition_penalty}: must be > 0 (1 = off)")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise GenerationError(
                f"min_new_tokens={self.min_new_tokens}: must be in [0, max_new_tokens={self.max_new_tokens}] (0 = off)"
            )
        if self.no_repeat_ngram_size < 0:
            raise GenerationError(f"no_repeat_ngram_size={self.no_repeat_ngram_size}: must be >= 0 (0 = off)")


@functools.partial(jax.jit, static_argnames=("graphdef", "max_new_tokens", "greedy", "no_repeat_ngram_size"))
def _generate_padded(
    graphdef,
    state,
    input_ids,
    prompt_mask,
    key,
    temperature,
    top_k,
    top_p,
    repetition_penalty,
    min_new_tokens,
    eos,
    pad_id,
    *,
    max_new_tokens: int,
    greedy: bool,
    no_repeat_ngram_size: int = 0,
):
    """New tokens [B, max_new_tokens] (pad after a row stops) and the number of steps run."""
    model = nnx.merge(graphdef, state)
    batch, prompt_len = input_ids.shape
    positions = jnp.clip(jnp.cumsum(prompt_mask, axis=1) - 1, 0).astype(jnp.int32)
    cache = model.init_cache(batch, prompt_len + max_new_tokens)
    logits, cache = model(input_ids, positions=positions, segment_ids=prompt_mask, cache=cache)

    is_eos = jnp.isin(jnp.arange(logits.shape[-1]), eos)
    prompt_history = jnp.where(prompt_mask > 0, input_ids, -1)  # padding is never part of an n-gram

    def sample(logits, seen, out, step):
        logits = penalize_repeats(logits.astype(jnp.float32), seen, repetition_penalty)
        logits = hold_eos(logits, is_eos, step, min_new_tokens)
        history = jnp.concatenate([prompt_history, out], axis=1)
        logits = ban_repeated_ngrams(logits, history, prompt_len + step, no_repeat_ngram_size)
        token = sample_tokens(logits, jax.random.fold_in(key, step), temperature, top_k, top_p, greedy=greedy)
        return token, mark_seen(seen, token)

    seen = seen_tokens(input_ids, prompt_mask, logits.shape[-1])
    out = jnp.full((batch, max_new_tokens), pad_id, jnp.int32)
    first, seen = sample(logits[:, -1], seen, out, 0)
    out = out.at[:, 0].set(first)
    done = jnp.isin(first, eos)
    ones = jnp.ones((batch, 1), jnp.int32)

    def keep_going(carry):
        step, _, _, _, done, _, _ = carry
        return (step < max_new_tokens) & ~jnp.all(done)

    def decode_step(carry):
        step, cache, last, position, done, out, seen = carry
        logits, cache = model(last[:, None], positions=position[:, None], segment_ids=ones, cache=cache)
        token, seen = sample(logits[:, 0], seen, out, step)
        token = jnp.where(done, pad_id, token)
        out = jax.lax.dynamic_update_slice(out, token[:, None], (0, step))
        return step + 1, cache, token, position + 1, done | jnp.isin(token, eos), out, seen

    carry = (jnp.int32(1), cache, first, positions[:, -1] + 1, done, out, seen)
    steps, *_, out, _ = jax.lax.while_loop(keep_going, decode_step, carry)
    return out, steps


def decoding_layout(model: nnx.Module) -> nnx.Module:
    """The model as decoding runs it: on a CPU, ``for_cpu_decoding``'s per-layer weights (XLA:CPU
    copies stacked weights before each dot); elsewhere the model itself (the scanned stack)."""
    leaf = jax.tree.leaves(nnx.state(model, nnx.Param))[0]
    on_cpu = all(d.platform == "cpu" for d in leaf.devices())
    return for_cpu_decoding(model) if on_cpu and isinstance(model, CausalLM) else model


def _batches(order: Sequence[int], batch_size: int) -> Iterator[list[int]]:
    for start in range(0, len(order), batch_size):
        yield list(order[start : start + batch_size])


def generate(
    model: nnx.Module,
    prompts: Sequence[Sequence[int]],
    sampling: SamplingConfig = SamplingConfig(),
    *,
    batch_size: int = 8,
    length_multiple: int = 16,
    mesh: jax.sharding.Mesh | None = None,
    on_batch: Callable[[int, int], None] | None = None,
) -> list[list[int]]:
    """New token ids per prompt (EOS and padding removed), in the order of ``prompts``.

    Prompts are grouped by length (less padding); each group runs as one jitted call of at most
    ``batch_size`` rows (a short last group is padded with copies to keep shapes static).
    ``on_batch(rows, new_tokens)`` is called after each group (progress bars): its prompts and
    the tokens generated for them.
    """
    cfg = model.cfg
    sampling.check(cfg.vocab_size)
    if not prompts:
        return []
    for i, p in enumerate(prompts):
        if len(p) == 0:
            raise GenerationError(f"prompt {i} is empty: a prompt needs at least one token")
    graphdef, state = nnx.split(decoding_layout(model))
    key = jax.random.PRNGKey(sampling.seed)
    # EOS ids as a fixed-size array (padded with -1) so changing them does not recompile
    eos_list = list(sampling.eos_token_ids)
    eos = jnp.asarray(eos_list + [-1] * (-(-max(len(eos_list), 1) // 4) * 4 - len(eos_list)), jnp.int32)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    results: list[list[int]] = [[] for _ in prompts]
    context = jax.set_mesh(mesh) if mesh is not None else contextlib.nullcontext()
    with context:
        for group in _batches(order, batch_size):
            rows = [prompts[i] for i in group] + [prompts[group[-1]]] * (batch_size - len(group))
            longest = max(len(r) for r in rows)
            width = -(-longest // length_multiple) * length_multiple
            ids = np.full((batch_size, width), sampling.pad_token_id, np.int32)
            mask = np.zeros((batch_size, width), np.int32)
            for r, prompt in enumerate(rows):
                ids[r, width - len(prompt) :] = prompt
                mask[r, width - len(prompt) :] = 1
            out, _ = _generate_padded(
                graphdef,
                state,
                jnp.asarray(ids),
                jnp.asarray(mask),
                key,
                jnp.float32(sampling.temperature or 1.0),
                jnp.int32(sampling.top_k),
                jnp.float32(sampling.top_p),
                jnp.float32(sampling.repetition_penalty),
                jnp.int32(sampling.min_new_tokens),
                eos,
                jnp.int32(sampling.pad_token_id),
                max_new_tokens=sampling.max_new_tokens,
                greedy=sampling.temperature == 0,
                no_repeat_ngram_size=sampling.no_repeat_ngram_size,
            )
            out = np.asarray(out)
            for r, index in enumerate(group):
                results[index] = _until_eos(out[r].tolist(), sampling.eos_token_ids)
            if on_batch is not None:
                on_batch(len(group), sum(len(results[i]) for i in group))
    return results


def _until_eos(tokens: list[int], eos_ids: Sequence[int]) -> list[int]:
    for i, t in enumerate(tokens):
        if t in eos_ids:
            return tokens[:i]
    return tokens
