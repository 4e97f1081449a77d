"""KV-cache generation == transformers `generate` (greedy, Llama and Glm, mixed prompt lengths)."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch
from flax import nnx

from rolellm_jax.inference.generate import GenerationError, SamplingConfig, generate
from rolellm_jax.parallel import sharding
from tests.models.test_models import hf_glm, hf_llama, ported

NEW = 12


@pytest.fixture(scope="module", params=["llama", "glm"])
def pair(request):
    hf = hf_llama(kv_heads=2) if request.param == "llama" else hf_glm(0.5)
    return hf, ported(hf)


def prompts(lengths=(5, 11, 3, 8), seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(2, 128, size=n).tolist() for n in lengths]


def hf_greedy(hf, batch: list[list[int]], eos: int | None = None, **options) -> list[list[int]]:
    """transformers greedy generate on a left-padded batch, cut at EOS (excluded)."""
    width = max(map(len, batch))
    ids = torch.zeros((len(batch), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for r, p in enumerate(batch):
        ids[r, width - len(p) :] = torch.tensor(p)
        mask[r, width - len(p) :] = 1
    with torch.no_grad():
        out = hf.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=NEW,
            do_sample=False,
            pad_token_id=0,
            eos_token_id=eos,
            **options,
        )
    rows = out[:, width:].tolist()
    return [row[: row.index(eos)] if eos is not None and eos in row else row for row in rows]


def test_greedy_equals_transformers_mixed_lengths(pair) -> None:
    hf, model = pair
    batch = prompts()
    want = hf_greedy(hf, batch)
    assert generate(model, batch, SamplingConfig(max_new_tokens=NEW), batch_size=4) == want
    # Grouping by length into smaller batches (last one padded with copies) changes nothing.
    assert generate(model, batch, SamplingConfig(max_new_tokens=NEW), batch_size=3) == want


@pytest.mark.parametrize("penalty", [1.8, 0.6])
def test_repetition_penalty_equals_transformers(pair, penalty) -> None:
    hf, model = pair
    batch = prompts(lengths=(5, 11, 3, 8, 2))
    want = []
    for p in batch:  # one at a time: transformers counts a batch's left padding as seen tokens, we do not
        with torch.no_grad():
            out = hf.generate(
                input_ids=torch.tensor([p]),
                attention_mask=torch.ones((1, len(p)), dtype=torch.long),
                max_new_tokens=NEW,
                do_sample=False,
                repetition_penalty=penalty,
                pad_token_id=0,
                eos_token_id=None,
            )
        want.append(out[0, len(p) :].tolist())
    got = generate(model, batch, SamplingConfig(max_new_tokens=NEW, repetition_penalty=penalty), batch_size=4)
    assert got == want
    assert got != generate(model, batch, SamplingConfig(max_new_tokens=NEW), batch_size=4)  # the penalty acted


def test_rows_stop_at_their_own_eos(pair) -> None:
    hf, model = pair
    batch = prompts()
    free = hf_greedy(hf, batch)
    eos = free[0][4]  # a token row 0 emits mid-way: row 0 stops early, others may not
    want = hf_greedy(hf, batch, eos=eos)
    got = generate(model, batch, SamplingConfig(max_new_tokens=NEW, eos_token_ids=(eos,)), batch_size=4)
    assert got == want and len(got[0]) < NEW


def test_min_new_tokens_equals_transformers(pair) -> None:
    hf, model = pair
    batch = prompts()
    eos = hf_greedy(hf, batch)[0][2]  # row 0 would stop after 2 tokens
    want = hf_greedy(hf, batch, eos=eos, min_new_tokens=7)
    got = generate(
        model, batch, SamplingConfig(max_new_tokens=NEW, eos_token_ids=(eos,), min_new_tokens=7), batch_size=4
    )
    assert got == want and len(got[0]) >= 7  # EOS held back: row 0 went on past its 3rd token
    assert got != generate(model, batch, SamplingConfig(max_new_tokens=NEW, eos_token_ids=(eos,)), batch_size=4)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_no_repeat_ngram_size_equals_transformers(pair, n) -> None:
    hf, model = pair
    batch = prompts(lengths=(5, 11, 3, 8, 1), seed=2)
    want = [hf_greedy(hf, [p], no_repeat_ngram_size=n)[0] for p in batch]  # one at a time: see the penalty's test
    got = generate(model, batch, SamplingConfig(max_new_tokens=NEW, no_repeat_ngram_size=n), batch_size=4)
    assert got == want
    assert got != generate(model, batch, SamplingConfig(max_new_tokens=NEW), batch_size=4)  # a ban acted
    for row, prompt in zip(got, batch):  # every n-gram a new token completes is new (the prompt may repeat itself)
        seq = prompt + row
        grams = [tuple(seq[i : i + n]) for i in range(len(seq) - n + 1)]
        assert all(grams[i] not in grams[:i] for i in range(max(len(prompt) - n + 1, 0), len(grams)))


def test_greedy_on_8_device_mesh_equals_single_device(pair) -> None:
    hf, _ = pair
    model = ported(hf)
    batch = prompts()
    want = generate(model, batch, SamplingConfig(max_new_tokens=NEW), batch_size=4)
    mesh = sharding.make_mesh(sharding.MeshConfig(data=2, fsdp=2, tensor=2))
    with jax.set_mesh(mesh):
        nnx.update(model, sharding.shard_params(nnx.state(model), mesh))
    assert generate(model, batch, SamplingConfig(max_new_tokens=NEW), batch_size=4, mesh=mesh) == want


def test_sampling_is_reproducible_from_seed(pair) -> None:
    _, model = pair
    batch = prompts()
    hot = SamplingConfig(max_new_tokens=NEW, temperature=1.5, top_k=50, top_p=0.95, seed=7)
    first = generate(model, batch, hot, batch_size=4)
    assert generate(model, batch, hot, batch_size=4) == first
    other = generate(
        model, batch, SamplingConfig(max_new_tokens=NEW, temperature=1.5, top_k=50, top_p=0.95, seed=8), batch_size=4
    )
    assert other != first
    greedy = generate(model, batch, SamplingConfig(max_new_tokens=NEW), batch_size=4)
    assert first != greedy
    # top_k=1 and a tiny nucleus both leave only the argmax token.
    assert (
        generate(model, batch, SamplingConfig(max_new_tokens=NEW, temperature=1.0, top_k=1, seed=3), batch_size=4)
        == greedy
    )
    assert (
        generate(model, batch, SamplingConfig(max_new_tokens=NEW, temperature=1.0, top_p=1e-6, seed=3), batch_size=4)
        == greedy
    )


def test_bad_settings_name_the_setting(pair) -> None:
    _, model = pair
    with pytest.raises(GenerationError, match="top_p"):
        generate(model, prompts(), SamplingConfig(temperature=1.0, top_p=0.0))
    with pytest.raises(GenerationError, match="repetition_penalty"):
        generate(model, prompts(), SamplingConfig(repetition_penalty=0.0))
    with pytest.raises(GenerationError, match="min_new_tokens=9: must be in \\[0, max_new_tokens=8\\]"):
        generate(model, prompts(), SamplingConfig(max_new_tokens=8, min_new_tokens=9))
    with pytest.raises(GenerationError, match="no_repeat_ngram_size=-1"):
        generate(model, prompts(), SamplingConfig(no_repeat_ngram_size=-1))
    with pytest.raises(GenerationError, match="prompt 1 is empty"):
        generate(model, [[3, 4], []], SamplingConfig(max_new_tokens=2))
