"""Build the CPU recipe's data folder from the team's RoleBench sample, read at run time.

    python launch/recipes/rolebench_sample_data.py runs/rolebench-sample [--sample ../shared/rolebench-sample]
        [--test-per-role 8] [--eng-train-per-role 30]

The sample (real RoleBench rows, never copied into this repository) has no role profiles, so the
folder gets ``profiles-{zh,eng}/desc.json`` from ``rolebench_sample_desc.json`` next to this script
(short descriptions we wrote ourselves). The folder is in RoleBench's own layout, so training
(``data.source``) and ``evaluate run --data`` read it as-is:

- zh ``general`` and ``role_specific`` train rows: training, linked to the sample as they are;
- zh test rows of both kinds (CUS and SPE of ``instruction_generalization_zh``): the first
  ``--test-per-role`` rows of every role, so that each of the five roles is scored (the test files
  list their roles one after another; the first rows alone would all be one role's);
- English role-specific rows: the sample has only a test split, so each role's first
  ``--eng-train-per-role`` rows become the English train split and the first ``--test-per-role``
  of the rest are its test rows (SPE of ``instruction_generalization_en``): held out from training,
  the same roles. The sample has no English general rows: English CUS is not measured.

The subsets are written as files (atomically, inside the output folder); the train rows of zh are
symbolic links into the sample.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from data_gen.errors import UserError, run_cli
from data_gen.files import read_jsonl, write_json, write_jsonl

HERE = Path(__file__).resolve().parent
DESCRIPTIONS = HERE / "rolebench_sample_desc.json"
DEFAULT_SAMPLE = HERE.parents[1].parent / "shared" / "rolebench-sample"  # ../shared from the repository
ZH_TRAIN = ("rolebench-zh/general/train.jsonl", "rolebench-zh/role_specific/train.jsonl")
ZH_TEST = ("rolebench-zh/general/test.jsonl", "rolebench-zh/role_specific/test.jsonl")
ENG = "rolebench-eng/instruction-generalization/role_specific/test.jsonl"
ENG_TRAIN = "rolebench-eng/instruction-generalization/role_specific/train.jsonl"
FILES = (*ZH_TRAIN, *ZH_TEST, ENG)


class SampleError(UserError, ValueError):
    """The sample folder lacks a file the recipe needs, or a role has no description."""


def by_role(rows: list[dict]) -> dict[str, list[dict]]:
    """Rows grouped by role, roles and rows in file order."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["role"], []).append(row)
    return groups


def build(sample: Path, out: Path, test_per_role: int = 8, eng_train_per_role: int = 30) -> Path:
    descriptions = json.loads(DESCRIPTIONS.read_text(encoding="utf-8"))
    rows = {}
    for name in FILES:
        source = (sample / name).resolve()
        if not source.is_file():
            raise SampleError(f"{sample / name}: not found (the RoleBench sample; --sample points at it)")
        rows[name] = read_jsonl(source)
        lang = "zh" if name.startswith("rolebench-zh") else "eng"
        missing = sorted({r["role"] for r in rows[name]} - descriptions[lang].keys())
        if missing:
            raise SampleError(f"{DESCRIPTIONS}: {lang}: role {missing[0]!r} of {source} has no description")
    for name in ZH_TRAIN:
        link = out / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.unlink(missing_ok=True)
        link.symlink_to((sample / name).resolve())
    for name in ZH_TEST:
        write_jsonl(out / name, [r for group in by_role(rows[name]).values() for r in group[:test_per_role]])
    eng = by_role(rows[ENG])
    short = sorted(role for role, group in eng.items() if len(group) <= eng_train_per_role)
    if short:
        raise SampleError(f"{sample / ENG}: role {short[0]!r} has no rows left to test after {eng_train_per_role}")
    write_jsonl(out / ENG_TRAIN, [r for group in eng.values() for r in group[:eng_train_per_role]])
    held_out = [r for group in eng.values() for r in group[eng_train_per_role:][:test_per_role]]
    write_jsonl(out / ENG, held_out)
    for lang, table in descriptions.items():
        write_json(out / f"profiles-{lang}" / "desc.json", table)
    return out


def _main(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="folder to write (RoleBench's original layout)")
    parser.add_argument("--sample", default=str(DEFAULT_SAMPLE), help="the RoleBench sample folder")
    parser.add_argument("--test-per-role", type=int, default=8, help="test rows scored per role and kind")
    parser.add_argument("--eng-train-per-role", type=int, default=30, help="English rows per role trained on")
    args = parser.parse_args(argv)
    if args.test_per_role < 1 or args.eng_train_per_role < 0:
        raise SampleError("--test-per-role must be >= 1 and --eng-train-per-role >= 0")
    print(f"wrote {build(Path(args.sample), Path(args.out), args.test_per_role, args.eng_train_per_role)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(lambda: _main(argv))


if __name__ == "__main__":
    sys.exit(main())
