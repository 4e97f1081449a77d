"""The stages wired together: each stage rebuilds its outputs from the journal (so it is
resumable and idempotent) and saves a record (usage, cleaning counts, prompt-template hashes,
input hashes, the config it ran with, and the hashes of the earlier stages' files it read) in
``WORK/stages-<lang>/<stage>.json`` for the manifest. ``shards`` refuses a work folder where an
earlier stage was rerun after a later one had read its files."""

from __future__ import annotations

import logging
from pathlib import Path

from data_gen.files import read_json, sha256_file, write_json
from data_gen.llm.client import LLMClient
from data_gen.llm.types import usage_of
from data_gen.pipeline.card_profiles import build_card_profiles
from data_gen.pipeline.clean import CleanReport
from data_gen.pipeline.config import GenConfig
from data_gen.pipeline.context_instruct import run_context_instruct
from data_gen.pipeline.profiles import build_profiles, check_scripts_dir
from data_gen.pipeline.rolegpt import load_instructions, run_rolegpt
from data_gen.pipeline.shards import ShardError, check_new_version, write_shard_set
from data_gen.pipeline.templates import TemplateRegistry

STAGES = ("profiles", "context_instruct", "rolegpt")
log = logging.getLogger(__name__)


def _work_files(work: Path, cfg: GenConfig, stage: str) -> dict[str, str]:
    """sha256 of the earlier stages' files that ``stage`` reads (relative to WORK)."""
    reads = {
        "profiles": [],
        "context_instruct": [f"profiles-{cfg.lang}"],
        "rolegpt": [f"profiles-{cfg.lang}", f"context_instruct-{cfg.lang}.jsonl"],
    }[stage]
    files = []
    for rel in reads:
        path = work / rel
        files += sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return {p.relative_to(work).as_posix(): sha256_file(p) for p in files if p.is_file()}


def _save(
    work: Path,
    cfg: GenConfig,
    stage: str,
    results,
    report: CleanReport | None,
    templates: TemplateRegistry,
    inputs: dict[str, str],
) -> dict:
    record = {
        "usage": usage_of(results).as_dict(),
        "cleaning": report.as_dict() if report else {},
        "templates": dict(sorted(templates.used.items())),
        "inputs": inputs,
        "config": cfg.as_dict(),
        "read": _work_files(work, cfg, stage),
    }
    write_json(work / f"stages-{cfg.lang}" / f"{stage}.json", record)
    return record


def stage_profiles(work: Path, scripts: Path, cfg: GenConfig, client: LLMClient) -> dict:
    templates = TemplateRegistry()
    results = build_profiles(scripts, work, cfg, client, templates)
    inputs = {f"scripts/{p.name}": sha256_file(p) for p in sorted(Path(scripts).glob("*.txt"))}
    return _save(work, cfg, "profiles", results, None, templates, inputs)


def stage_card_profiles(work: Path, cards: Path, cfg: GenConfig) -> dict:
    """Stage 1 from character cards: no LLM request (a card has its description)."""
    files = build_card_profiles(cards, work, cfg)
    inputs = {f"cards/{p.name}": sha256_file(p) for p in files}
    return _save(work, cfg, "profiles", [], None, TemplateRegistry(), inputs)


def stage_context_instruct(work: Path, cfg: GenConfig, client: LLMClient) -> dict:
    templates, report = TemplateRegistry(), CleanReport()
    results = run_context_instruct(work, cfg, client, templates, report)
    for line in report.low_yield("context_instruct", cfg.min_keep_share):
        log.warning(line)
    return _save(work, cfg, "context_instruct", results, report, templates, {})


def stage_rolegpt(work: Path, instructions: Path, cfg: GenConfig, client: LLMClient) -> dict:
    templates, report = TemplateRegistry(), CleanReport()
    results = run_rolegpt(work, instructions, cfg, client, templates, report)
    for line in report.low_yield("rolegpt", cfg.min_keep_share, ("no_clean_reference",)):
        log.warning(line)
    return _save(
        work,
        cfg,
        "rolegpt",
        results,
        report,
        templates,
        {f"instructions/{Path(instructions).name}": sha256_file(Path(instructions))},
    )


def stage_shards(work: Path, out: Path, version: str, cfg: GenConfig, allow_empty: bool = False) -> Path:
    stages = {name: read_json(work / f"stages-{cfg.lang}" / f"{name}.json") for name in STAGES}
    check_fresh(work, stages)
    return write_shard_set(work, out, version, cfg, stages, allow_empty=allow_empty)


def check_fresh(work: Path, stages: dict[str, dict]) -> None:
    """Every file a stage read is still what it read: else an earlier stage was rerun since, and
    the shard set would mix its new output with answers generated from the old one."""
    for later, record in stages.items():
        for rel, seen in record.get("read", {}).items():  # records written before this check have none
            path = work / rel
            if not path.is_file() or sha256_file(path) != seen:
                rerun = STAGES[STAGES.index(later) :]
                raise ShardError(
                    f"{path} changed after the {later} stage read it (an earlier stage was rerun): "
                    f"rerun {', '.join(s.replace('_', '-') for s in rerun)}, then shards"
                )


def check_inputs(
    scripts: Path | None, instructions: Path | None, out: Path | None = None, version: str | None = None
) -> None:
    """What a command reads and the version it writes, checked before anything is created or paid:
    a bad instruction line fails now, not after stages 1-2 have paid."""
    if scripts is not None:
        check_scripts_dir(scripts)
    if instructions is not None:
        load_instructions(instructions)
    if out is not None and version is not None:
        check_new_version(out, version)


def build(
    work: Path,
    scripts: Path | None,
    instructions: Path,
    out: Path,
    version: str,
    cfg: GenConfig,
    client: LLMClient,
    allow_empty: bool = False,
    cards: Path | None = None,
) -> Path:
    """All stages; stage 1 from ``scripts`` or, given ``cards``, from character cards."""
    check_inputs(scripts if cards is None else None, instructions, out, version)  # before any request is paid for
    if cards is not None:
        stage_card_profiles(work, cards, cfg)
    else:
        stage_profiles(work, scripts, cfg, client)
    stage_context_instruct(work, cfg, client)
    stage_rolegpt(work, instructions, cfg, client)
    return stage_shards(work, out, version, cfg, allow_empty)
