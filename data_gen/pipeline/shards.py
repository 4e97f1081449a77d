"""Stage 5, output: train/test splits per role in RoleBench's file layout, as a versioned shard set.

``OUT/v{X.Y.Z}/`` holds (English; Chinese uses ``rolebench-zh/{general,role_specific}/`` with the
instruction-generalisation split)::

    profiles-eng/                       desc.json, scripts.json, split_info.txt, profiles-eng-{role}.jsonl
    rolebench-eng/instruction-generalization/{general,role_specific}/{train,test,rolegpt_baseline}.jsonl
    rolebench-eng/role-generalization/{general,role_specific}/{train,test,rolegpt_baseline}.jsonl
    rolebench-eng/*/general/raw.jsonl   the RAW references: {role, question, generated: [original output]}
                                        for every test row whose instruction had an ``output``
    manifest.json                       rows + sha256 per file, config, models, prompt hashes, tokens, cost

Splits (seeded by ``cfg.seed``; independent of the answers, so they are stable across reruns):
*instruction generalisation* holds out ``general_test_fraction`` of the general instructions (for
every role) and ``role_specific_test_fraction`` of each role's questions; *role generalisation*
holds out whole roles (``test_roles`` or ``test_role_count`` picked at random). Rows: ``{role,
question, generated: [..]}`` (+ ``type``: a string in train, a list aligned with ``generated`` in
test). A version that exists is never overwritten; the set is written to a temp folder and renamed.
"""

from __future__ import annotations

import hashlib
import random
import re
import shutil
from pathlib import Path

from data_gen import __version__
from data_gen.errors import UserError
from data_gen.files import read_json, read_jsonl, sha256_file, write_json, write_jsonl
from data_gen.pipeline.config import GenConfig

_VERSION = re.compile(r"^\d+\.\d+\.\d+$")


class ShardError(UserError):
    """The shard set cannot be written; the message names the version or file."""


def _rng(seed: int, *parts: str) -> random.Random:
    digest = hashlib.sha256("\x1f".join([str(seed), *parts]).encode()).hexdigest()
    return random.Random(int(digest[:16], 16))


def _held_out(items: list, fraction: float, rng: random.Random) -> set:
    if not items or fraction <= 0:
        return set()
    n = max(1, round(fraction * len(items))) if len(items) > 1 else 0
    return set(rng.sample(items, n))


def pick_test_roles(roles: list[str], cfg: GenConfig) -> list[str]:
    if cfg.test_roles:
        unknown = [r for r in cfg.test_roles if r not in roles]
        if unknown:
            raise ShardError(f"test_roles: {unknown} are not roles of this run ({roles})")
        return list(cfg.test_roles)
    if cfg.test_role_count >= len(roles):
        raise ShardError(f"test_role_count: {cfg.test_role_count} would leave no training role (roles: {len(roles)})")
    return sorted(_rng(cfg.seed, "roles").sample(sorted(roles), cfg.test_role_count))


def _general_files(rows: list[dict], test_of) -> dict[str, list[dict]]:
    train = [
        {"role": r["role"], "question": r["question"], "generated": r["generated"]} for r in rows if not test_of(r)
    ]
    test_rows = [r for r in rows if test_of(r)]
    return {
        "train": train,
        "test": [{"role": r["role"], "question": r["question"], "generated": r["generated"]} for r in test_rows],
        "rolegpt_baseline": [
            {"role": r["role"], "question": r["question"], "generated": [r["baseline"]]}
            for r in test_rows
            if r.get("baseline")
        ],
        "raw": [
            {"role": r["role"], "question": r["question"], "generated": [r["raw"]]} for r in test_rows if r.get("raw")
        ],
    }


def _specific_files(rows: list[dict], baselines: dict, test_of) -> dict[str, list[dict]]:
    test_rows = [r for r in rows if test_of(r)]
    return {
        "train": [dict(r) for r in rows if not test_of(r)],
        "test": [{**r, "type": [r["type"]] * len(r["generated"])} for r in test_rows],
        "rolegpt_baseline": [
            {"role": r["role"], "question": r["question"], "generated": [baselines[(r["role"], r["question"])]]}
            for r in test_rows
            if (r["role"], r["question"]) in baselines
        ],
    }


def split_files(work: Path, cfg: GenConfig) -> dict[str, list[dict]]:
    """relative path -> rows, for every data file of the shard set."""
    general = read_jsonl(work / f"rolegpt-{cfg.lang}.jsonl")
    specific = read_jsonl(work / f"context_instruct-{cfg.lang}.jsonl")
    baselines = {
        (r["role"], r["question"]): r["baseline"] for r in read_jsonl(work / f"rolegpt_role_specific-{cfg.lang}.jsonl")
    }
    roles = sorted(read_json(work / f"profiles-{cfg.lang}" / "desc.json"))

    test_iids = _held_out(
        sorted({r["instruction_id"] for r in general}), cfg.general_test_fraction, _rng(cfg.seed, "instructions")
    )
    test_q: set[tuple[str, str]] = set()
    for role in roles:
        qs = sorted({r["question"] for r in specific if r["role"] == role})
        test_q |= {(role, q) for q in _held_out(qs, cfg.role_specific_test_fraction, _rng(cfg.seed, "questions", role))}

    files: dict[str, list[dict]] = {}

    def put(prefix: str, group: dict[str, list[dict]]) -> None:
        for name, rows in group.items():
            files[f"{prefix}/{name}.jsonl"] = rows

    inst_g = _general_files(general, lambda r: r["instruction_id"] in test_iids)
    inst_s = _specific_files(specific, baselines, lambda r: (r["role"], r["question"]) in test_q)
    if cfg.lang == "zh":
        put("rolebench-zh/general", inst_g)
        put("rolebench-zh/role_specific", inst_s)
    else:
        base = "rolebench-eng/instruction-generalization"
        put(f"{base}/general", inst_g)
        put(f"{base}/role_specific", inst_s)
        held = set(pick_test_roles(roles, cfg))
        base = "rolebench-eng/role-generalization"
        put(f"{base}/general", _general_files(general, lambda r: r["role"] in held))
        put(f"{base}/role_specific", _specific_files(specific, baselines, lambda r: r["role"] in held))
    return files


def check_new_version(out: str | Path, version: str) -> Path:
    """The folder of a version that may be written (checked before any money is spent)."""
    if not _VERSION.match(version):
        raise ShardError(f"version {version!r} is not X.Y.Z")
    final = Path(out) / f"v{version}"
    if final.exists():
        raise ShardError(f"{final} exists: versions are immutable, choose a new --version")
    return final


def check_role_specific_train(files: dict[str, list[dict]], stages: dict) -> None:
    """Refuse a shard set whose role_specific train split is empty, saying which stage dropped what."""
    empty = [rel for rel, rows in files.items() if rel.endswith("role_specific/train.jsonl") and not rows]
    if not empty:
        return
    cleaning = stages.get("context_instruct", {}).get("cleaning", {}).get("context_instruct", {})
    dropped = ", ".join(f"{r} {n}" for r, n in sorted(cleaning.get("dropped", {}).items(), key=lambda x: -x[1]) if n)
    raise ShardError(
        f"{empty[0]}: the role_specific train split would be empty: the context_instruct stage kept "
        f"{cleaning.get('kept', 0)} questions (dropped: {dropped or 'none'}); pass --allow-empty to write it anyway"
    )


def write_shard_set(
    work: str | Path, out: str | Path, version: str, cfg: GenConfig, stages: dict, allow_empty: bool = False
) -> Path:
    """Write ``OUT/v{version}`` atomically; ``stages`` are the stage records (usage, cleaning,
    templates, inputs) that go into the manifest. Returns the version folder. An empty role_specific
    train split is refused unless ``allow_empty``."""
    work, out = Path(work), Path(out)
    final = check_new_version(out, version)
    files = split_files(work, cfg)
    if not allow_empty:
        check_role_specific_train(files, stages)
    tmp = out / f".v{version}.partial"
    shutil.rmtree(tmp, ignore_errors=True)  # left by a killed run
    for rel, rows in files.items():
        write_jsonl(tmp / rel, rows)
    _copy_profiles(work / f"profiles-{cfg.lang}", tmp / f"profiles-{cfg.lang}")
    manifest = _manifest(version, cfg, _file_entries(tmp), stages)
    write_json(tmp / "manifest.json", manifest)
    out.mkdir(parents=True, exist_ok=True)
    tmp.rename(final)
    return final


def _copy_profiles(src: Path, dest: Path) -> None:
    """The profile files of the work folder (not its segments, which only the LLM stages read)."""
    for p in sorted(src.iterdir()):
        if p.name != "segments.jsonl" and p.is_file() and not p.name.startswith("."):
            (dest / p.name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(p, dest / p.name)


def _file_entries(tmp: Path) -> dict[str, dict]:
    """Each written file's sha256, and its row count when it is JSONL."""
    entries = {}
    for p in sorted(tmp.rglob("*")):
        if p.is_file():
            rel = p.relative_to(tmp).as_posix()
            rows = sum(1 for line in p.open(encoding="utf-8") if line.strip()) if p.suffix == ".jsonl" else None
            entries[rel] = {"rows": rows, "sha256": sha256_file(p)} if rows is not None else {"sha256": sha256_file(p)}
    return entries


def _manifest(version: str, cfg: GenConfig, entries: dict[str, dict], stages: dict) -> dict:
    """The shard set's manifest: its files, how each stage ran, the total usage and the cleaning report."""
    totals = {"requests": 0, "failed": 0, "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0}
    templates, inputs, cleaning = {}, {}, {}
    for rec in stages.values():
        for k in totals:
            totals[k] += rec["usage"][k]
        templates.update(rec.get("templates", {}))
        inputs.update(rec.get("inputs", {}))
        cleaning.update(rec.get("cleaning", {}))
    totals["cost_usd"] = round(totals["cost_usd"], 6)
    return {
        "version": version,
        "lang": cfg.lang,
        "files": entries,
        # each stage's own config: the flags of this command say nothing about how earlier stages ran
        "generator": {
            "data_gen_version": __version__,
            "inputs": dict(sorted(inputs.items())),
            "config": {**{k: v["config"] for k, v in stages.items() if "config" in v}, "shards": cfg.as_dict()},
        },
        "models": sorted({v["config"]["model"] for v in stages.values() if "config" in v} or {cfg.model}),
        "prompt_templates": dict(sorted(templates.items())),
        "usage": {"total": totals, **{k: v["usage"] for k, v in stages.items()}},
        "cleaning": cleaning,
        "raw_references": "*/general/raw.jsonl: the original outputs of the general test instructions (RAW)",
    }
