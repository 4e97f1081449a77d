"""Issue 16, item 6: `evaluate run` shows a progress bar per setting and kind (rows done / total,
generated tokens/s, ETA), as training does; --no-progress leaves logs clean."""

from __future__ import annotations

from rolellm_jax.evaluate import main
from tests.evaluation.test_evaluate_run import ckpt  # noqa: F401 - the tiny HF checkpoint fixture
from tests.helpers.rolebench_fixtures import write_original_layout


def _run(ckpt, data, out, *extra: str) -> int:  # noqa: F811
    args = ["run", "--ckpt", str(ckpt), "--data", str(data), "--out", str(out), "--max-new-tokens", "4"]
    return main([*args, "--split", "instruction_generalization_en", "--batch-size", "4", *extra])


def test_run_draws_a_bar_per_setting_and_kind(capsys, tmp_path, ckpt):  # noqa: F811
    data = write_original_layout(tmp_path / "rolebench")
    assert _run(ckpt, data, tmp_path / "out") == 0
    err = capsys.readouterr().err
    for kind in ("general", "role_specific"):
        final = [
            line for line in err.replace("\r", "\n").splitlines() if f"instruction_generalization_en/{kind}" in line
        ]
        assert final and "6/6" in final[-1] and "tok/s" in final[-1] and "row" in final[-1], err
    assert _run(ckpt, data, tmp_path / "quiet", "--no-progress") == 0
    quiet = capsys.readouterr().err
    assert "instruction_generalization_en/" not in quiet and "tok/s" not in quiet


def test_generate_reports_each_batch(ckpt):  # noqa: F811
    import rolellm_jax
    from rolellm_jax.inference.generate import SamplingConfig

    model, _ = rolellm_jax.load_model(ckpt, dtype="float32")
    seen: list[tuple[int, int]] = []
    prompts = [[1, 5, 6], [1, 7], [1, 8, 9, 10], [1, 11, 12], [1, 13]]
    outputs = rolellm_jax.generate(
        model, prompts, SamplingConfig(max_new_tokens=3), batch_size=2, on_batch=lambda *a: seen.append(a)
    )
    assert [rows for rows, _ in seen] == [2, 2, 1]
    assert sum(tokens for _, tokens in seen) == sum(len(o) for o in outputs)
