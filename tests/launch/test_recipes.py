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
        ("zh", "general", "test", 200),
        ("zh", "role_specific", "test", 239),
        ("eng", "role_specific", "test", 250),
    ],
)
def test_sample_folder_reads_with_every_role_described(rolebench_sample, tmp_path, lang, kind, split, rows):
    folder = recipe("rolebench_sample_data").build(rolebench_sample, tmp_path / "data")
    got = read_rows(folder, lang, "instruction_generalization", kind, split)
    assert len(got) == rows
    described = describe(got, read_descriptions(folder, lang), "desc.json")
    assert described.keys() == {r.role for r in got}
    assert not any(p.is_file() and not p.is_symlink() for p in folder.rglob("*.jsonl"))  # links, no copies


def test_a_missing_sample_file_is_named(tmp_path):
    data = recipe("rolebench_sample_data")
    with pytest.raises(data.SampleError, match="rolebench-zh/general/train.jsonl: not found"):
        data.build(tmp_path / "nowhere", tmp_path / "out")
