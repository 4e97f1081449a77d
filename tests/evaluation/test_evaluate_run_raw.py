"""Issue 16, item 13: `evaluate run` scores RAW from the data's own raw split (a release's `raw`, a shard
set's general/raw.jsonl) without --raw-ref-en, labels `avg` with the columns it averages; `evaluate table`
takes a run folder; --ckpt that is no model folder says what it is."""

from __future__ import annotations

import json

import pytest

from rolellm_jax.evaluate import main
from tests.evaluation.test_evaluate_run import ckpt  # noqa: F401 - the tiny HF checkpoint fixture
from tests.helpers.rolebench_fixtures import write_jsonl, write_original_layout, write_release_layout

RAW = [{"role": "-", "question": f"Describe rain number {i}.", "generated": [f"Rain {i} is water."]} for i in range(2)]


def _run(ckpt, data, out, *extra: str) -> int:
    args = ["run", "--ckpt", str(ckpt), "--data", str(data), "--out", str(out), "--max-new-tokens", "4", *extra]
    return main(args)


@pytest.mark.parametrize("layout", ["shard_set", "release"])
def test_raw_split_of_the_data_is_scored_without_a_flag(layout, capsys, tmp_path, ckpt):  # noqa: F811
    if layout == "release":
        data = write_release_layout(tmp_path / "release", raw=RAW)
    else:
        data = write_original_layout(tmp_path / "rolebench")
        write_jsonl(data / "rolebench-eng/instruction-generalization/general/raw.jsonl", RAW)
    out = tmp_path / "out"
    assert _run(ckpt, data, out, "--split", "instruction_generalization_en") == 0, capsys.readouterr().err
    entry = json.loads((out / "metrics.json").read_text())["settings"]["instruction_generalization_en"]
    assert entry["RAW"]["rows"] == 4  # the two raw questions, asked to both roles
    assert entry["avg_of"] == ["CUS", "RAW", "SPE"]
    assert entry["avg"] == pytest.approx(sum(entry[c]["score"] for c in ("CUS", "RAW", "SPE")) / 3)


def test_avg_names_its_columns_and_table_takes_a_run_folder(capsys, tmp_path, ckpt):  # noqa: F811
    data = write_original_layout(tmp_path / "rolebench")  # no raw answers at all
    out = tmp_path / "out"
    assert _run(ckpt, data, out, "--split", "instruction_generalization_zh") == 0, capsys.readouterr().err
    entry = json.loads((out / "metrics.json").read_text())["settings"]["instruction_generalization_zh"]
    assert entry["avg_of"] == ["CUS", "SPE"] and "RAW" not in entry
    table = capsys.readouterr().out
    assert f"| {entry['avg']:.4f} (CUS+SPE) |" in table
    assert main(["table", str(out)]) == 0  # the run folder, not only its metrics.json
    assert capsys.readouterr().out == table
    assert main(["table", str(tmp_path)]) == 1
    assert "no metrics.json in this folder" in capsys.readouterr().err


def test_ckpt_that_is_no_model_folder_says_what_it_is(capsys, tmp_path):
    data = write_original_layout(tmp_path / "rolebench")
    assert _run(tmp_path / "missing", data, tmp_path / "out") == 1
    assert capsys.readouterr().err.strip() == f"error: --ckpt={tmp_path / 'missing'}: no such folder"
    run_folder = tmp_path / "runs" / "demo"
    (run_folder / "export").mkdir(parents=True)
    (run_folder / "export" / "rolellm_config.json").write_text("{}")
    assert _run(run_folder, data, tmp_path / "out") == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: --ckpt={run_folder}: neither our checkpoint") and err.endswith(
        f"its model is {run_folder / 'export'}"
    )
