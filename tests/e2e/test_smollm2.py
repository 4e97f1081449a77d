"""A real pretrained model end to end: SmolLM2-135M-Instruct (tests/helpers/smollm2.py) against transformers.

Its weights, its tokenizer and its ChatML chat_template go through our loading, chat rendering,
generation, conversion both ways and a LoRA step, each compared with what transformers does on
the same folder. The folder is built once per session (``smollm2_dir`` in tests/conftest.py).
"""

from __future__ import annotations

import os
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from transformers import AutoModelForCausalLM, AutoTokenizer

from rolellm_jax import load_model
from rolellm_jax.checkpoints.hf_write import write_hf_checkpoint
from rolellm_jax.checkpoints.safetensors_io import SafetensorsFolder
from rolellm_jax.convert import main as convert
from rolellm_jax.data.chat_format import render_examples, render_prompts, role_system_text
from rolellm_jax.inference.generate import SamplingConfig, generate
from rolellm_jax.parallel.sharding import MeshConfig, make_mesh
from rolellm_jax.training.config import LoraConfig, TrainConfig
from rolellm_jax.training.train_step import TrainProgram
from tests.helpers.subprocesses import start_python

LOGITS_TOL = 2e-4  # absolute, on logits of magnitude ~30
NEW_TOKENS = 64
CHATS = [  # (system, question): role-play prompts of both RoleBench languages
    (
        role_system_text("en", "Sherlock Holmes", "The famous detective of Baker Street, cold and observant"),
        "What can you tell about me from my boots?",
    ),
    (
        role_system_text("en", "Captain Vale", "A gruff sky-ship captain. Catchphrase: 'Hold the wind!'"),
        "Captain, a storm is coming. What do we do?",
    ),
    (role_system_text("zh", "孙悟空", "齐天大圣，性格顽皮，武艺高强"), "你最喜欢吃什么？"),
    ("You are a helpful assistant.", "Name three colours."),
]
ANSWERS = ["Elementary: you walked here through clay.", "Hold the wind! Reef the sails!", "俺老孙最爱吃桃子！", "Red."]


@pytest.fixture(scope="module")
def tokenizer(smollm2_dir):
    return AutoTokenizer.from_pretrained(smollm2_dir)


@pytest.fixture(scope="module")
def hf_model(smollm2_dir):
    return AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def ours(smollm2_dir):
    model, cfg = load_model(smollm2_dir, dtype="float32", param_dtype="float32")
    assert cfg.family == "llama" and cfg.tie_word_embeddings and cfg.num_hidden_layers == 30
    return model


@pytest.fixture(scope="module")
def prompts(tokenizer) -> list[list[int]]:
    return render_prompts(tokenizer, "llama", [s for s, _ in CHATS], [q for _, q in CHATS])


def messages(system: str, question: str) -> list[dict]:
    return [{"role": "system", "content": system}, {"role": "user", "content": question}]


def left_padded(rows: list[list[int]], pad: int):
    width = max(map(len, rows))
    ids = np.full((len(rows), width), pad, np.int32)
    mask = np.zeros((len(rows), width), np.int32)
    for r, row in enumerate(rows):
        ids[r, width - len(row) :], mask[r, width - len(row) :] = row, 1
    positions = np.clip(np.cumsum(mask, axis=1) - 1, 0, None).astype(np.int32)
    return ids, mask, positions


def test_prompt_ids_equal_apply_chat_template(tokenizer, prompts):
    for (system, question), ids in zip(CHATS, prompts):
        expected = tokenizer.apply_chat_template(
            messages(system, question), add_generation_prompt=True, tokenize=True, return_dict=False
        )
        assert ids == list(expected)


def test_loss_mask_covers_exactly_the_answer_and_im_end(tokenizer):
    examples = render_examples(tokenizer, "llama", [s for s, _ in CHATS], [q for _, q in CHATS], ANSWERS)
    for (system, question), answer, (ids, mask) in zip(CHATS, ANSWERS, examples):
        full = tokenizer.apply_chat_template(
            messages(system, question) + [{"role": "assistant", "content": answer}], tokenize=True, return_dict=False
        )
        # transformers' rendering ends the turn with "<|im_end|>\n"; the separator after it is not learned
        assert ids == list(full)[:-1] and tokenizer.decode(full[-1:]) == "\n"
        n_prompt = mask.index(1)
        assert mask == [0] * n_prompt + [1] * (len(ids) - n_prompt)
        assert tokenizer.decode(ids[n_prompt:]) == answer + "<|im_end|>"
        assert ids[-1] == tokenizer.eos_token_id and ids.count(tokenizer.eos_token_id) == 3  # system, user, answer


# Our forward in a child process whose XLA:CPU runs its dots on Eigen instead of YNNPACK: on an AVX2-only
# CPU (AMD EPYC Zen 3, 2026-12-03) YNNPACK's float32 GEMM rounds 2-3x more than Eigen's or torch's (rms error
# against float64 0.70e-6 vs 0.23-0.26e-6, times sqrt(K), at K = 1,536) and alone took our logits 2.6e-4 from
# transformers'; with Eigen's dots they sit 1.1e-4 away, as far as transformers' float32 sits from float64.
EIGEN_DOTS = "--xla_cpu_experimental_ynn_fusion_type="
OUR_LOGITS = """
import sys, numpy as np
from flax import nnx
from rolellm_jax import load_model
folder, path = sys.argv[1:]
arrays = dict(np.load(path))
model, _ = load_model(folder, dtype="float32", param_dtype="float32")
forward = nnx.jit(lambda m, i, p, s: m(i, positions=p, segment_ids=s))
np.save(path + ".logits.npy", np.asarray(forward(model, arrays["ids"], arrays["positions"], arrays["mask"])))
"""


def hf_logits(model, ids, mask, positions) -> np.ndarray:
    with torch.no_grad():
        return (
            model(
                input_ids=torch.tensor(ids, dtype=torch.long),
                attention_mask=torch.tensor(mask),
                position_ids=torch.tensor(positions, dtype=torch.long),
            )
            .logits.double()
            .numpy()
        )


def test_logits_equal_transformers(smollm2_dir, hf_model, prompts, tokenizer, tmp_path):
    ids, mask, positions = left_padded(prompts, tokenizer.pad_token_id)
    want = hf_logits(hf_model, ids, mask, positions)
    np.savez(tmp_path / "batch.npz", ids=ids, mask=mask, positions=positions)
    env = {**os.environ, "XLA_FLAGS": EIGEN_DOTS, "JAX_PLATFORMS": "cpu", "HF_HUB_OFFLINE": "1"}
    child = start_python(OUR_LOGITS, str(smollm2_dir), str(tmp_path / "batch.npz"), env=env, stderr=subprocess.PIPE)
    try:
        _, err = child.communicate(timeout=600)
    finally:
        child.kill()  # a no-op once it has exited
    assert child.returncode == 0, err[-2000:]
    got = np.load(tmp_path / "batch.npz.logits.npy")
    real = mask.astype(bool)
    assert np.abs(want[real]).max() > 10  # real logits, not a degenerate model
    diff = float(np.abs(got - want)[real].max())
    assert diff <= LOGITS_TOL, f"max |ours - transformers| = {diff:.2e}"


def test_logits_on_the_default_dots_are_as_close_to_float64_as_float32_allows(hf_model, ours, prompts, tokenizer):
    """What users run (YNNPACK's dots where XLA:CPU picks them) against transformers' float64 logits of the same
    weights: measured 2.0e-4 away on the Zen 3 CPU above (transformers' float32: 1.1e-4)."""
    ids, mask, positions = left_padded(prompts, tokenizer.pad_token_id)
    try:
        truth = hf_logits(hf_model.to(torch.float64), ids, mask, positions)
    finally:
        hf_model.to(torch.float32)  # the module's fixture, shared with the other tests
    got = np.asarray(nnx.jit(lambda m, i, p, s: m(i, positions=p, segment_ids=s))(ours, ids, positions, mask))
    diff = float(np.abs(got - truth)[mask.astype(bool)].max())
    assert diff <= 3e-4, f"max |ours - transformers float64| = {diff:.2e}"


def test_greedy_generations_equal_transformers_generate(hf_model, ours, prompts, tokenizer):
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    got = generate(ours, prompts, SamplingConfig(max_new_tokens=NEW_TOKENS, eos_token_ids=(eos,)), batch_size=4)
    ids, mask, _ = left_padded(prompts, pad)
    with torch.no_grad():
        out = hf_model.generate(
            input_ids=torch.tensor(ids, dtype=torch.long),
            attention_mask=torch.tensor(mask),
            max_new_tokens=NEW_TOKENS,
            do_sample=False,
            eos_token_id=eos,
            pad_token_id=pad,
        )[:, ids.shape[1] :].tolist()
    for row, want in zip(got, out):
        want = want[: want.index(eos)] if eos in want else want
        assert row == want, f"ours {tokenizer.decode(row)!r} != transformers {tokenizer.decode(want)!r}"
    assert sum(len(r) for r in got) > 40  # the model said something


def bits(array: np.ndarray) -> np.ndarray:
    return array.view(np.dtype(f"u{array.dtype.itemsize}"))


def test_hf_to_jax_to_hf_is_bit_exact(smollm2_dir, tmp_path):
    assert convert(["hf-to-jax", "--hf", str(smollm2_dir), "--out", str(tmp_path / "ckpt")]) == 0
    assert convert(["jax-to-hf", "--ckpt", str(tmp_path / "ckpt"), "--out", str(tmp_path / "back")]) == 0
    before, after = SafetensorsFolder(smollm2_dir), SafetensorsFolder(tmp_path / "back")
    assert before.names() == after.names()
    for name in before.names():
        a, b = before.read(name), after.read(name)
        assert a.dtype == b.dtype and a.shape == b.shape, name
        np.testing.assert_array_equal(bits(a), bits(b), err_msg=name)
    assert (
        AutoTokenizer.from_pretrained(tmp_path / "back").chat_template
        == AutoTokenizer.from_pretrained(smollm2_dir).chat_template
    )


def test_lora_step_trains_and_the_merged_export_loads_in_transformers(smollm2_dir, tokenizer, tmp_path):
    """One LoRA step on the real weights (one device), then the merged export in transformers gives the
    adapted model's logits."""
    model, cfg = load_model(smollm2_dir, dtype="float32", param_dtype="float32")
    seq = 48
    rows = render_examples(tokenizer, "llama", [s for s, _ in CHATS[:2]], [q for _, q in CHATS[:2]], ANSWERS[:2])
    batch = {k: np.zeros((2, seq), np.int32) for k in ("input_ids", "targets", "loss_mask", "positions", "segment_ids")}
    for r, (ids, mask) in enumerate(rows):
        ids, mask = ids[-(seq + 1) :], mask[-(seq + 1) :]  # keep the answer end of long prompts
        n = len(ids) - 1
        batch["input_ids"][r, :n], batch["targets"][r, :n], batch["loss_mask"][r, :n] = ids[:-1], ids[1:], mask[1:]
        batch["positions"][r, :n], batch["segment_ids"][r, :n] = np.arange(n), 1
    mesh = make_mesh(MeshConfig(data=1, fsdp=1, tensor=1), devices=jax.devices()[:1])
    lora = LoraConfig(enabled=True, rank=4, alpha=8.0, targets=["q_proj", "k_proj", "v_proj", "o_proj"])
    program = TrainProgram.create(cfg, mesh, TrainConfig(global_batch_size=2, lr=1e-2, warmup_steps=0), lora, seq)
    base = program.place_params(nnx.to_pure_dict(nnx.state(model, nnx.Param)))
    state, frozen = program.init_state(base, 0)
    batch = {k: jax.device_put(jnp.asarray(v), program.batch_sharding) for k, v in batch.items()}
    state, metrics = program.jitted_step()(state, frozen, batch)
    assert np.isfinite(float(metrics["loss"])) and 0 < float(metrics["loss"]) < 20
    lora_b = np.asarray(state["trainable"]["layers"]["self_attn"]["q_proj"]["lora_b"])
    assert np.abs(lora_b).max() > 0  # the adapters moved

    merged = jax.device_get(program.full_params(state, frozen))
    write_hf_checkpoint(merged, program.model_cfg, tmp_path / "export", tokenizer_dir=smollm2_dir)
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "export", dtype=torch.float32).eval()
    with jax.set_mesh(mesh):
        adapted = np.asarray(jax.jit(program.logits)(state["trainable"], frozen, batch))
    ids, seg = np.asarray(batch["input_ids"]), np.asarray(batch["segment_ids"])
    with torch.no_grad():
        want = exported(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(seg)).logits.numpy()
    real = seg.astype(bool)
    diff = float(np.abs(adapted - want)[real].max())
    assert diff <= LOGITS_TOL, f"merged export vs adapted model: max |diff| = {diff:.2e}"
