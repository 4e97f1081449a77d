"""Build a Hugging Face dataset repository folder from a RoleBench source.

Output: `data/<config>/<split>-0000N-of-0000M.parquet` (explicit features, bounded shard size),
`README.md` (dataset card), `CHANGELOG.md` and `manifest.json`. The bytes are a pure function of
the input and the writer versions recorded in the manifest: row order is the source's, no
timestamps, fixed compression and row-group settings, files written in a fixed order.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.parquet as pq

import data_gen
from data_gen.files import sha256_file
from data_gen.release import checks
from data_gen.release.card import render_card, render_changelog
from data_gen.release.layout import (
    ReleaseError,
    Source,
    check_version,
    config_language,
    features_for,
    load_source,
)
from data_gen.rolebench import DIALOG_FOLDERS, PROFILE_LANGS
from data_gen.rolebench import RELEASE_SPLITS as SPLITS

log = logging.getLogger(__name__)
MAX_SHARD_BYTES = 256 * 1024 * 1024  # uncompressed Arrow bytes per shard (Hub viewer friendly)
ROW_GROUP_ROWS = 10_000
PARQUET_OPTIONS: dict[str, Any] = {
    "compression": "zstd",
    "compression_level": 3,
    "version": "2.6",
    "data_page_version": "1.0",
    "write_statistics": True,
    "use_dictionary": True,
}
CONFIG_ORDER = [*DIALOG_FOLDERS.values()] + [
    f"{kind}-{tag}" for tag in PROFILE_LANGS for kind in ("profiles", "dialogues")
]


def shard_path(config: str, split: str, index: int, count: int) -> str:
    return f"data/{config}/{split}-{index:05d}-of-{count:05d}.parquet"


def dumps_json(data: Any) -> str:
    """The one JSON serialisation of release files (stable key order, UTF-8, trailing newline)."""
    return json.dumps(data, ensure_ascii=False, indent=1) + "\n"


def build_tool_info() -> dict[str, str]:
    # parquet bytes depend on the writer version: recorded so byte-identity claims are checkable
    return {
        "name": "data_gen.release",
        "version": data_gen.__version__,
        "pyarrow": pa.__version__,
        "datasets": datasets.__version__,
    }


def write_split(table: pa.Table, out: Path, config: str, split: str, max_shard_bytes: int) -> list[dict[str, Any]]:
    """Write one split as equal-row shards of at most ~max_shard_bytes each; returns shard records."""
    count = min(max(1, math.ceil(table.nbytes / max_shard_bytes)), table.num_rows)  # callers never pass 0 rows
    per_shard = math.ceil(table.num_rows / count)
    shards = []
    for index in range(count):
        part = table.slice(index * per_shard, per_shard)
        rel = shard_path(config, split, index, count)
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(part, path, row_group_size=ROW_GROUP_ROWS, **PARQUET_OPTIONS)
        shards.append(
            {
                "path": rel,
                "rows": part.num_rows,
                "bytes": path.stat().st_size,
                "sha256": sha256_file(path),
            }
        )
    return shards


def drop_train_leaks(source: Source) -> dict[str, int]:
    """Remove train rows whose (role, question) is also asked in test of the same config; count per config.

    Only test counts (see checks.py): the published zh-general rolegpt_baseline answers the train
    questions too, and dropping on it emptied that train split. The published RoleBench has 3 such
    pairs (7 train rows) in zh role_specific; `verify` refuses them, this flag releases such a source.
    """
    dropped: dict[str, int] = {}
    for config, splits in source.configs.items():
        found = set(checks.leaks({name: data.columns for name, data in splits.items()}))
        if not found:
            continue
        train = splits["train"]
        keep = [(r, q.strip()) not in found for r, q in zip(train.columns["role"], train.columns["question"])]
        dropped[config] = keep.count(False)
        train.columns = {name: [v for v, k in zip(values, keep) if k] for name, values in train.columns.items()}
    return dropped


def source_warnings(source: Source, drop_leaks: bool) -> list[str]:
    """What `verify` would refuse, said at build time: leaks (unless dropped) and roles without a description."""
    columns = {
        config: {name: data.columns for name, data in splits.items()} for config, splits in source.configs.items()
    }
    found = []
    if not drop_leaks:
        for config, splits in columns.items():
            if pairs := checks.leaks(splits):
                found.append(
                    checks.describe_leaks(config, pairs) + " (pass --drop-train-leaks to drop those train rows)"
                )
    return found + checks.undescribed_roles(columns)


def build_release(
    source_dir: Path,
    version: str,
    out: Path,
    *,
    max_shard_bytes: int = MAX_SHARD_BYTES,
    card_template: Path | None = None,
    notes: str = "",
    previous_changelog: Path | None = None,
    overwrite: bool = False,
    repo_id: str = "NAMESPACE/rolebench",
    name: str = "RoleBench",
    drop_leaks: bool = False,
) -> dict[str, Any]:
    """Build the release folder OUT from a source; returns the manifest written to OUT/manifest.json."""
    check_version(version)
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise ReleaseError(f"{out}: output folder exists and is not empty (pass --overwrite to replace it)")
        if not (out / "manifest.json").is_file():
            raise ReleaseError(f"{out}: refusing to overwrite a folder that is not a release (no manifest.json)")
    source = load_source(Path(source_dir), version)
    for warning in source_warnings(source, drop_leaks):
        log.warning("warning: %s", warning)
    dropped = drop_train_leaks(source) if drop_leaks else {}
    previous = previous_changelog.read_text(encoding="utf-8") if previous_changelog else ""

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".release-", dir=out.parent))
    try:
        manifest = _write_release(
            source, version, staging, max_shard_bytes, card_template, notes, previous, repo_id, name, dropped
        )
        staging.chmod(0o755)  # mkdtemp makes it private; a release folder is meant to be shared
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return manifest


def _write_config(source: Source, config: str, out: Path, max_shard_bytes: int) -> dict[str, Any] | None:
    """Write the parquet shards of one config's non-empty splits; its manifest entry, None when all are empty."""
    features = features_for(config)
    schema = features.arrow_schema
    splits: dict[str, Any] = {}
    for split in SPLITS:
        data = source.configs[config].get(split)
        if data is None or not data.num_rows:
            continue  # a 0-row parquet shard breaks load_dataset (ArrowInvalid): the split is left out
        table = pa.Table.from_pydict(data.columns, schema=schema)
        splits[split] = {
            "rows": table.num_rows,
            "num_bytes": table.nbytes,
            "shards": write_split(table, out, config, split, max_shard_bytes),
        }
    if not splits:
        return None
    roles = {role for data in source.configs[config].values() for role in data.columns["role"]}
    return {
        "language": config_language(config),
        "roles": len(roles),
        "columns": list(features),
        "features": features.to_dict(),
        "splits": splits,
    }


def _write_release(
    source: Source,
    version: str,
    out: Path,
    max_shard_bytes: int,
    card_template: Path | None,
    notes: str,
    previous_changelog: str,
    repo_id: str,
    name: str,
    dropped: dict[str, int],
) -> dict[str, Any]:
    configs: dict[str, Any] = {}
    for config in CONFIG_ORDER:
        if config in source.configs and (entry := _write_config(source, config, out, max_shard_bytes)):
            configs[config] = entry
            if config in dropped:
                entry["dropped_train_leaks"] = dropped[config]
    manifest: dict[str, Any] = {
        "name": name,
        "version": version,
        "build_tool": build_tool_info(),
        "source": {
            "kind": source.kind,
            "manifest_sha256": source.manifest_sha256,
            "files": source.files,
        },
        "parquet": {**PARQUET_OPTIONS, "row_group_rows": ROW_GROUP_ROWS, "max_shard_bytes": max_shard_bytes},
        "configs": configs,
    }
    readme = render_card(manifest, source, card_template, repo_id)
    changelog = render_changelog(manifest, notes, previous_changelog)
    (out / "README.md").write_text(readme, encoding="utf-8")
    (out / "CHANGELOG.md").write_text(changelog, encoding="utf-8")
    manifest["docs"] = {name: sha256_file(out / name) for name in ("README.md", "CHANGELOG.md")}
    (out / "manifest.json").write_text(dumps_json(manifest), encoding="utf-8")
    return manifest
