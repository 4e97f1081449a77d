"""Build the CPU recipe's data folder from the team's RoleBench sample, read at run time.

    python launch/recipes/rolebench_sample_data.py runs/rolebench-sample [--sample ../shared/rolebench-sample]

The sample (real RoleBench rows, never copied into this repository) has no role profiles, so the
folder gets ``profiles-{zh,eng}/desc.json`` from ``rolebench_sample_desc.json`` next to this script
(short descriptions we wrote ourselves). The rows are symbolic links into the sample, in RoleBench's
own layout, so training (``data.source``) and ``evaluate run --data`` read the folder as-is:

- zh ``general`` and ``role_specific`` train rows: training (``data.lang: zh``);
- zh test rows of both kinds: CUS and SPE of ``instruction_generalization_zh``;
- English role-specific test rows: SPE of ``instruction_generalization_en``, English was never
  trained on (held out; its general split is absent, so ``evaluate run`` reports it as missing).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from data_gen.errors import UserError, run_cli
from data_gen.files import write_json

HERE = Path(__file__).resolve().parent
DESCRIPTIONS = HERE / "rolebench_sample_desc.json"
DEFAULT_SAMPLE = HERE.parents[1].parent / "shared" / "rolebench-sample"  # ../shared from the repository
FILES = (
    "rolebench-zh/general/train.jsonl",
    "rolebench-zh/general/test.jsonl",
    "rolebench-zh/role_specific/train.jsonl",
    "rolebench-zh/role_specific/test.jsonl",
    "rolebench-eng/instruction-generalization/role_specific/test.jsonl",
)


class SampleError(UserError, ValueError):
    """The sample folder lacks a file the recipe needs, or a role has no description."""


def roles_of(path: Path) -> set[str]:
    return {json.loads(line)["role"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}


def build(sample: Path, out: Path) -> Path:
    descriptions = json.loads(DESCRIPTIONS.read_text(encoding="utf-8"))
    for name in FILES:
        source = (sample / name).resolve()
        if not source.is_file():
            raise SampleError(f"{sample / name}: not found (the RoleBench sample; --sample points at it)")
        lang = "zh" if name.startswith("rolebench-zh") else "eng"
        missing = sorted(roles_of(source) - descriptions[lang].keys())
        if missing:
            raise SampleError(f"{DESCRIPTIONS}: {lang}: role {missing[0]!r} of {source} has no description")
        link = out / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.unlink(missing_ok=True)
        link.symlink_to(source)
    for lang, table in descriptions.items():
        write_json(out / f"profiles-{lang}" / "desc.json", table)
    return out


def _main(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="folder to write (RoleBench's original layout)")
    parser.add_argument("--sample", default=str(DEFAULT_SAMPLE), help="the RoleBench sample folder")
    args = parser.parse_args(argv)
    print(f"wrote {build(Path(args.sample), Path(args.out))}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run_cli(lambda: _main(argv))


if __name__ == "__main__":
    sys.exit(main())
