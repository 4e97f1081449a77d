"""launch/recipes/: the CPU recipe's data folder reads the real RoleBench sample as training and
evaluation read any original-layout folder, with a description for every role."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from rolellm_jax.data.rolebench_source import describe, read_descriptions, read_rows

ROOT = Path(__file__).resolve().parents[2]


def recipe(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "launch" / "recipes" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    "lang, kind, split, rows",
    [
        ("zh", "general", "train", 200),
        ("zh", "role_specific", "train", 200),
        ("zh", "general", "test", 40),  # 8 rows of each of the 5 roles
        ("zh", "role_specific", "test", 40),
        ("eng", "role_specific", "train", 150),  # 30 of each role's 50
        ("eng", "role_specific", "test", 40),  # 8 of each role's other 20
    ],
)
def test_sample_folder_reads_with_every_role_described(rolebench_sample, tmp_path, lang, kind, split, rows):
    folder = recipe("rolebench_sample_data").build(rolebench_sample, tmp_path / "data")
    got = read_rows(folder, lang, "instruction_generalization", kind, split)
    assert len(got) == rows
    described = describe(got, read_descriptions(folder, lang), "desc.json")
    assert described.keys() == {r.role for r in got}
    assert len(described) == 5  # every role is trained and scored


def test_english_test_rows_are_held_out_of_its_train_rows(rolebench_sample, tmp_path):
    folder = recipe("rolebench_sample_data").build(rolebench_sample, tmp_path / "data")
    train, test = (
        read_rows(folder, "eng", "instruction_generalization", "role_specific", s) for s in ("train", "test")
    )
    assert not {r.question for r in train} & {r.question for r in test}
    zh = folder / "rolebench-zh/general/train.jsonl"
    assert zh.is_symlink()  # the zh train rows are the sample's own file, not a copy


def test_a_missing_sample_file_is_named(tmp_path):
    data = recipe("rolebench_sample_data")
    with pytest.raises(data.SampleError, match="rolebench-zh/general/train.jsonl: not found"):
        data.build(tmp_path / "nowhere", tmp_path / "out")
