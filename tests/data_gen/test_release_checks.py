"""Release split rules on inputs shaped as the published RoleBench: a rolegpt_baseline that answers
train questions too (zh-general), real train/test leaks, roles without a description, shards that
are damaged or empty. Every built config is loaded with datasets.load_dataset."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_gen.release import cli as release
from data_gen.release.verify import verify_release
from tests.helpers.rolebench_fixtures import release_manifest_entry, write_jsonl

ZH = "剑客"


def _general(role: str, questions: list[str]) -> list[dict]:
    return [{"role": role, "question": q, "generated": [f"{q} 的回答。"]} for q in questions]


def _specific(role: str, questions: list[str], train: bool) -> list[dict]:
    rows = _general(role, questions)
    return [dict(r, type="script_based" if train else ["script_based"]) for r in rows]


def write_baseline_covers_train_source(root: Path, leak: bool = True) -> dict[str, dict[str, int]]:
    """Original layout, Chinese: zh-general's baseline answers train and test questions (as the
    published one does); with ``leak``, zh-role_specific has one (role, question) pair asked twice
    in train and, space-padded, in test. Returns rows per config and split."""
    train_q = [f"第{i}个训练问题是什么？" for i in range(4)]
    test_q = [f"第{i}个测试问题是什么？" for i in range(2)]
    write_jsonl(root / "rolebench-zh/general/train.jsonl", _general(ZH, train_q))
    write_jsonl(root / "rolebench-zh/general/test.jsonl", _general(ZH, test_q))
    write_jsonl(root / "rolebench-zh/general/rolegpt_baseline.jsonl", _general(ZH, train_q + test_q))
    spec_train = [f"你的第{i}把剑叫什么？" for i in range(3)] + ["你师父是谁？", "你师父是谁？"] * leak
    spec_test = ["你的第9把剑叫什么？", " 你师父是谁？"]
    write_jsonl(root / "rolebench-zh/role_specific/train.jsonl", _specific(ZH, spec_train, True))
    write_jsonl(root / "rolebench-zh/role_specific/test.jsonl", _specific(ZH, spec_test, False))
    write_jsonl(root / "rolebench-zh/role_specific/rolegpt_baseline.jsonl", _general(ZH, spec_test))
    (root / "profiles-zh").mkdir(parents=True)
    (root / "profiles-zh/desc.json").write_text(json.dumps({ZH: "一位沉默寡言的剑客。"}, ensure_ascii=False))
    return {
        "zh-general": {"train": 4, "test": 2, "rolegpt_baseline": 6},
        "zh-role_specific": {"train": 5 if leak else 3, "test": 2, "rolegpt_baseline": 2},
        "profiles-zh": {"train": 1},
    }


def _loaded_rows(out: Path, cache: Path) -> dict[str, dict[str, int]]:
    manifest = json.loads((out / "manifest.json").read_text())
    rows = {}
    for config in manifest["configs"]:
        ds = datasets.load_dataset(str(out), config, cache_dir=str(cache))
        rows[config] = {split: ds[split].num_rows for split in ds}
    return rows


def _build(source: Path, out: Path, *flags: str) -> None:
    assert release.main(["build", "--from", str(source), "--version", "1.0.0", "--out", str(out), *flags]) == 0


@pytest.mark.parametrize("flags", [[], ["--drop-train-leaks"]])
def test_a_baseline_covering_train_drops_nothing_and_verifies(tmp_path, flags):
    source = tmp_path / "src"
    expected = write_baseline_covers_train_source(source, leak=False)
    _build(source, tmp_path / "rel", *flags)
    assert _loaded_rows(tmp_path / "rel", tmp_path / "cache") == expected  # the source's rows, none dropped
    assert verify_release(tmp_path / "rel").ok


def test_baseline_covering_train_is_not_a_leak_and_the_real_leak_is_reported(tmp_path, caplog):
    source = tmp_path / "src"
    expected = write_baseline_covers_train_source(source)
    caplog.set_level(logging.WARNING)
    _build(source, tmp_path / "rel")
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == [
        "warning: zh-role_specific: 1 (role, question) pairs in both train and test: ('剑客', '你师父是谁？') "
        "(pass --drop-train-leaks to drop those train rows)"
    ]
    assert _loaded_rows(tmp_path / "rel", tmp_path / "cache") == expected
    report = verify_release(tmp_path / "rel")
    assert report.problems == ["zh-role_specific: ('剑客', '你师父是谁？') is in both train and test"]
    assert "zh-general: 4 of 6 rolegpt_baseline instructions also in train" in report.notes


def test_drop_train_leaks_drops_only_test_pairs_and_every_config_loads(tmp_path):
    source = tmp_path / "src"
    expected = write_baseline_covers_train_source(source)
    out = tmp_path / "rel"
    _build(source, out, "--drop-train-leaks")
    manifest = json.loads((out / "manifest.json").read_text())
    assert {c: i["dropped_train_leaks"] for c, i in manifest["configs"].items() if "dropped_train_leaks" in i} == {
        "zh-role_specific": 2
    }
    expected["zh-role_specific"]["train"] -= 2  # the source minus the dropped rows; zh-general keeps all 4
    assert _loaded_rows(out, tmp_path / "cache") == expected
    report = verify_release(out)
    assert report.ok, report.problems


def test_a_train_split_emptied_by_the_leak_drop_is_left_out(tmp_path):
    source = tmp_path / "src"
    write_baseline_covers_train_source(source)
    test_rows = (source / "rolebench-zh/general/test.jsonl").read_text()
    (source / "rolebench-zh/general/train.jsonl").write_text(test_rows)  # every train question is a test one
    out = tmp_path / "rel"
    _build(source, out, "--drop-train-leaks")
    manifest = json.loads((out / "manifest.json").read_text())
    assert list(manifest["configs"]["zh-general"]["splits"]) == ["test", "rolegpt_baseline"]
    assert not list((out / "data" / "zh-general").glob("train-*"))
    assert "split: train\n    path:\n    - data/zh-general" not in (out / "README.md").read_text()
    assert _loaded_rows(out, tmp_path / "cache")["zh-general"] == {"test": 2, "rolegpt_baseline": 6}
    assert verify_release(out).ok


@pytest.fixture
def built(tmp_path) -> Path:
    write_baseline_covers_train_source(tmp_path / "src")
    _build(tmp_path / "src", tmp_path / "rel", "--drop-train-leaks")
    return tmp_path / "rel"


def test_verify_fails_on_a_0_row_shard(built):
    from data_gen.files import sha256_file

    shard = next((built / "data" / "zh-general").glob("test-*.parquet"))
    empty = pq.read_table(shard).slice(0, 0)
    pq.write_table(empty, shard)
    manifest, split, entry = release_manifest_entry(built, shard)
    entry.update(rows=0, sha256=sha256_file(shard))
    split["rows"] = 0
    (built / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=1) + "\n")
    problems = verify_release(built).problems
    assert f"{shard}: 0 rows (load_dataset cannot read an empty parquet shard)" in problems
    assert any(p.startswith(f"{built}: load_dataset(..., 'zh-general') fails (") for p in problems)


@pytest.mark.parametrize(
    ("config", "split"), [("zh-general", "test"), ("zh-role_specific", "rolegpt_baseline"), ("profiles-zh", "train")]
)
def test_one_byte_appended_to_a_test_or_baseline_shard_names_the_file(built, config, split, capsys):
    shard = next((built / "data" / config).glob(f"{split}-*.parquet"))
    shard.write_bytes(shard.read_bytes() + b"\0")
    assert release.main(["verify", str(built)]) == 1  # a KeyError traceback before
    err = capsys.readouterr().err.splitlines()
    assert f"{shard}: sha256 differs from manifest.json" in err
    assert any(line.startswith(f"{shard}: unreadable parquet") for line in err)
    assert not any("no description" in line for line in err)  # an unreadable profiles shard is not "no profiles"


def test_roles_without_a_description_warn_at_build_and_fail_verify(tmp_path, caplog):
    source = tmp_path / "src"
    write_baseline_covers_train_source(source)
    write_jsonl(source / "rolebench-zh/general/test.jsonl", _general("无名氏", ["第0个测试问题是什么？"]))
    caplog.set_level(logging.WARNING)
    _build(source, tmp_path / "rel")
    line = "zh-general: 1 roles have no description in profiles-zh: '无名氏'"
    assert f"warning: {line}" in [r.getMessage() for r in caplog.records]
    assert line in verify_release(tmp_path / "rel").problems
    shutil.rmtree(source / "profiles-zh")
    _build(source, tmp_path / "rel2")
    assert any(
        "no description in profiles-zh (no such config)" in p for p in verify_release(tmp_path / "rel2").problems
    )


def test_a_train_shard_replaced_by_another_schema_is_named(built):
    shard = next((built / "data" / "zh-role_specific").glob("train-*.parquet"))
    pq.write_table(pa.table({"role": ["x"]}), shard)
    problems = verify_release(built).problems
    assert any(p.startswith(f"{shard}: schema is not the zh-role_specific schema") for p in problems)
