"""Stage 1 from character cards instead of scripts: ``python -m data_gen profiles --cards DIR``.

Each card (data_gen/pipeline/cards.py) is a role: its description is written as given (no LLM
call), its example dialogues as the profile's dialogues and segments, in the same files the script
stage writes (profiles.py), so Context-Instruct and RoleGPT (its retrieved few-shot dialogues) run
on card characters unchanged.
"""

from __future__ import annotations

from pathlib import Path

from data_gen.files import atomic_write_text, write_json, write_jsonl
from data_gen.pipeline.cards import card_profile_rows, read_cards
from data_gen.pipeline.config import GenConfig
from data_gen.pipeline.profiles import render_dialogue, role_file_name, segment_rows


def card_title(name: str) -> str:
    return f"{name} (character card)"


def build_card_profiles(cards_dir: str | Path, work: str | Path, cfg: GenConfig) -> list[Path]:
    """Write ``WORK/profiles-<lang>/`` from the cards; returns the card files read."""
    out = Path(work) / f"profiles-{cfg.lang}"
    cards = read_cards(cards_dir)
    rows = {c.name: card_profile_rows(c) for c in cards}
    segments = {name: segment_rows(r, cfg.segment_tokens) for name, r in rows.items()}
    for name, r in rows.items():
        write_jsonl(out / role_file_name(cfg.lang, name), r)
    write_json(out / "desc.json", {c.name: c.description for c in cards})
    write_json(out / "scripts.json", {c.name: card_title(c.name) for c in cards})
    atomic_write_text(out / "split_info.txt", "".join(f"{name}\t{len(segments[name])}\n" for name in rows))
    write_jsonl(
        out / "segments.jsonl",
        [
            {"role": name, "segment_id": i, "title": card_title(name), "text": render_dialogue(seg)}
            for name in rows
            for i, seg in enumerate(segments[name])
        ],
    )
    return [Path(c.source) for c in cards]
