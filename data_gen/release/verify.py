"""Verify a built release folder against its manifest and the RoleBench split rules.

Problems (each one line): checksum or row count differing from manifest.json, a shard that is
missing, unreadable or not listed, a schema that is not the config's, `type` not aligned with
`generated`, a 0-row shard, a config split `datasets.load_dataset` cannot read, a (role, question)
pair in both train and test of a config, a held-out role of role generalisation in a train split, a
role without a description in its language's profiles config, README/CHANGELOG changed after the
build. Every shard of every split gets the same checks. Instruction overlap between train and the
other splits is reported, not a failure (general instructions are shared across roles, and the
published zh-general rolegpt_baseline answers train questions too).
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

from data_gen.files import json_error, sha256_file
from data_gen.release import checks
from data_gen.release.layout import SEMVER, features_for


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
    manifest = _read_manifest(out / "manifest.json", report)
    if manifest is None:
        return report
    _check_docs(out, manifest, report)
    listed: set[str] = set()
    tables: dict[str, dict[str, Any]] = {}
    for config, info in manifest.get("configs", {}).items():
        for split, split_info in info["splits"].items():
            columns = _read_split(out, config, split, split_info, listed, report)
            if columns is not None:  # every shard read with the config's schema: only then are its rows checked
                tables.setdefault(config, {})[split] = columns
                _check_type_alignment(config, split, columns, report)
    _check_unlisted_shards(out, listed, report)
    _check_card(out, manifest, report)
    _check_splits(tables, report)
    unreadable = {config for config in manifest.get("configs", {}) if config not in tables}
    report.problems.extend(checks.undescribed_roles(tables, unreadable))
    return report


def _read_manifest(path: Path, report: VerifyReport) -> dict[str, Any] | None:
    if not path.is_file():
        report.problems.append(f"{path}: missing")
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        report.problems.append(json_error(path, err))
        return None
    if not SEMVER.match(str(manifest.get("version", ""))):
        report.problems.append(f"{path}: version {manifest.get('version')!r} is not semver X.Y.Z")
    return manifest


def _check_docs(out: Path, manifest: dict[str, Any], report: VerifyReport) -> None:
    for name, digest in manifest.get("docs", {}).items():
        path = out / name
        if not path.is_file():
            report.problems.append(f"{path}: missing")
        elif sha256_file(path) != digest:
            report.problems.append(f"{path}: sha256 differs from manifest.json (edited after the build)")


def _read_split(
    out: Path, config: str, split: str, split_info: dict[str, Any], listed: set[str], report: VerifyReport
) -> dict[str, list] | None:
    """The columns of one config split, its shards checked alike; None when one cannot be read."""
    expected = features_for(config)
    columns: dict[str, list] = {}
    total, complete = 0, True
    for shard in split_info["shards"]:
        listed.add(shard["path"])
        table_columns = _read_shard(out / shard["path"], config, shard, expected, report)
        if table_columns is None:
            complete = False
            continue
        for name, column in table_columns.items():
            columns.setdefault(name, []).extend(column)
        total += len(next(iter(table_columns.values()), []))
    if total != split_info["rows"]:
        report.problems.append(f"{config}/{split}: {total} rows readable, manifest.json says {split_info['rows']}")
    return columns if complete else None


def _read_shard(
    path: Path, config: str, shard: dict[str, Any], expected: Features, report: VerifyReport
) -> dict[str, list] | None:
    if not path.is_file():
        report.problems.append(f"{path}: shard missing")
        return None
    if sha256_file(path) != shard["sha256"]:
        report.problems.append(f"{path}: sha256 differs from manifest.json")
    try:  # decoding every value too: a flipped byte can leave the footer intact
        table = pq.read_table(path)
        values = {name: table.column(name).to_pylist() for name in table.column_names}
    except Exception as err:  # a corrupt shard: report and go on
        report.problems.append(f"{path}: unreadable parquet ({type(err).__name__}: {err})".splitlines()[0])
        return None
    if table.num_rows != shard["rows"]:
        report.problems.append(f"{path}: {table.num_rows} rows, manifest.json says {shard['rows']}")
    if not table.num_rows:
        report.problems.append(f"{path}: 0 rows (load_dataset cannot read an empty parquet shard)")
    if not _schema_matches(table.schema, expected):
        report.problems.append(f"{path}: schema is not the {config} schema ({table.schema.names})")
        return None
    return values


def _check_type_alignment(config: str, split: str, columns: dict[str, list], report: VerifyReport) -> None:
    if "type" not in columns:
        return
    for i, (gen, types) in enumerate(zip(columns["generated"], columns["type"])):
        if len(gen) != len(types):
            report.problems.append(f"{config}/{split} row {i}: type has {len(types)} items, generated {len(gen)}")
            return


def _check_unlisted_shards(out: Path, listed: set[str], report: VerifyReport) -> None:
    data_dir = out / "data"
    if data_dir.is_dir():
        for path in sorted(data_dir.rglob("*.parquet")):
            if path.relative_to(out).as_posix() not in listed:
                report.problems.append(f"{path}: shard not listed in manifest.json")


def _check_card(out: Path, manifest: dict[str, Any], report: VerifyReport) -> None:
    """The card's front matter declares the manifest's shards, and load_dataset reads what it declares."""
    readme = out / "README.md"
    if not readme.is_file():
        return
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
    else:
        _check_loads(out, declared, report)


def _check_loads(out: Path, declared: dict[tuple[str, str], list[str]], report: VerifyReport) -> None:
    """Every config through `datasets.load_dataset`, as a user loads it (into a throw-away cache;
    not streaming: an abandoned streaming reader can abort the interpreter at exit)."""
    import tempfile

    import datasets
    from datasets.utils import logging as ds_logging

    bars_were_on = not datasets.utils.are_progress_bars_disabled()
    datasets.utils.disable_progress_bars()
    verbosity = ds_logging.get_verbosity()
    ds_logging.set_verbosity(ds_logging.CRITICAL)  # its errors are reported here, in one line
    try:
        with tempfile.TemporaryDirectory(prefix="rolebench-verify-") as cache:
            for config in dict.fromkeys(c for c, _ in declared):
                try:
                    datasets.load_dataset(
                        str(out), config, cache_dir=cache, verification_mode="no_checks"
                    )  # sizes: above
                except Exception as err:  # noqa: BLE001 - whatever load_dataset raises is the problem to report
                    report.problems.append(
                        f"{out}: load_dataset(..., {config!r}) fails ({type(err).__name__}: {err})".splitlines()[0]
                    )
    finally:
        ds_logging.set_verbosity(verbosity)
        if bars_were_on:
            datasets.utils.enable_progress_bars()


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


def _check_splits(tables: dict[str, dict[str, Any]], report: VerifyReport) -> None:
    held_out: set[str] = set()
    trained: dict[str, set[str]] = {}
    for config, splits in tables.items():
        if "question" not in splits.get("train", splits.get("test", {})):
            continue  # profiles / dialogues
        if found := checks.leaks(splits):
            for role, question in found[:5]:
                report.problems.append(f"{config}: ({role!r}, {question[:60]!r}) is in both train and test")
            if len(found) > 5:
                report.problems.append(f"{config}: {len(found) - 5} more (role, question) pairs in both train and test")
        report.notes.extend(checks.overlap_notes(config, splits))
        if "role_generalization" in config:
            held_out |= set(splits.get(checks.HELD_OUT_SPLIT, {}).get("role", []))
            if "train" in splits:
                trained[config] = set(splits["train"]["role"])
    for config, roles in trained.items():
        for role in sorted(roles & held_out):
            report.problems.append(f"{config}: held-out role {role!r} appears in train")
