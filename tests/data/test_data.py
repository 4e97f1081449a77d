"""RoleBench readers, JSONL errors, loss mask, packing, deterministic per-process batches."""

import json
import logging
from pathlib import Path

import jax
import numpy as np
import pytest

from data_gen import rolebench as schema
from data_gen.files import DataFileError, read_jsonl
from rolellm_jax.data import chat_format as chat
from rolellm_jax.data import rolebench_source as rolebench
from rolellm_jax.data.examples import DataConfig, DataError, Example, load_examples
from rolellm_jax.data.packing import PackedBatches, build_rows, to_global_arrays
from tests.helpers.rolebench_fixtures import (
    DESC_ENG,
    all_texts,
    eng_rows,
    tiny_tokenizer,
    write_jsonl,
    write_original_layout,
    write_release_layout,
)

REPO = Path(__file__).resolve().parents[2]
DEMO_SOURCE, DEMO_RELEASE = REPO / "release/demo-source", REPO / "release/rolebench-demo"


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer(all_texts())


@pytest.fixture
def original(tmp_path):
    return write_original_layout(tmp_path / "RoleBench")


# ---------------------------------------------------------------- JSONL


def test_malformed_line_fails_with_file_and_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2\n[1]\n', encoding="utf-8")
    with pytest.raises(DataFileError, match=rf"^{path}:3: invalid JSON"):
        read_jsonl(path)


def test_malformed_lines_skipped_with_a_counting_warning(tmp_path, caplog):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n{"a": 2\n[1]\n{"a": 3}\n', encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        assert read_jsonl(path, on_bad_line="skip") == [{"a": 1}, {"a": 3}]
    assert f"{path}: skipped 2 malformed line(s)" in caplog.text
    assert f"{path}:3: expected a JSON object, got list" in caplog.text


def test_bad_row_schema_reports_file_line_and_key(original):
    path = original / "rolebench-eng/instruction-generalization/general/train.jsonl"
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps({"role": "Captain Vale", "question": "q", "generated": []}) + "\n")
    n = len(path.read_text().splitlines())
    with pytest.raises(DataFileError, match=rf"{path}:{n}: key 'generated'"):
        rolebench.read_original_rows(original, "eng", "instruction_generalization", "general", "train")
    rows = rolebench.read_original_rows(
        original, "eng", "instruction_generalization", "general", "train", on_bad_line="skip"
    )
    assert len(rows) == n - 1


# ---------------------------------------------------------------- real RoleBench rows


def test_real_rows_type_string_in_train_list_in_test(rolebench_sample):
    train = rolebench.read_original_rows(rolebench_sample, "zh", "instruction_generalization", "role_specific", "train")
    test = rolebench.read_original_rows(rolebench_sample, "zh", "instruction_generalization", "role_specific", "test")
    raw_train = read_jsonl(rolebench_sample / "rolebench-zh/role_specific/train.jsonl")
    raw_test = read_jsonl(rolebench_sample / "rolebench-zh/role_specific/test.jsonl")
    assert len(train) == len(raw_train) == 200 and len(test) == len(raw_test) == 239
    assert all(isinstance(r["type"], str) for r in raw_train) and all(isinstance(r["type"], list) for r in raw_test)
    for row, raw in zip(train, raw_train):
        assert row.types == (raw["type"],) * len(raw["generated"])
    for row, raw in zip(test, raw_test):
        assert row.types == tuple(raw["type"]) and len(row.types) == len(row.answers)
    assert any(len(r.answers) > 1 for r in test)  # merged duplicate questions
    assert {r.role for r in test} == {"孙悟空", "皇帝", "华妃", "李白", "张飞"}
    assert train[0].source.endswith("rolebench-zh/role_specific/train.jsonl:1")


def test_real_english_role_specific_leading_spaces_are_stripped(rolebench_sample):
    rows = rolebench.read_original_rows(rolebench_sample, "eng", "instruction_generalization", "role_specific", "test")
    raw = read_jsonl(rolebench_sample / "rolebench-eng/instruction-generalization/role_specific/test.jsonl")
    assert all(r["question"].startswith(" ") and r["generated"][0].startswith(" ") for r in raw)
    assert [r.question for r in rows] == [r["question"].strip() for r in raw]
    assert [r.answers for r in rows] == [tuple(a.strip() for a in r["generated"]) for r in raw]
    baseline = rolebench.read_original_rows(
        rolebench_sample, "eng", "instruction_generalization", "role_specific", "rolegpt_baseline"
    )
    assert all(r.types is None and len(r.answers) == 1 for r in baseline)


def test_real_chinese_rows_train_with_descriptions_given(rolebench_sample, tmp_path, tok):
    # The sample has no profiles: pair its rows with made-up descriptions in our own folder.
    root = tmp_path / "rb"
    for kind in ("general", "role_specific"):
        rows = read_jsonl(rolebench_sample / f"rolebench-zh/{kind}/train.jsonl")
        write_jsonl(root / f"rolebench-zh/{kind}/train.jsonl", rows[:20])
    roles = {
        r.role
        for k in ("general", "role_specific")
        for r in rolebench.read_original_rows(root, "zh", "instruction_generalization", k, "train")
    }
    (root / "profiles-zh").mkdir()
    (root / "profiles-zh/desc.json").write_text(json.dumps({r: f"{r}的描述" for r in roles}, ensure_ascii=False))
    batches = PackedBatches.from_source(DataConfig(source=str(root), lang="zh", seq_len=512), tok, "glm", 2)
    assert batches.stats.rows == 40 and batches.stats.examples > 40  # general rows carry 5 references
    text = tok.decode(batches.batch(0)["input_ids"][0])
    assert "你的特征描述是" in text and "[Round 1]" in text


# ---------------------------------------------------------------- our fixtures: both sources


def test_original_and_release_sources_give_the_same_rows(original, tmp_path):
    release = write_release_layout(tmp_path / "release")
    for lang, setting, kind, split in [
        ("eng", "instruction_generalization", "role_specific", "train"),
        ("eng", "instruction_generalization", "role_specific", "test"),
        ("eng", "role_generalization", "general", "train"),
        ("zh", "instruction_generalization", "general", "test"),
    ]:
        a = rolebench.read_rows(original, lang, setting, kind, split)
        b = rolebench.read_rows(str(release), lang, setting, kind, split)
        strip = lambda rows: [(r.role, r.question, r.answers, r.types) for r in rows]  # noqa: E731
        assert strip(a) == strip(b) and a
    assert rolebench.read_descriptions(original, "eng") == rolebench.read_descriptions(str(release), "eng") == DESC_ENG
    with pytest.raises(schema.RoleBenchError, match="zh-general.*rolegpt_baseline"):
        rolebench.read_release_rows(str(release), "zh", "instruction_generalization", "general", "rolegpt_baseline")


@pytest.mark.parametrize(
    "lang,setting,family",
    [
        ("eng", "instruction_generalization", "llama"),
        ("eng", "role_generalization", "llama"),
        ("zh", "instruction_generalization", "glm"),
    ],
)
def test_demo_source_and_its_release_give_identical_batches(tok, lang, setting, family):
    # release/rolebench-demo is built by the release branch from release/demo-source (original
    # layout): our two readers must agree on it, down to the packed batches.
    made = {}
    for source in (DEMO_SOURCE, DEMO_RELEASE):
        cfg = DataConfig(source=str(source), lang=lang, setting=setting, seq_len=1024, seed=1)
        made[source] = PackedBatches.from_source(cfg, tok, family, 4)
    a, b = made[DEMO_SOURCE], made[DEMO_RELEASE]
    assert a.stats == b.stats and a.stats.rows > 50 and a.stats.truncated == 0
    for k in (0, 3):
        for key, value in a.batch(k).items():
            np.testing.assert_array_equal(value, b.batch(k)[key])
    if setting == "role_generalization":
        held_out = rolebench.held_out_roles(DEMO_RELEASE, lang)
        assert held_out and not any(
            role in tok.decode(a.rows.tokens[r]) for r in range(a.num_rows) for role in held_out
        )


def test_role_missing_from_desc_is_an_error_naming_it(original):
    desc = original / "profiles-eng/desc.json"
    desc.write_text(json.dumps({k: v for k, v in DESC_ENG.items() if k != "Doctor Moss"}))
    with pytest.raises(schema.RoleBenchError, match="role 'Doctor Moss' has no description"):
        load_examples(DataConfig(source=str(original)))


def test_role_generalisation_refuses_held_out_roles(original, tok):
    cfg = DataConfig(source=str(original), setting="role_generalization")
    examples, _ = load_examples(cfg)
    assert examples and not any("Old Tam" in e.system for e in examples)
    path = original / "rolebench-eng/role-generalization/general/train.jsonl"
    write_jsonl(path, eng_rows("general", "train") + eng_rows("general", "train", roles=("Old Tam",), n=1))
    with pytest.raises(schema.RoleBenchError, match="'Old Tam' is held out for role generalisation"):
        load_examples(cfg)
    with pytest.raises(schema.RoleBenchError, match="held out"):  # the test split is never training data
        load_examples(DataConfig(source=str(original), setting="role_generalization", split="test", kinds=("general",)))


def test_references_per_row(original):
    counts = {
        ref: len(load_examples(DataConfig(source=str(original), kinds=("general",), references_per_row=ref))[0])
        for ref in ("all", "first", "1", "5")
    }
    assert counts == {"all": 12, "first": 6, "1": 6, "5": 12}  # 6 rows with 2 references each
    with pytest.raises(DataError, match="references_per_row='some'"):
        DataConfig(references_per_row="some")


def test_role_specific_answers_and_system_text(original):
    examples, rows = load_examples(DataConfig(source=str(original), kinds=("role_specific",)))
    assert rows == 6 and examples[0].question == "Captain Vale, what happened on voyage 0?"
    assert examples[0].answer == "Captain Vale remembers voyage 0."
    assert examples[0].system == chat.role_system_text("eng", "Captain Vale", DESC_ENG["Captain Vale"])


# ---------------------------------------------------------------- loss mask and packing

EXAMPLES = [
    Example(f"You are role {i % 3}.", f"Question {i}?" * (1 + i % 4), f"Answer {i} is here." * (1 + i % 3))
    for i in range(23)
]


def test_loss_mask_covers_exactly_the_answer_tokens(tok):
    batches = PackedBatches(DataConfig(seq_len=128, shuffle=False), tok, "llama", 4, examples=EXAMPLES)
    rows = batches.rows.take(np.arange(batches.num_rows))
    expected = sum(len(tok(e.answer, add_special_tokens=False)["input_ids"]) + 1 for e in EXAMPLES)
    assert rows["loss_mask"].sum() == expected == batches.stats.loss_tokens
    for r in range(batches.num_rows):  # per segment: loss exactly on the targets that are answer ids
        for seg in range(1, rows["segment_ids"][r].max() + 1):
            at = np.flatnonzero(rows["segment_ids"][r] == seg)
            ids = rows["input_ids"][r, at].tolist()
            example = next(
                e for e in EXAMPLES if chat.render_example(tok, "llama", e.system, e.question, e.answer)[0] == ids
            )
            _, mask = chat.render_example(tok, "llama", example.system, example.question, example.answer)
            assert rows["loss_mask"][r, at[:-1]].tolist() == mask[1:]
            assert rows["targets"][r, at[:-1]].tolist() == ids[1:]
            assert rows["loss_mask"][r, at[-1]] == 0  # never predict across a segment boundary


def test_packing_segments_positions_and_no_split(tok):
    batches = PackedBatches(DataConfig(seq_len=160), tok, "glm", 2, examples=EXAMPLES)
    rows, seen = batches.rows.take(np.arange(batches.num_rows)), []
    for r in range(batches.num_rows):
        seg, pos = rows["segment_ids"][r], rows["positions"][r]
        n = seg.max()
        used = np.flatnonzero(seg)
        assert used.tolist() == list(range(len(used)))  # segments first, padding (0) at the end
        assert np.all(np.diff(seg[used]) >= 0) and set(seg[used]) == set(range(1, n + 1))
        for s in range(1, n + 1):
            at = np.flatnonzero(seg == s)
            assert pos[at].tolist() == list(range(len(at)))
            seen.append(rows["input_ids"][r, at].tolist())
        assert np.all(rows["loss_mask"][r, seg == 0] == 0)
    whole = [chat.render_example(tok, "glm", e.system, e.question, e.answer)[0] for e in EXAMPLES]
    assert sorted(seen) == sorted(whole)  # every example exactly once, never split across rows
    assert batches.stats.truncated == 0 and batches.num_rows < len(EXAMPLES)


def test_long_examples_truncated_and_counted(tok, caplog):
    long = [Example("sys", "q?", "word " * 200), Example("s" * 400, "q?", "a")] + [Example("s", "q?", "a")] * 3
    with caplog.at_level(logging.WARNING):
        batches = PackedBatches(DataConfig(seq_len=64), tok, "llama", 1, examples=long)
    assert batches.stats.truncated == 1 and batches.stats.dropped == 1
    assert "1 example(s) longer than seq_len=64 were truncated, 1 dropped" in caplog.text
    assert batches.rows.tokens.shape[1] == 64


def test_build_rows_targets_follow_segments():
    packed = build_rows(
        [(np.array([5, 6, 7]), np.array([0, 1, 1])), (np.array([8, 9]), np.array([0, 1]))], 6, 0, pad_id=0
    )
    rows = packed.take(np.array([0]))
    assert rows["input_ids"][0].tolist() == [5, 6, 7, 8, 9, 0]  # longest first
    assert rows["segment_ids"][0].tolist() == [1, 1, 1, 2, 2, 0]
    assert rows["positions"][0].tolist() == [0, 1, 2, 0, 1, 0]
    assert rows["targets"][0].tolist() == [6, 7, 0, 9, 0, 0]
    assert rows["loss_mask"][0].tolist() == [1, 1, 0, 1, 0, 0]  # 6, 7 and 9 are answer targets


# ---------------------------------------------------------------- determinism and processes


def make(tok, batch=4, index=0, count=1, seed=3, shards=None):
    return PackedBatches(
        DataConfig(seq_len=128, seed=seed, shards=shards), tok, "llama", batch, index, count, examples=EXAMPLES
    )


def test_batch_k_is_a_pure_function_of_seed_and_k(tok):
    a, b = make(tok), make(tok)
    for k in range(6):
        a.batch(k)
    for key, value in a.batch(7).items():  # b never produced batches 0..6
        np.testing.assert_array_equal(value, b.batch(7)[key])
    assert not np.array_equal(a.batch(7)["input_ids"], make(tok, seed=4).batch(7)["input_ids"])


def test_each_epoch_visits_every_packed_row_once(tok):
    a = make(tok, batch=1)
    first = [int(a.row_indices(k)[0]) for k in range(a.num_rows)]
    second = [int(a.row_indices(k)[0]) for k in range(a.num_rows, 2 * a.num_rows)]
    assert sorted(first) == sorted(second) == list(range(a.num_rows)) and first != second


def test_each_process_loads_only_its_shards_and_they_concatenate_to_the_global_batch(tok):
    whole = make(tok, batch=4, shards=2)  # one process holding both shards
    parts = [make(tok, batch=4, index=i, count=2) for i in range(2)]  # shards default to one per process
    assert [p.shards for p in parts] == [2, 2] and [p.local_shards for p in parts] == [range(0, 1), range(1, 2)]
    # each process tokenised and packed only its own (round-robin) half of the examples
    assert [p.stats.examples for p in parts] == [12, 11] and whole.stats.examples == len(EXAMPLES)
    assert parts[0].num_rows + parts[1].num_rows == whole.num_rows
    for k in (0, 5, 40):  # 40: past the end of both shards' first epochs
        for key in whole.batch(k):
            np.testing.assert_array_equal(np.concatenate([p.batch(k)[key] for p in parts]), whole.batch(k)[key])
    assert parts[0].batch(0)["input_ids"].shape == (2, 128)
    # and so do four processes of two shards each
    quarters = [make(tok, batch=8, index=i, count=4, shards=8) for i in range(4)]
    eight = make(tok, batch=8, shards=8)
    np.testing.assert_array_equal(
        np.concatenate([q.batch(3)["input_ids"] for q in quarters]), eight.batch(3)["input_ids"]
    )


def test_every_shard_walks_its_own_epochs(tok):
    a = make(tok, batch=2, shards=2)
    for local, size in enumerate(a._shard_sizes):
        seen = [int(a.row_indices(k)[local]) for k in range(2 * size)]
        first, second = seen[:size], seen[size:]
        start = a._shard_starts[local]
        assert sorted(first) == sorted(second) == list(range(start, start + size)) and first != second


def test_batch_process_and_shard_counts_that_do_not_divide(tok):
    with pytest.raises(
        DataError, match="global_batch_size=6 is not divisible by process_count=4: use a multiple of 4 "
    ):
        make(tok, batch=6, count=4)
    with pytest.raises(
        DataError,
        match=r"data.shards=3 is not a multiple of process_count=2: each process loads whole "
        r"shards \(e.g. 2 or 4\)",
    ):
        make(tok, batch=6, count=2, shards=3)
    with pytest.raises(DataError, match=r"global_batch_size=6 is not divisible by data.shards=4: .* \(e.g. 4 or 8\)"):
        make(tok, batch=6, shards=4)
    with pytest.raises(
        DataError,
        match="data.shards=32 but release/rolebench-demo gives only 23 examples: shard 23 would be empty; "
        "lower data.shards",
    ):
        make(tok, batch=32, shards=32)
    with pytest.raises(DataError, match="data.shards=0: must be >= 1"):
        DataConfig(shards=0)


def test_to_global_arrays_on_a_mesh(tok):
    mesh = jax.make_mesh((2, 4), ("data", "fsdp"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
    local = make(tok, batch=8).batch(2)
    arrays = to_global_arrays(local, mesh)
    assert arrays["input_ids"].shape == (8, 128) and len(arrays["input_ids"].sharding.device_set) == 8
    for key in local:
        np.testing.assert_array_equal(np.asarray(arrays[key]), local[key])


def test_config_errors_name_the_field():
    with pytest.raises(DataError, match="data.kinds"):
        DataConfig(kinds=("chitchat",))
    with pytest.raises(DataError, match="data.on_bad_line='ignore'"):
        DataConfig(on_bad_line="ignore")
    with pytest.raises(DataError, match="data.setting='role_generalization': Chinese RoleBench has only"):
        DataConfig(lang="zh", setting="role_generalization")
    with pytest.raises(DataError, match=r"data.lang='fr': expected one of eng \(or en\), zh"):
        DataConfig(lang="fr")
    assert DataConfig(lang="en").lang == "eng"  # both spellings (issue 16 item 12)
    with pytest.raises(DataError, match="data.split='dev'"):
        DataConfig(split="dev")


def test_cli_shows_the_rendered_example_and_fails_in_one_line(original, tok, tmp_path, capsys):
    from rolellm_jax.data.__main__ import main

    tok.save_pretrained(tmp_path / "tok")
    assert main(["--source", str(original), "--tokenizer", str(tmp_path / "tok"), "--seq-len", "1024"]) == 0
    out = capsys.readouterr().out
    assert "--- answer (in the loss) ---\n" in out and out.rstrip().endswith("</s>")
    (original / "profiles-eng/desc.json").write_text("{}")
    assert main(["--source", str(original), "--tokenizer", str(tmp_path / "tok")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "has no description" in err and err.count("\n") == 1
    assert main(["--source", str(original), "--tokenizer", str(tmp_path / "no-such-tok")]) == 1
    assert capsys.readouterr().err == f"error: {tmp_path / 'no-such-tok'}: no such folder\n"  # not a Hub id complaint


def test_training_on_a_test_split_is_said(original, caplog):
    with caplog.at_level(logging.WARNING, logger="rolellm_jax.data"):
        load_examples(DataConfig(source=str(original)))
        assert "not be held out" not in caplog.text
        load_examples(DataConfig(source=str(original), split="test"))
    assert "data.split=test: training on the rows that evaluation scores against" in caplog.text


def test_without_a_role_generalisation_test_split_the_papers_roles_are_held_out(original, caplog):
    (original / "rolebench-eng/role-generalization/general/test.jsonl").unlink()
    with caplog.at_level(logging.WARNING):
        assert rolebench.held_out_roles(original, "eng") == schema.PAPER_HELD_OUT_ROLES
    assert "holding out the paper's 10 roles" in caplog.text
    assert len(schema.PAPER_HELD_OUT_ROLES) == 10 and "Jack Sparrow" in schema.PAPER_HELD_OUT_ROLES


def test_languages_mixed_with_kinds_per_language(rolebench_sample, tmp_path):
    # zh general + role_specific mixed with English role_specific only (the sample has no English
    # general rows): each example keeps its own language's system instruction.
    root = tmp_path / "rb"
    write_jsonl(
        root / "rolebench-zh/general/train.jsonl", read_jsonl(rolebench_sample / "rolebench-zh/general/train.jsonl")[:3]
    )
    eng = read_jsonl(rolebench_sample / "rolebench-eng/instruction-generalization/role_specific/test.jsonl")[:2]
    write_jsonl(root / "rolebench-eng/instruction-generalization/role_specific/train.jsonl", eng)
    zh_roles = {r["role"] for r in read_jsonl(root / "rolebench-zh/general/train.jsonl")}
    for lang, roles in (("zh", zh_roles), ("eng", {r["role"] for r in eng})):
        (root / f"profiles-{lang}").mkdir()
        (root / f"profiles-{lang}/desc.json").write_text(json.dumps({r: f"desc of {r}" for r in roles}))
    cfg = DataConfig(source=str(root), lang=["zh", "en"], kinds={"zh": ["general"], "eng": ["role_specific"]})
    assert cfg.langs == ("zh", "eng") and cfg.kinds_of("eng") == ("role_specific",)
    examples, rows = load_examples(cfg)
    assert rows == 5
    systems = {e.system for e in examples}
    assert chat.role_system_text("eng", eng[0]["role"], f"desc of {eng[0]['role']}") in systems
    assert any(s == chat.role_system_text("zh", r, f"desc of {r}") for r in zh_roles for s in systems)
    assert sum(e.question.strip() == eng[1]["question"].strip() for e in examples) == 1
    # a list of kinds applies to every language: English general is absent, and the error says so
    with pytest.raises(rolebench.RoleBenchError, match="general"):
        load_examples(DataConfig(source=str(root), lang=["zh", "eng"], kinds=["general"]))


def test_mixed_language_config_errors_name_the_field():
    with pytest.raises(DataError, match="data.kinds names languages"):
        DataConfig(lang=["zh", "eng"], kinds={"zh": ["general"]})
    with pytest.raises(DataError, match="data.lang='fr'"):
        DataConfig(lang=["zh", "fr"])
    with pytest.raises(DataError, match="role_generalization"):
        DataConfig(lang=["eng", "zh"], setting="role_generalization")
    assert DataConfig(lang=["zh", "zh"]).lang == "zh"
