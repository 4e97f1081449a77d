"""Small RoleBench fixtures for the data and chat tests: a tiny tokenizer, an original-layout
folder and the same rows as a release folder read by ``datasets.load_dataset``.

The rows are made up for these tests (never copied from RoleBench).
"""

from __future__ import annotations

import atexit
import functools
import json
import shutil
import tempfile
from pathlib import Path

from rolellm_jax.checkpoints.tokenizer import load_tokenizer, train_tokenizer


def tiny_tokenizer(texts: list[str], vocab_size: int = 400):
    """The repository's tiny sentencepiece BPE (byte fallback: any text encodes), trained on
    ``texts`` once per session; every call returns a fresh copy (tests may add tokens to it)."""
    return load_tokenizer(_trained(tuple(texts), vocab_size))


@functools.cache
def _trained(texts: tuple[str, ...], vocab_size: int) -> str:
    out = tempfile.mkdtemp(prefix="rolellm-tiny-tokenizer-")
    atexit.register(shutil.rmtree, out, True)
    train_tokenizer(list(texts), vocab_size, out)
    return out


DESC_ENG = {
    "Captain Vale": "A gruff sky-ship captain who hates paperwork. Catchphrase: 'Hold the wind!'",
    "Doctor Moss": "A gentle botanist who talks to ferns. Catchphrase: 'Leaves remember.'",
    "Old Tam": "A retired lighthouse keeper. Catchphrase: 'Mind the rocks.'",  # role generalisation: held out
}
DESC_ZH = {"剑客": "一位沉默寡言的剑客。口头禅：'剑在人在。'"}


def eng_rows(kind: str, split: str, roles=("Captain Vale", "Doctor Moss"), n: int = 3) -> list[dict]:
    rows = []
    for role in roles:
        for i in range(n):
            if kind == "general":
                rows.append(
                    {
                        "role": role,
                        "question": f"Describe rain number {i}.",
                        "generated": [f"{role} says rain {i} is wet.", f"Rain {i}? Bah, {role} is busy."],
                    }
                )
            else:  # original quirks: leading spaces; type string in train, list in test
                answers = [f" {role} remembers voyage {i}."] + ([f" Voyage {i} again."] if split == "test" else [])
                row_type = "script_based" if split == "train" else ["script_based"] * len(answers)
                rows.append(
                    {
                        "role": role,
                        "question": f" {role}, what happened on voyage {i}?",
                        "generated": answers,
                        "type": row_type,
                    }
                )
    return rows


def zh_rows(kind: str, split: str) -> list[dict]:
    rows = [
        {"role": "剑客", "question": f"你的第{i}把剑叫什么？", "generated": [f"第{i}把剑名叫寒霜。"]} for i in range(3)
    ]
    if kind == "role_specific":
        for r in rows:
            r["type"] = "script_agnostic" if split == "train" else ["script_agnostic"]
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def write_original_layout(root: Path) -> Path:
    """An original-layout RoleBench folder: eng instruction/role generalisation, zh, profiles."""
    for kind in ("general", "role_specific"):
        for split in ("train", "test"):
            write_jsonl(root / f"rolebench-eng/instruction-generalization/{kind}/{split}.jsonl", eng_rows(kind, split))
            write_jsonl(root / f"rolebench-zh/{kind}/{split}.jsonl", zh_rows(kind, split))
        write_jsonl(root / f"rolebench-eng/role-generalization/{kind}/train.jsonl", eng_rows(kind, "train"))
    write_jsonl(
        root / "rolebench-eng/role-generalization/general/test.jsonl", eng_rows("general", "test", roles=("Old Tam",))
    )
    for lang, desc in (("eng", DESC_ENG), ("zh", DESC_ZH)):
        (root / f"profiles-{lang}").mkdir(parents=True, exist_ok=True)
        (root / f"profiles-{lang}/desc.json").write_text(json.dumps(desc, ensure_ascii=False), encoding="utf-8")
    return root


def write_release_layout(root: Path, raw: list[dict] | None = None) -> Path:
    """The same rows as a release folder (the release config names of data_gen/rolebench.py), read via load_dataset;
    `raw` rows become the ``raw`` split of eng-instruction_generalization-general."""
    configs = []

    def add(config: str, split: str, rows: list[dict]) -> None:
        if config.endswith("role_specific"):
            rows = [
                dict(r, type=r["type"] if isinstance(r["type"], list) else [r["type"]] * len(r["generated"]))
                for r in rows
            ]
        write_jsonl(root / "data" / config / f"{split}.jsonl", rows)
        configs.append((config, split))

    for kind in ("general", "role_specific"):
        for split in ("train", "test"):
            add(f"eng-instruction_generalization-{kind}", split, eng_rows(kind, split))
            add(f"zh-{kind}", split, zh_rows(kind, split))
        add(f"eng-role_generalization-{kind}", "train", eng_rows(kind, "train"))
    add("eng-role_generalization-general", "test", eng_rows("general", "test", roles=("Old Tam",)))
    if raw is not None:
        add("eng-instruction_generalization-general", "raw", raw)
    for lang, desc in (("eng", DESC_ENG), ("zh", DESC_ZH)):
        add(f"profiles-{lang}", "train", [{"role": r, "description": d, "script": ""} for r, d in desc.items()])
    lines = ["---", "configs:"]
    for config in dict.fromkeys(c for c, _ in configs):
        lines += [f"- config_name: {config}", "  data_files:"]
        lines += [f"  - split: {s}\n    path: data/{config}/{s}.jsonl" for c, s in configs if c == config]
    (root / "README.md").write_text("\n".join(lines + ["---", "", "Test release."]) + "\n", encoding="utf-8")
    return root


def all_texts() -> list[str]:
    """Text to train the tiny tokenizer on (fixture rows, system templates, chat markers)."""
    texts = [
        json.dumps(r, ensure_ascii=False)
        for k in ("general", "role_specific")
        for s in ("train", "test")
        for r in eng_rows(k, s) + zh_rows(k, s)
    ]
    texts += list(DESC_ENG.values()) + list(DESC_ZH.values())
    texts += [
        "[INST] <<SYS>> <</SYS>> [/INST]",
        "[Round 1]\n\n问：\n\n答：",
        "<|im_start|>system user assistant<|im_end|>",
    ]
    return texts


def release_manifest_entry(out: Path, shard: Path) -> tuple[dict, dict, dict]:
    """(the release's manifest, the split holding ``shard``, the shard's own entry), from OUT/manifest.json."""
    manifest = json.loads((out / "manifest.json").read_text())
    rel = shard.relative_to(out).as_posix()
    for config in manifest["configs"].values():
        for split in config["splits"].values():
            for entry in split["shards"]:
                if entry["path"] == rel:
                    return manifest, split, entry
    raise AssertionError(rel)
