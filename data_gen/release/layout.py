"""Read a RoleBench source folder into release configs (rows in one schema per config).

A source is either a folder in the original RoleBench layout or a data_gen shard set (the same
layout under `vX.Y.Z/` next to a `manifest.json`). Each source file maps to one (config, split);
rows are normalised here so every config has one schema: `type` becomes a list of strings aligned
with `generated` (the published RoleBench has a string in train files and a list in test files,
which is why `load_dataset` fails on it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets import Features, List, Value

from data_gen.errors import UserError
from data_gen.files import DataFileError, iter_jsonl, json_error, sha256_bytes, sha256_file, sha256_text
from data_gen.rolebench import DIALOG_FOLDERS, PROFILE_LANGS, chinese_share
from data_gen.rolebench import RELEASE_SPLITS as SPLITS

GENERAL_FEATURES = Features({"role": Value("string"), "question": Value("string"), "generated": List(Value("string"))})
ROLE_SPECIFIC_FEATURES = Features(
    {
        "role": Value("string"),
        "question": Value("string"),
        "generated": List(Value("string")),
        "type": List(Value("string")),
    }
)
PROFILE_FEATURES = Features({"role": Value("string"), "description": Value("string"), "script": Value("string")})
DIALOGUE_FEATURES = Features(
    {
        "role": Value("string"),
        "act_id": Value("int64"),
        "diag_id": Value("int64"),
        "speaker": Value("string"),
        "content": Value("string"),
    }
)

SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")


class ReleaseError(UserError):
    """A problem with a release source or output; the message is one line naming file/line/key."""


def check_version(version: str) -> str:
    """Refuse anything that is not plain semver X.Y.Z (versions become immutable Hub tags)."""
    if not SEMVER.match(version):
        raise ReleaseError(f"version {version!r} is not semver X.Y.Z (e.g. 1.0.0)")
    return version


def features_for(config: str) -> Features:
    """The one schema of a config, by its name (data_gen/rolebench.py's DIALOG_FOLDERS)."""
    if config.startswith("profiles-"):
        return PROFILE_FEATURES
    if config.startswith("dialogues-"):
        return DIALOGUE_FEATURES
    if config.endswith("role_specific"):
        return ROLE_SPECIFIC_FEATURES
    return GENERAL_FEATURES


def config_language(config: str) -> str:
    """'en' or 'zh' from a config name."""
    return "zh" if config.startswith("zh") or config.endswith("-zh") else "en"


def read_jsonl(path: Path, label: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, row) through data_gen's one JSONL reader; its errors become ReleaseError."""
    try:
        yield from iter_jsonl(path)
    except DataFileError as err:
        raise ReleaseError(str(err)) from None


def row_language(texts: list[str]) -> str | None:
    """'zh' when clearly Chinese, 'en' when clearly not, None when in between (no verdict)."""
    ratio = chinese_share("".join(texts), prefix=400)
    if ratio is None:
        return None
    if ratio >= 0.5:
        return "zh"
    if ratio <= 0.1:
        return "en"
    return None


@dataclass
class SplitData:
    """Columns of one split, plus where they came from."""

    columns: dict[str, list]
    sources: list[str] = field(default_factory=list)

    @property
    def num_rows(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0


@dataclass
class Source:
    """A resolved release source: its root, kind, manifest and the configs read from it."""

    root: Path
    kind: str  # "rolebench-layout" | "shard-set"
    manifest: dict[str, Any] | None
    manifest_sha256: str
    files: dict[str, dict[str, Any]]  # relpath -> {sha256, rows}
    configs: dict[str, dict[str, SplitData]]
    note: str


def _text_list(value: Any, key: str, label: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ReleaseError(f"{label}: '{key}' must be a string or a list of strings")


def read_dialog_file(path: Path, label: str, config: str, split: str) -> dict[str, list]:
    """Rows of one rolebench jsonl file as columns; checks keys, types and language."""
    role_specific = config.endswith("role_specific")
    lang = config_language(config)
    cols: dict[str, list] = {"role": [], "question": [], "generated": []}
    if role_specific:
        cols["type"] = []
    for lineno, row in read_jsonl(path, label):
        where = f"{label}:{lineno}"
        for key in ("role", "question", "generated"):
            if key not in row:
                raise ReleaseError(f"{where}: missing '{key}'")
        role, question = row["role"], row["question"]
        if not isinstance(role, str) or not role.strip():
            raise ReleaseError(f"{where}: 'role' must be a non-empty string")
        if not isinstance(question, str):
            raise ReleaseError(f"{where}: 'question' must be a string")
        generated = _text_list(row["generated"], "generated", where)
        if not generated:
            raise ReleaseError(f"{where}: 'generated' is empty")
        found = row_language([question, generated[0]])  # one answer suffices to tell the language
        if found is not None and found != lang:
            raise ReleaseError(
                f"{where}: {'Chinese' if found == 'zh' else 'English'} row in "
                f"{'Chinese' if lang == 'zh' else 'English'} config {config} (mixed languages)"
            )
        cols["role"].append(role)
        cols["question"].append(question)
        cols["generated"].append(generated)
        if role_specific:
            if "type" not in row:
                # rolegpt_baseline files carry no type: filled from the test split later
                cols["type"].append(None)
                continue
            types = _text_list(row["type"], "type", where)
            if isinstance(row["type"], str):
                types = types * len(generated)  # train quirk: one string for all answers
            if len(types) != len(generated):
                raise ReleaseError(f"{where}: 'type' has {len(types)} items but 'generated' has {len(generated)}")
            cols["type"].append(types)
    return cols


def fill_baseline_types(splits: dict[str, SplitData]) -> None:
    """rolegpt_baseline rows answer test questions: give each the type of its test question."""
    baseline = splits.get("rolegpt_baseline")
    if baseline is None or "type" not in baseline.columns:
        return
    known: dict[tuple[str, str], str] = {}
    test = splits.get("test")
    if test is not None:
        for role, question, types in zip(test.columns["role"], test.columns["question"], test.columns["type"]):
            if types:
                known.setdefault((role, question.strip()), types[0])
    cols = baseline.columns
    for i, types in enumerate(cols["type"]):
        if types is None:
            kind = known.get((cols["role"][i], cols["question"][i].strip()), "")
            cols["type"][i] = [kind] * len(cols["generated"][i])


def _profile_text(value: Any, key: str, label: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "; ".join(value)
    if isinstance(value, dict) and isinstance(value.get("description"), str):
        phrases = value.get("catchphrases") or []
        text = value["description"]
        return text + ("\nCatchphrases: " + " / ".join(map(str, phrases)) if phrases else "")
    raise ReleaseError(f"{label}: value of {key!r} must be a string (or a description object)")


def _read_json_object(path: Path, label: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ReleaseError(json_error(label, err)) from None
    if not isinstance(data, dict):
        raise ReleaseError(f"{label}: must be a JSON object mapping role -> text")
    return data


def read_profiles(folder: Path, prefix: str, lang_tag: str) -> tuple[SplitData | None, SplitData | None]:
    """profiles-<lang>/: desc.json + scripts.json -> profiles rows; profiles-<lang>-{role}.jsonl -> dialogues."""
    profiles = None
    desc_path, scripts_path = folder / "desc.json", folder / "scripts.json"
    if desc_path.is_file() or scripts_path.is_file():
        desc = _read_json_object(desc_path, f"{prefix}/desc.json") if desc_path.is_file() else {}
        scripts = _read_json_object(scripts_path, f"{prefix}/scripts.json") if scripts_path.is_file() else {}
        roles = list(desc) + [r for r in scripts if r not in desc]
        cols: dict[str, list] = {"role": [], "description": [], "script": []}
        for role in roles:
            cols["role"].append(role)
            cols["description"].append(_profile_text(desc.get(role, ""), role, f"{prefix}/desc.json"))
            cols["script"].append(_profile_text(scripts.get(role, ""), role, f"{prefix}/scripts.json"))
        profiles = SplitData(cols, sources=[f"{prefix}/{p.name}" for p in (desc_path, scripts_path) if p.is_file()])
    # data_gen names files with '/' in a role replaced by '_': map those names back to the role
    known = {role.replace("/", "_"): role for role in (profiles.columns["role"] if profiles else [])}
    dialogue_files = sorted(folder.glob(f"profiles-{lang_tag}-*.jsonl"))
    dialogues = None
    if dialogue_files:
        cols = {"role": [], "act_id": [], "diag_id": [], "speaker": [], "content": []}
        for path in dialogue_files:
            label = f"{prefix}/{path.name}"
            stem = path.name[len(f"profiles-{lang_tag}-") : -len(".jsonl")]
            role = known.get(stem, stem)
            for lineno, row in read_jsonl(path, label):
                where = f"{label}:{lineno}"
                for key in ("act_id", "diag_id", "content"):
                    if key not in row:
                        raise ReleaseError(f"{where}: missing '{key}'")
                speaker = row.get("role", row.get("speaker"))
                if not isinstance(speaker, str):
                    raise ReleaseError(f"{where}: missing 'role' (the speaker)")
                ids = []
                for key in ("act_id", "diag_id"):
                    try:
                        ids.append(int(row[key]))
                    except (TypeError, ValueError):
                        raise ReleaseError(f"{where}: '{key}' must be an integer, got {row[key]!r}") from None
                if not isinstance(row["content"], str):
                    raise ReleaseError(f"{where}: 'content' must be a string")
                cols["role"].append(role)
                cols["act_id"].append(ids[0])
                cols["diag_id"].append(ids[1])
                cols["speaker"].append(speaker)
                cols["content"].append(row["content"])
        dialogues = SplitData(cols, sources=[f"{prefix}/{p.name}" for p in dialogue_files])
    return profiles, dialogues


def resolve_root(path: Path, version: str) -> tuple[Path, dict[str, Any] | None, bytes | None]:
    """Find the layout root: DIR itself, DIR with manifest.json (a shard set version), or DIR/vX.Y.Z."""
    if not path.is_dir():
        raise ReleaseError(f"{path}: source folder not found")
    candidates = [path] if (path / "manifest.json").is_file() else []
    if not candidates:
        versions = sorted(p.parent for p in path.glob("v*/manifest.json"))
        if (path / f"v{version}" / "manifest.json").is_file():
            candidates = [path / f"v{version}"]
        elif len(versions) == 1:
            candidates = versions
        elif len(versions) > 1:
            names = ", ".join(p.name for p in versions)
            raise ReleaseError(f"{path}: shard set has several versions ({names}); pass --from {path}/vX.Y.Z")
    if not candidates:
        return path, None, None
    root = candidates[0]
    raw = (root / "manifest.json").read_bytes()
    try:
        manifest = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ReleaseError(json_error(root / "manifest.json", err)) from None
    if not isinstance(manifest, dict):
        raise ReleaseError(f"{root / 'manifest.json'}: must be a JSON object")
    return root, manifest, raw


def _manifest_checksums(manifest: dict[str, Any]) -> dict[str, str]:
    """relpath -> sha256 listed by a shard-set manifest (dict or list form), if any."""
    files = manifest.get("files")
    out: dict[str, str] = {}
    if isinstance(files, dict):
        for rel, info in files.items():
            if isinstance(info, dict) and isinstance(info.get("sha256"), str):
                out[rel] = info["sha256"]
            elif isinstance(info, str):
                out[rel] = info
    elif isinstance(files, list):
        for info in files:
            if isinstance(info, dict) and isinstance(info.get("path"), str) and isinstance(info.get("sha256"), str):
                out[info["path"]] = info["sha256"]
    return out


def _read_configs(root: Path) -> dict[str, dict[str, SplitData]]:
    """config -> split -> its columns, for every RoleBench folder and profile folder under ``root``."""
    configs: dict[str, dict[str, SplitData]] = {}
    for folder, config in DIALOG_FOLDERS.items():
        splits: dict[str, SplitData] = {}
        for split in SPLITS:
            file = root / folder / f"{split}.jsonl"
            if not file.is_file():
                continue
            rel = f"{folder}/{split}.jsonl"
            cols = read_dialog_file(file, rel, config, split)
            splits[split] = SplitData(cols, sources=[rel])
        if splits:
            fill_baseline_types(splits)
            configs[config] = splits
    for tag in PROFILE_LANGS:
        folder = root / f"profiles-{tag}"
        if folder.is_dir():
            profiles, dialogues = read_profiles(folder, f"profiles-{tag}", tag)
            if profiles is not None and profiles.num_rows:
                configs[f"profiles-{tag}"] = {"train": profiles}
            if dialogues is not None and dialogues.num_rows:
                configs[f"dialogues-{tag}"] = {"train": dialogues}
    if not configs:
        raise ReleaseError(f"{root}: no RoleBench files found (expected rolebench-eng/, rolebench-zh/ or profiles-*/)")
    return configs


def _source_files(
    root: Path, configs: dict[str, dict[str, SplitData]], manifest: dict | None
) -> dict[str, dict[str, Any]]:
    """rel path -> sha256 (and rows, for a file that is a whole split) of each file read; a file whose
    sha256 differs from the one the source's manifest lists is an error."""
    files: dict[str, dict[str, Any]] = {}
    for splits in configs.values():
        for data in splits.values():
            for rel in data.sources:
                files[rel] = {"sha256": sha256_file(root / rel)}
            if len(data.sources) == 1:
                files[data.sources[0]]["rows"] = data.num_rows
    listed = _manifest_checksums(manifest) if manifest else {}
    for rel, digest in listed.items():
        if rel in files and files[rel]["sha256"] != digest:
            raise ReleaseError(
                f"{root / rel}: sha256 differs from the one in manifest.json (file changed after generation)"
            )
    return files


def load_source(path: Path, version: str) -> Source:
    """Read every recognised file of a source into configs; errors name file and line."""
    root, manifest, raw_manifest = resolve_root(Path(path), version)
    configs = _read_configs(root)
    files = _source_files(root, configs, manifest)
    if raw_manifest is not None:
        manifest_sha = sha256_bytes(raw_manifest)
    else:  # no manifest: hash the canonical listing of what was read, so the build still pins its input
        listing = json.dumps(sorted((k, v["sha256"]) for k, v in files.items()), ensure_ascii=False)
        manifest_sha = sha256_text(listing)
    note_path = root / "SOURCE.md"
    note = note_path.read_text(encoding="utf-8").strip() if note_path.is_file() else ""
    return Source(
        root=root,
        kind="shard-set" if manifest is not None else "rolebench-layout",
        manifest=manifest,
        manifest_sha256=manifest_sha,
        files=dict(sorted(files.items())),
        configs=configs,
        note=note,
    )
