"""The results of `evaluate run`: the paper's table of CUS / RAW / SPE / avg, and reading runs back
(``evaluate table`` puts several runs' metrics.json in one table)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from data_gen.rolebench import RoleBenchError

# setting name -> (RoleBench language, RoleBench setting, metrics language)
SETTINGS: dict[str, tuple[str, str, str]] = {
    "instruction_generalization_en": ("eng", "instruction_generalization", "en"),
    "instruction_generalization_zh": ("zh", "instruction_generalization", "zh"),
    "role_generalization_en": ("eng", "role_generalization", "en"),
}
COLUMNS = ("CUS", "RAW", "SPE")


def markdown_table(metrics: Sequence[dict[str, Any]]) -> str:
    """The paper's layout: one table per setting, rows = models, columns CUS, RAW, SPE, avg."""
    lines = []
    settings = [s for s in SETTINGS if any(s in m["settings"] for m in metrics)]
    for setting in settings:
        lines += [f"### {setting}", "", "| model | CUS | RAW | SPE | avg |", "|---|---|---|---|---|"]
        for m in metrics:
            entry = m["settings"].get(setting)
            if entry is None:
                continue
            cells = [f"{entry[c]['score']:.4f}" if c in entry else "-" for c in COLUMNS]
            avg = f"{entry['avg']:.4f}" if entry.get("avg") is not None else "-"
            if entry.get("avg") is not None and entry.get("avg_of", list(COLUMNS)) != list(COLUMNS):
                avg += f" ({'+'.join(entry['avg_of'])})"  # e.g. no RAW: the mean of CUS and SPE only
            lines.append(f"| {m['model']} | " + " | ".join(cells) + f" | {avg} |")
        lines.append("")
    mode = metrics[0].get("mode", "paper") if metrics else "paper"
    refs = metrics[0].get("refs", "max") if metrics else "max"
    what = "recall of the `rouge` package, as in the paper" if mode == "paper" else "F1 of rouge_score"
    lines.append(f"Rouge-L ({what}; refs={refs}).")
    return "\n".join(lines) + "\n"


def read_run_metrics(paths: Sequence[str]) -> list[dict[str, Any]]:
    """The metrics.json of each `evaluate run` (its file or its --out folder), checked."""
    metrics = []
    for path in paths:
        if Path(path).is_dir():  # an `evaluate run` --out folder
            if not (Path(path) / "metrics.json").is_file():
                raise RoleBenchError(f"{path}: no metrics.json in this folder (give an `evaluate run` --out folder)")
            path = str(Path(path) / "metrics.json")
        try:
            metrics.append(_checked_metrics(json.loads(Path(path).read_text(encoding="utf-8")), path))
        except (OSError, json.JSONDecodeError) as e:
            raise RoleBenchError(f"{path}: cannot read metrics JSON ({e})") from None
    return metrics


def _checked_metrics(obj: Any, path: str) -> dict[str, Any]:
    """What markdown_table reads of a metrics.json written by `evaluate run`, or a one-line error."""

    def bad(why: str) -> RoleBenchError:
        return RoleBenchError(f"{path}: not a metrics.json of `evaluate run` ({why})")

    if not isinstance(obj, dict) or not isinstance(obj.get("model"), str) or not isinstance(obj.get("settings"), dict):
        raise bad("expected an object with 'model' and 'settings'")
    for setting, entry in obj["settings"].items():
        if not isinstance(entry, dict):
            raise bad(f"settings.{setting} is not an object")
        for column in (c for c in COLUMNS if c in entry):
            cell = entry[column]
            if not (isinstance(cell, dict) and isinstance(cell.get("score"), (int, float))):
                raise bad(f"settings.{setting}.{column} has no numeric 'score'")
        if entry.get("avg") is not None and not isinstance(entry["avg"], (int, float)):
            raise bad(f"settings.{setting}.avg is not a number")
    return obj
