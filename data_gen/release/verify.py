"""Verify a built release folder against its manifest and the RoleBench split rules.

Problems (each one line): checksum or row count differing from manifest.json, a shard that is
missing, unreadable or not listed, a schema that is not the config's, `type` not aligned with
`generated`, a (role, question) pair in both train and a test split of a config, a held-out role
of role generalisation in a train split, README/CHANGELOG changed after the build. Instruction
overlap between splits is reported, not a failure (general instructions are shared across roles).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from datasets import Features

from data_gen.files import sha256_file
from data_gen.release.layout import SEMVER, features_for
from data_gen.rolebench import EVAL_SPLITS


@dataclass
class VerifyReport:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _read_front_matter(readme: Path) -> dict[str, Any] | None:
    text = readme.read_text(encoding="utf-8")
    if not text.startswith("---\n"):
        return None
    end = text.find("\n---", 4)
    return yaml.safe_load(text[4:end]) if end > 0 else None


def verify_release(out: Path) -> VerifyReport:
    """Check everything checkable offline; never raises on a bad release, it reports."""
    out = Path(out)
    report = VerifyReport()
    manifest_path = out / "manifest.json"
    if not manifest_path.is_file():
        report.problems.append(f"{manifest_path}: missing")
        return report
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        report.problems.append(f"{manifest_path}:{err.lineno}: not valid JSON ({err.msg})")
        return report
    if not SEMVER.match(str(manifest.get("version", ""))):
        report.problems.append(f"{manifest_path}: version {manifest.get('version')!r} is not semver X.Y.Z")

    for name, digest in manifest.get("docs", {}).items():
        path = out / name
        if not path.is_file():
            report.problems.append(f"{path}: missing")
        elif sha256_file(path) != digest:
            report.problems.append(f"{path}: sha256 differs from manifest.json (edited after the build)")

    listed = set()
    tables: dict[str, dict[str, Any]] = {}
    for config, info in manifest.get("configs", {}).items():
        expected = features_for(config)
        for split, split_info in info["splits"].items():
            columns: dict[str, list] = {}
            total = 0
            for shard in split_info["shards"]:
                path = out / shard["path"]
                listed.add(shard["path"])
                if not path.is_file():
                    report.problems.append(f"{path}: shard missing")
                    continue
                if sha256_file(path) != shard["sha256"]:
                    report.problems.append(f"{path}: sha256 differs from manifest.json")
                try:  # decoding every value too: a flipped byte can leave the footer intact
                    table = pq.read_table(path)
                    values = {name: table.column(name).to_pylist() for name in table.column_names}
                except Exception as err:  # a corrupt shard: report and go on
                    report.problems.append(f"{path}: unreadable parquet ({type(err).__name__}: {err})".splitlines()[0])
                    continue
                if table.num_rows != shard["rows"]:
                    report.problems.append(f"{path}: {table.num_rows} rows, manifest.json says {shard['rows']}")
                if not _schema_matches(table.schema, expected):
                    report.problems.append(f"{path}: schema is not the {config} schema ({table.schema.names})")
                    continue
                total += table.num_rows
                for name, column in values.items():
                    columns.setdefault(name, []).extend(column)
            if total != split_info["rows"]:
                report.problems.append(
                    f"{config}/{split}: {total} rows readable, manifest.json says {split_info['rows']}"
                )
            tables.setdefault(config, {})[split] = columns
            if "type" in columns:
                for i, (gen, types) in enumerate(zip(columns["generated"], columns["type"])):
                    if len(gen) != len(types):
                        report.problems.append(
                            f"{config}/{split} row {i}: type has {len(types)} items, generated {len(gen)}"
                        )
                        break

    data_dir = out / "data"
    if data_dir.is_dir():
        for path in sorted(data_dir.rglob("*.parquet")):
            rel = path.relative_to(out).as_posix()
            if rel not in listed:
                report.problems.append(f"{path}: shard not listed in manifest.json")

    readme = out / "README.md"
    if readme.is_file():
        try:
            meta = _read_front_matter(readme) or {}
        except yaml.YAMLError as err:
            report.problems.append(f"{readme}: front matter is not valid YAML ({type(err).__name__})")
            meta = {}
        declared = {
            (c["config_name"], f["split"]): sorted(f["path"] if isinstance(f["path"], list) else [f["path"]])
            for c in meta.get("configs", [])
            for f in c.get("data_files", [])
        }
        built = {
            (config, split): sorted(s["path"] for s in info["shards"])
            for config, cinfo in manifest.get("configs", {}).items()
            for split, info in cinfo["splits"].items()
        }
        if declared != built:
            report.problems.append(f"{readme}: configs in the front matter do not match manifest.json")

    _check_splits(tables, report)
    return report


def _schema_matches(schema: pa.Schema, expected: Features) -> bool:
    """Same column names, order and types (parquet renames list items) and the same HF features."""
    try:
        stored = Features.from_arrow_schema(schema)
    except Exception:
        return False
    types_match = schema.names == list(expected) and all(
        schema.field(name).type.equals(expected.arrow_schema.field(name).type, check_metadata=False)
        for name in expected
    )
    return types_match and stored == expected


def _pairs(columns: dict[str, list]) -> set[tuple[str, str]]:
    # questions compared stripped: the original English files prefix questions with a space
    return {(r, q.strip()) for r, q in zip(columns.get("role", []), columns.get("question", []))}


def _check_splits(tables: dict[str, dict[str, Any]], report: VerifyReport) -> None:
    held_out: set[str] = set()
    trained: dict[str, set[str]] = {}
    for config, splits in tables.items():
        if "question" not in splits.get("train", splits.get("test", {})):
            continue  # profiles / dialogues
        train = splits.get("train")
        for split in EVAL_SPLITS:
            other = splits.get(split)
            if train is None or other is None:
                continue
            leaks = sorted(_pairs(train) & _pairs(other))
            for role, question in leaks[:5]:
                report.problems.append(f"{config}: ({role!r}, {question[:60]!r}) is in both train and {split}")
            if len(leaks) > 5:
                report.problems.append(
                    f"{config}: {len(leaks) - 5} more (role, question) pairs in both train and {split}"
                )
            shared = {q.strip() for q in train["question"]} & {q.strip() for q in other["question"]}
            report.notes.append(
                f"{config}: {len(shared)} of {len({q.strip() for q in other['question']})} {split} instructions also in train"
            )
        if "role_generalization" in config:
            held_out |= {r for s in EVAL_SPLITS if s in splits for r in splits[s]["role"]}
            if train is not None:
                trained[config] = set(train["role"])
    for config, roles in trained.items():
        for role in sorted(roles & held_out):
            report.problems.append(f"{config}: held-out role {role!r} appears in train")
