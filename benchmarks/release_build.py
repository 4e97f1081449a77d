"""Benchmark: build a full-size RoleBench release (~170k rows) vs the obvious alternative.

Generates rows of realistic length in the original layout (questions ~25 words, answers ~30
words, 5 references per general row, role-specific `type` as a string in train and a list in
test), then times, in one run on the same files:
  ours      data_gen.release build_release (validation, explicit features, deterministic shards,
            manifest with sha256, dataset card)
  baseline  datasets.Dataset.from_json(file).to_parquet(...) per file (no validation, no card;
            it also cannot give one schema per config: `type` stays string in train, list in test)
and reports how long `verify` takes on our build (checksums, schema, leak checks).

    python benchmarks/release_build.py [--rows 170000]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import datasets  # noqa: E402

from data_gen.release.build import build_release  # noqa: E402
from data_gen.release.verify import verify_release  # noqa: E402

WORDS = np.array(
    "the a of and to in is you that it he was for on are as with his they at be this have from or one had by word "
    "but not what all were we when your can said there use an each which she do how their if will up other about "
    "out many then them these so some her would make like him into time has look two more write go see number no "
    "way could people my than first water been call who oil its now find long down day did get come made may part "
    "sea ship whale detective prince knight castle sword letter garden river crown ghost treasure storm".split()
)


def sentence(rng: np.random.Generator, words: int) -> str:
    return " ".join(WORDS[rng.integers(0, len(WORDS), words)]).capitalize() + "."


def write_file(
    path: Path, rows: int, rng: np.random.Generator, *, refs: int, type_mode: str | None, roles: int
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(rows):
            row = {
                "role": f"Role {i % roles}",
                "question": f" {sentence(rng, int(rng.integers(15, 36)))} #{i}",
                "generated": [" " + sentence(rng, int(rng.integers(20, 41))) for _ in range(refs)],
            }
            if type_mode == "str":
                row["type"] = "script_based" if i % 3 else "script_agnostic"
            elif type_mode == "list":
                row["type"] = ["script_based"] * refs
            f.write(json.dumps(row) + "\n")


def make_source(root: Path, total: int) -> dict[str, int]:
    """RoleBench proportions: general ~88%, role-specific ~12%; test ~ 5%."""
    rng = np.random.default_rng(0)
    plan = {
        "rolebench-eng/instruction-generalization/general/train.jsonl": (0.80, 5, None),
        "rolebench-eng/instruction-generalization/general/test.jsonl": (0.04, 5, None),
        "rolebench-eng/instruction-generalization/general/rolegpt_baseline.jsonl": (0.04, 1, None),
        "rolebench-eng/instruction-generalization/role_specific/train.jsonl": (0.08, 1, "str"),
        "rolebench-eng/instruction-generalization/role_specific/test.jsonl": (0.02, 1, "list"),
        "rolebench-eng/instruction-generalization/role_specific/rolegpt_baseline.jsonl": (0.02, 1, None),
    }
    counts = {}
    for rel, (share, refs, type_mode) in plan.items():
        counts[rel] = int(total * share)
        write_file(root / rel, counts[rel], rng, refs=refs, type_mode=type_mode, roles=95)
    return counts


def baseline(source: Path, out: Path, cache: Path) -> None:
    for path in sorted(source.rglob("*.jsonl")):
        rel = path.relative_to(source).with_suffix(".parquet")
        target = out / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        datasets.Dataset.from_json(str(path), cache_dir=str(cache)).to_parquet(str(target))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=170_000)
    args = parser.parse_args()
    datasets.disable_progress_bars()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        counts = make_source(tmp / "src", args.rows)
        size = sum(p.stat().st_size for p in (tmp / "src").rglob("*.jsonl"))
        print(
            f"source: {sum(counts.values())} rows, {size / 1e6:.0f} MB jsonl "
            f"(generated in {time.perf_counter() - t0:.1f} s)"
        )
        results = {}
        t0 = time.perf_counter()
        build_release(tmp / "src", "1.0.0", tmp / "ours")
        results["ours: data_gen.release build"] = (time.perf_counter() - t0, tmp / "ours")
        t0 = time.perf_counter()
        baseline(tmp / "src", tmp / "baseline", tmp / "cache")
        results["baseline: Dataset.from_json + to_parquet"] = (time.perf_counter() - t0, tmp / "baseline")
        t0 = time.perf_counter()
        report = verify_release(tmp / "ours")
        verify_s = time.perf_counter() - t0
        rows = sum(counts.values())
        print(f"verify of our build: {verify_s:.1f} s ({'OK' if report.ok else report.problems[:3]})")
        print(f"{'tool':45s} {'seconds':>8s} {'rows/s':>9s} {'parquet MB':>10s}")
        for name, (seconds, out) in results.items():
            mb = sum(p.stat().st_size for p in out.rglob("*.parquet")) / 1e6
            print(f"{name:45s} {seconds:8.1f} {rows / seconds:9.0f} {mb:10.1f}")


if __name__ == "__main__":
    main()
