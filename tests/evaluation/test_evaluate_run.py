"""`evaluate run` end to end: tiny HF checkpoint + tokenizer, RoleBench-layout data, paper table."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from rolellm_jax.evaluate import main
from tests.helpers.rolebench_fixtures import all_texts, tiny_tokenizer, write_jsonl, write_original_layout
from tests.helpers.tiny_models import tiny_hf_config


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ckpt")
    tokenizer = tiny_tokenizer(all_texts(), vocab_size=400)
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    cfg = tiny_hf_config(
        LlamaConfig,
        vocab_size=len(tokenizer),
        head_dim=8,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        max_position_embeddings=1024,
    )
    LlamaForCausalLM(cfg).save_pretrained(folder)
    return folder


def run_args(ckpt, data, out, *flags: str) -> list[str]:
    """``evaluate run`` of the checkpoint on the data into ``out``, with more flags."""
    return ["run", "--ckpt", str(ckpt), "--data", str(data), "--out", str(out), *flags]


def test_run_writes_predictions_metrics_and_paper_table(capsys, tmp_path, ckpt) -> None:
    data = write_original_layout(tmp_path / "rolebench")
    raw = write_jsonl(
        tmp_path / "raw_en.jsonl",
        [
            {"role": "-", "question": f"Describe rain number {i}.", "generated": [f"Rain {i} is water."]}
            for i in range(2)
        ],
    )
    out = tmp_path / "out"
    generation = ["--name", "TinyLlama", "--max-new-tokens", "6", "--batch-size", "8"]
    rc = main(run_args(ckpt, data, out, *generation, "--raw-ref-en", str(raw)))
    captured = capsys.readouterr()
    printed = captured.out
    assert rc == 0, captured.err
    metrics = json.loads((out / "metrics.json").read_text())
    table = (out / "results.md").read_text()
    assert printed == table
    assert "| model | CUS | RAW | SPE | avg |" in table and "| TinyLlama |" in table

    ig_en = metrics["settings"]["instruction_generalization_en"]
    assert ig_en["CUS"]["rows"] == 6 and ig_en["SPE"]["rows"] == 6
    assert ig_en["RAW"]["rows"] == 4  # the two raw questions, asked to both roles
    assert ig_en["avg"] == pytest.approx((ig_en["CUS"]["score"] + ig_en["RAW"]["score"] + ig_en["SPE"]["score"]) / 3)
    zh = metrics["settings"]["instruction_generalization_zh"]
    assert zh["CUS"]["lang"] == "zh" and "RAW" not in zh and zh["SPE"]["rows"] == 3
    role_gen = metrics["settings"]["role_generalization_en"]
    assert (
        role_gen["CUS"]["rows"] == 3 and role_gen["RAW"]["rows"] == 2 and "SPE" not in role_gen and role_gen["missing"]
    )
    assert "| TinyLlama | " + f"{zh['CUS']['score']:.4f} | - | {zh['SPE']['score']:.4f} |" in table

    predictions = out / "predictions/instruction_generalization_en-general.jsonl"
    rows = [json.loads(line) for line in predictions.read_text().splitlines()]
    assert len(rows) == 6 and all(len(r["generated"]) == 1 for r in rows)
    assert any(r["generated"][0] for r in rows)  # the model did answer (random weights: nonsense)
    # The written predictions score the same through `evaluate score`.
    ref = data / "rolebench-eng/instruction-generalization/general/test.jsonl"
    assert main(["score", "--pred", str(predictions), "--ref", str(ref)]) == 0
    assert json.loads(capsys.readouterr().out)["score"] == pytest.approx(ig_en["CUS"]["score"])

    # `table` merges runs into one table, one row per model.
    other = dict(metrics, model="Other")
    (tmp_path / "other.json").write_text(json.dumps(other))
    assert main(["table", str(out / "metrics.json"), str(tmp_path / "other.json")]) == 0
    merged = capsys.readouterr().out
    assert merged.count("| TinyLlama |") == 3 and merged.count("| Other |") == 3


def test_run_missing_description_is_one_line_error(capsys, tmp_path, ckpt) -> None:
    data = write_original_layout(tmp_path / "rolebench")
    (data / "profiles-eng/desc.json").write_text(json.dumps({"Captain Vale": "x"}))
    rc = main(run_args(ckpt, data, tmp_path / "o", "--split", "instruction_generalization_en", "--max-new-tokens", "2"))
    err = capsys.readouterr().err.strip()
    assert rc == 1 and len(err.splitlines()) == 1 and "'Doctor Moss' has no description" in err


def test_repeated_split_flags_add_up(capsys, tmp_path, ckpt) -> None:
    data = write_original_layout(tmp_path / "rolebench")
    out = tmp_path / "out"
    ig, rg = "instruction_generalization_en", "role_generalization_en"
    splits = ["--split", ig, "--split", rg, ig]
    rc = main(run_args(ckpt, data, out, "--max-new-tokens", "2", "--max-rows", "1", *splits))
    assert rc == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics["settings"]) == [
        "instruction_generalization_en",
        "role_generalization_en",
    ]  # once each, in order
    # a second evaluation into the same folder: refused, or with --overwrite no earlier prediction is left
    again = run_args(ckpt, data, out, "--max-new-tokens", "2", "--max-rows", "1", "--split", "role_generalization_en")
    assert main(again) == 1 and "already holds an evaluation" in capsys.readouterr().err
    assert main([*again, "--overwrite"]) == 0
    assert {p.name.split("-")[0] for p in (out / "predictions").iterdir()} == {"role_generalization_en"}


@pytest.mark.parametrize(
    "content,why",
    [
        ("[1, 2]", "expected an object with 'model' and 'settings'"),
        ('{"model": "x"}', "expected an object with 'model' and 'settings'"),
        (
            '{"model": "x", "settings": {"role_generalization_en": {"CUS": "oops"}}}',
            "settings.role_generalization_en.CUS has no numeric 'score'",
        ),
    ],
)
def test_table_of_a_wrong_json_is_one_line_error(capsys, tmp_path, content, why) -> None:
    path = tmp_path / "metrics.json"
    path.write_text(content)
    assert main(["table", str(path)]) == 1
    assert capsys.readouterr().err.strip() == f"error: {path}: not a metrics.json of `evaluate run` ({why})"


def test_nothing_to_score_or_judge_is_an_error(capsys, tmp_path) -> None:
    ref = write_jsonl(tmp_path / "ref.jsonl", [{"role": "A", "question": "q", "generated": ["a"]}])
    other = write_jsonl(tmp_path / "other.jsonl", [{"role": "B", "question": "q", "generated": ["a"]}])
    assert main(["score", "--pred", str(other), "--ref", str(ref)]) == 1
    assert "no prediction row matches a reference row" in capsys.readouterr().err  # a 0.0 over nothing is no result
    profiles = tmp_path / "desc.json"
    profiles.write_text(json.dumps({"A": "a", "B": "b"}))
    rc = main(
        [
            "judge",
            "--pred",
            f"x={ref}",
            "--pred",
            f"y={other}",
            "--profiles",
            str(profiles),
            "--model",
            "m",
            "--journal",
            str(tmp_path / "j.sqlite"),
            "--out",
            str(tmp_path / "judge"),
            "--offline",
        ]
    )
    assert rc == 1 and "no question is answered in every --pred file (x: 1 rows, y: 1 rows)" in capsys.readouterr().err
    assert not (tmp_path / "judge").exists()


def test_default_settings_are_those_the_data_has(capsys, tmp_path, ckpt, caplog) -> None:
    import shutil

    data = write_original_layout(tmp_path / "rolebench")
    shutil.rmtree(data / "rolebench-zh")
    shutil.rmtree(data / "profiles-zh")  # English only, like a data_gen shard set
    out = tmp_path / "out"
    rc = main(run_args(ckpt, data, out, "--max-new-tokens", "2", "--max-rows", "1"))
    assert rc == 0, capsys.readouterr().err
    assert list(json.loads((out / "metrics.json").read_text())["settings"]) == [
        "instruction_generalization_en",
        "role_generalization_en",
    ]
    assert "no zh profiles" in caplog.text
    rc = main(run_args(ckpt, data, out, "--split", "instruction_generalization_zh", "--overwrite"))
    assert rc == 1 and "profiles-zh" in capsys.readouterr().err  # asked for explicitly: an error


def test_bad_run_flags_are_one_line_errors(capsys, tmp_path) -> None:
    a_file = tmp_path / "taken"
    a_file.write_text("")
    assert main(["run", "--ckpt", "x", "--data", "y", "--out", str(a_file)]) == 1
    assert capsys.readouterr().err.strip() == f"error: --out {a_file}: is a file, not a folder"
    for flag, value in (("--max-rows", "0"), ("--dtype", "float17")):
        with pytest.raises(SystemExit) as stop:  # argparse: usage line plus the reason, no traceback
            main(["run", "--ckpt", "x", "--data", "y", "--out", str(tmp_path / "o"), flag, value])
        assert stop.value.code == 2 and f"argument {flag}:" in capsys.readouterr().err


def test_a_run_with_no_test_rows_is_an_error_not_an_empty_table(capsys, tmp_path, ckpt) -> None:
    data = write_original_layout(tmp_path / "rolebench")
    for path in (data / "rolebench-eng/instruction-generalization").rglob("test.jsonl"):
        path.unlink()  # profiles but no test split: each kind is skipped with a warning
    rc = main(run_args(ckpt, data, tmp_path / "o", "--split", "instruction_generalization_en", "--max-new-tokens", "2"))
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert rc == 1 and err.startswith("error: ") and "no test rows to evaluate" in err
    assert not (tmp_path / "o" / "metrics.json").exists()


def test_length_and_ngram_options_reach_generation(capsys, tmp_path, ckpt) -> None:
    data = write_original_layout(tmp_path / "rolebench")
    out = tmp_path / "out"
    split = ["--split", "instruction_generalization_en", "--max-rows", "2", "--max-new-tokens", "6", "--no-progress"]
    rc = main(run_args(ckpt, data, out, *split, "--min-new-tokens", "6", "--no-repeat-ngram-size", "2"))
    assert rc == 0, capsys.readouterr().err
    sampling = json.loads((out / "metrics.json").read_text())["sampling"]
    assert sampling["min_new_tokens"] == 6 and sampling["no_repeat_ngram_size"] == 2
    bad = run_args(ckpt, data, tmp_path / "o", *split, "--min-new-tokens", "7")
    assert main(bad) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "min_new_tokens=7: must be in [0, max_new_tokens=6]" in err
