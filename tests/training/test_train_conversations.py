"""A short RoCIT run on multi-turn rows only (data.conversations, data.kinds=[]): it trains, and every
step's loss counts exactly the assistant tokens of the conversations (each answer and its EOS), and the
export's chat_template renders those rows as training did."""

from __future__ import annotations

import json

import jax

from rolellm_jax.checkpoints.tokenizer import load_tokenizer
from rolellm_jax.data.chat_format import render_conversation
from rolellm_jax.training.run import run
from rolellm_jax.training.run_config import parse_args
from tests.data.test_conversations import conversation, write_jsonl
from tests.training.test_train import tiny_args, tokenizer_dir  # noqa: F401 - the session tokenizer fixture

ROWS = 8


def test_run_on_conversations_counts_exactly_the_assistant_tokens(tokenizer_dir, tmp_path):  # noqa: F811
    rows = [conversation(i) for i in range(ROWS)]
    data = write_jsonl(tmp_path / "conversations.jsonl", rows)
    tok = load_tokenizer(tokenizer_dir)
    answers = [m["content"] for r in rows for m in r["messages"] if m["role"] == "assistant"]
    expected = sum(len(tok(a, add_special_tokens=False)["input_ids"]) + 1 for a in answers)  # answer + EOS
    # seq_len fits the longest and is under twice the shortest: one conversation per packed row, so a
    # batch of 8 rows is all of them, none cut
    lengths = [len(render_conversation(tok, "llama", r["messages"])[0]) for r in rows]
    assert max(lengths) < 2 * min(lengths)
    cfg, _ = parse_args(
        tiny_args(
            tokenizer_dir,
            tmp_path / "run",
            f"--data.conversations={data}",
            "--data.kinds=[]",
            f"--data.seq_len={max(lengths)}",
            "--train.steps=3",
            "--checkpoint.every=100",
            "--mesh.fsdp=1",
        )
    )
    result = run(cfg, devices=jax.devices()[:1])
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 3 and result.last_loss < result.first_loss
    assert [m["loss_tokens"] for m in metrics] == [expected] * 3
    # the export's chat_template (the default format's) renders the rows as training did, in transformers
    exported = load_tokenizer(tmp_path / "run" / "export")
    for r in rows[:2]:
        ids = exported.apply_chat_template(r["messages"], tokenize=True, return_dict=False)
        assert list(ids) == render_conversation(tok, "llama", r["messages"])[0]
