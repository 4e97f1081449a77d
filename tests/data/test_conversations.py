"""data.conversations: multi-turn rows from a JSONL file (OpenAI messages or ShareGPT), bad lines named
file:line and field, packed with the loss on exactly the assistant tokens."""

import json
from pathlib import Path

import numpy as np
import pytest

from data_gen.files import DataFileError
from rolellm_jax.data.conversations import read_conversations
from rolellm_jax.data.examples import DataConfig, DataError, load_examples
from rolellm_jax.data.packing import PackedBatches
from tests.helpers.rolebench_fixtures import all_texts, tiny_tokenizer

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "release" / "rolebench-demo"


def conversation(i: int) -> dict:
    return {
        "messages": [
            {"role": "system", "content": "You are Captain Vale."},
            {"role": "user", "content": f"What is rain number {i}?"},
            {"role": "assistant", "content": f"Rain {i} is wet, hold the wind!"},
            {"role": "user", "content": "And snow?"},
            {"role": "assistant", "content": f"Snow {i} is cold."},
        ]
    }


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def test_openai_and_sharegpt_lines_read_alike(tmp_path):
    sharegpt = {
        "conversations": [
            {"from": m["role"].replace("user", "human").replace("assistant", "gpt"), "value": m["content"]}
            for m in conversation(0)["messages"]
        ]
    }
    path = write_jsonl(tmp_path / "c.jsonl", [conversation(0), "", sharegpt])
    first, second = read_conversations(path)
    assert first.messages == second.messages == tuple(conversation(0)["messages"])
    assert (first.source, second.source) == (f"{path}:1", f"{path}:3")


BAD = [
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "user", "content": "again"}]}, r"messages\[1\].role"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant"}]}, r"messages\[1\].content: must be"),
    ({"messages": [{"role": "user", "content": "hi"}]}, "messages: the last message must be the assistant's"),
    ({"messages": "hi"}, "messages: expected a list"),
    ({"conversations": [{"from": "bot", "value": "hi"}]}, r"conversations\[0\].from='bot'"),
    ({"conversations": [{"from": "gpt", "value": "hi"}]}, r"conversations\[0\].role='assistant': expected 'user'"),
    ({"text": "hi"}, "expected a 'messages' list"),
]


@pytest.mark.parametrize("bad,match", BAD)
def test_bad_line_names_file_line_and_field(tmp_path, bad, match):
    path = write_jsonl(tmp_path / "c.jsonl", [conversation(0), bad])
    with pytest.raises(DataFileError, match=rf"c.jsonl:2: {match}"):
        read_conversations(path)


def test_bad_lines_can_be_skipped_and_an_empty_file_is_an_error(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [BAD[0][0], conversation(1)])
    assert [c.source for c in read_conversations(path, "skip")] == [f"{path}:2"]
    empty = write_jsonl(tmp_path / "empty.jsonl", [""])
    with pytest.raises(DataError, match="no conversation in this file"):
        load_examples(DataConfig(source=str(DEMO), kinds=[], conversations=str(empty)))


def test_no_kinds_needs_conversations():
    with pytest.raises(DataError, match=r"data.kinds=\[\].*non-empty unless data.conversations"):
        DataConfig(kinds=[])


def test_conversations_pack_with_loss_on_exactly_the_assistant_tokens(tmp_path):
    rows = [conversation(i) for i in range(6)]
    path = write_jsonl(tmp_path / "c.jsonl", rows)
    tok = tiny_tokenizer(all_texts())
    cfg = DataConfig(source=str(DEMO), kinds=[], conversations=str(path), seq_len=512)
    batches = PackedBatches.from_source(cfg, tok, "llama", 1)
    # counted from the data alone: each answer's tokens and its EOS (llama's default format)
    answers = [m["content"] for r in rows for m in r["messages"] if m["role"] == "assistant"]
    expected = sum(len(tok(a, add_special_tokens=False)["input_ids"]) + 1 for a in answers)
    assert (batches.stats.rows, batches.stats.examples, batches.stats.loss_tokens) == (6, 6, expected)
    batch = batches.rows.take(np.arange(len(batches.rows)))
    targets = batch["targets"][batch["loss_mask"] > 0]
    assert sorted(tok.decode(targets).split("</s>"))[1:] == sorted(answers)  # the answers, nothing else, each once


def test_conversations_mix_with_rolebench_rows(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [conversation(0), conversation(1)])
    alone, n_alone = load_examples(DataConfig(source=str(DEMO), max_rows=3))
    mixed, n_mixed = load_examples(DataConfig(source=str(DEMO), max_rows=3, conversations=str(path)))
    assert mixed[: len(alone)] == alone and len(mixed) == len(alone) + 2 and n_mixed == n_alone + 2


def test_conversation_the_template_cannot_render_names_its_line(tmp_path):
    from tests.data.test_chat_conversation import template_tok

    glued = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    glued += "{% if add_generation_prompt %}assistant: {% endif %}"
    row = {"messages": [{"role": "user", "content": "What is rain?"}, {"role": "assistant", "content": "wet."}]}
    path = write_jsonl(tmp_path / "c.jsonl", [conversation(0), row])
    cfg = DataConfig(source=str(DEMO), kinds=[], conversations=str(path))
    with pytest.raises(ValueError, match=r"c.jsonl:2: messages\[1\]: token \d+ .* crosses the edge"):
        PackedBatches.from_source(cfg, template_tok(glued), "llama", 1)


def test_data_cli_shows_every_assistant_turn_of_a_conversation(tmp_path, capsys):
    from rolellm_jax.data.__main__ import main

    tiny_tokenizer(all_texts()).save_pretrained(tmp_path / "tok")
    path = write_jsonl(tmp_path / "c.jsonl", [conversation(0)])
    assert main(["--tokenizer", str(tmp_path / "tok"), "--kinds", "--conversations", str(path)]) == 0
    out = capsys.readouterr().out
    answers = [part.split("--- prompt ---")[0].strip() for part in out.split("--- answer (in the loss) ---\n")[1:]]
    assert answers == ["Rain 0 is wet, hold the wind!</s>", "Snow 0 is cold.</s>"]


def test_character_card_dialogues_become_conversations(tmp_path):
    from data_gen.pipeline.cards import read_card
    from rolellm_jax.data.chat_format import role_system_text
    from tests.helpers.card_fixtures import V2, write_card_folder

    write_card_folder(tmp_path / "cards")
    extra = dict(
        V2["data"], name="Pim", mes_example="<START>\n{{char}}: Hello.\n<START>\n{{user}}: Hi?\n{{char}}: Yes."
    )
    (tmp_path / "cards" / "pim.json").write_text(json.dumps({**V2, "data": extra}), encoding="utf-8")
    examples, rows = load_examples(DataConfig(source=str(DEMO), kinds=[], cards=str(tmp_path / "cards")))
    # Mira and Old Tam Card: 2 dialogues each; Pim: its first dialogue has no user turn, so 1
    assert rows == len(examples) == 5
    by_source = {e.source.rsplit("/", 1)[1]: e.messages for e in examples}
    mira = read_card(tmp_path / "cards" / "mira.json")
    assert by_source["mira.json: mes_example dialogue 1"] == (
        {"role": "system", "content": role_system_text("eng", "Mira", mira.description)},  # as serving the card
        {"role": "user", "content": "How many ships today?"},
        {"role": "assistant", "content": "Three. One of them twice.\nIt was lost."},
    )
    pim = by_source["pim.json: mes_example dialogue 2"]
    assert pim[1:] == ({"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Yes."})
    assert "pim.json: mes_example dialogue 1" not in by_source
