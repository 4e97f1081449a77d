"""Dataset card (README.md with YAML front matter) and CHANGELOG.md of a release.

The card's prose lives in `release/card_template.md` (string.Template placeholders `${name}`);
this module fills in what is computed: the front matter Hugging Face reads (`configs:` with the
exact shard files per split, `dataset_info:` with features and row counts), the counts table,
the generation provenance and the limitations that follow from the data.
"""

from __future__ import annotations

import json
from pathlib import Path
from string import Template
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from data_gen.release.layout import Source

DEFAULT_TEMPLATE = Path(__file__).resolve().parents[2] / "release" / "card_template.md"
SIZE_BUCKETS = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")]


def size_category(rows: int) -> str:
    for bound, name in SIZE_BUCKETS:
        if rows < bound:
            return name
    return "1M<n<10M"


def front_matter(manifest: dict[str, Any], license_id: str = "apache-2.0") -> dict[str, Any]:
    """The YAML header: license, languages, task categories, size, configs and dataset_info."""
    configs = manifest["configs"]
    languages = sorted({info["language"] for info in configs.values()})
    total = sum(split["rows"] for info in configs.values() for split in info["splits"].values())
    from datasets import Features  # local: only the card needs the YAML form of features

    return {
        "pretty_name": manifest["name"],
        "license": license_id,
        "language": languages,
        "task_categories": ["text-generation"],
        "tags": ["role-playing", "instruction-tuning", "rolellm", "rolebench"],
        "size_categories": [size_category(total)],
        "configs": [
            {
                "config_name": name,
                "data_files": [
                    {"split": split, "path": [shard["path"] for shard in info["shards"]]}
                    for split, info in config["splits"].items()
                ],
            }
            for name, config in configs.items()
        ],
        "dataset_info": [
            {
                "config_name": name,
                "features": Features.from_dict(config["features"])._to_yaml_list(),
                "splits": [
                    {"name": split, "num_bytes": info["num_bytes"], "num_examples": info["rows"]}
                    for split, info in config["splits"].items()
                ],
            }
            for name, config in configs.items()
        ],
    }


def counts_table(manifest: dict[str, Any]) -> str:
    splits = ["train", "test", "rolegpt_baseline"] + (
        ["raw"] if any("raw" in c["splits"] for c in manifest["configs"].values()) else []
    )
    lines = ["| config | language | " + " | ".join(splits) + " | roles |", "|---|---|" + "---:|" * (len(splits) + 1)]
    for name, config in manifest["configs"].items():
        cells = [str(config["splits"][s]["rows"]) if s in config["splits"] else "-" for s in splits]
        roles = config.get("roles", "")
        lines.append(f"| `{name}` | {config['language']} | " + " | ".join(cells) + f" | {roles} |")
    return "\n".join(lines)


def generation_text(manifest: dict[str, Any], source: Source) -> str:
    """Provenance: the shard-set manifest's generator fields (models, prompts, cost), or the source note."""
    src = manifest["source"]
    lines = [
        f"Built by `{manifest['build_tool']['name']}` {manifest['build_tool']['version']} from a "
        f"{'data_gen shard set' if src['kind'] == 'shard-set' else 'folder in the original RoleBench layout'} "
        f"(source manifest sha256 `{src['manifest_sha256']}`, {len(src['files'])} files)."
    ]
    if source.manifest:
        generator = {k: v for k, v in source.manifest.items() if k != "files"}
        models = {k: v for k, v in generator.items() if "model" in k.lower()}
        prompts = {k: v for k, v in generator.items() if "prompt" in k.lower()}
        if models:
            lines.append("\nModels: " + json.dumps(models, ensure_ascii=False, sort_keys=True))
        if prompts:
            lines.append("\nPrompt templates: " + json.dumps(prompts, ensure_ascii=False, sort_keys=True))
        lines.append(
            "\nGenerator settings (from the source manifest):\n\n```json\n"
            + json.dumps(generator, ensure_ascii=False, indent=1, sort_keys=True)
            + "\n```"
        )
    if source.note:
        lines.append("\n" + source.note)
    if not source.manifest and not source.note:
        lines.append(
            "\nThe source carries no generation manifest, so the models and prompts are not "
            "recorded here; for the original RoleBench see the RoleLLM paper (RoleGPT answers "
            "general instructions in character, Context-Instruct writes role-specific questions)."
        )
    return "\n".join(lines)


def limitations_text(manifest: dict[str, Any]) -> str:
    items = [
        "Answers come from the generator described above (for RoleBench: language models imitating "
        "characters); they can be wrong about the character's story and carry the generator's biases.",
        "Text is kept exactly as in the source: English role-specific questions and answers often "
        "begin with a space, and test rows may carry several references (merged duplicate questions).",
        "`type` of `rolegpt_baseline` rows is copied from the test row with the same role and question "
        "(the source files have none); it is an empty string where no test row matches.",
        "`verify` reports instructions shared between train and test of a config; general "
        "instructions are shared across roles by design.",
    ]
    missing = [c for c in ("zh-general", "eng-instruction_generalization-general") if c not in manifest["configs"]]
    dropped = {
        c: info["dropped_train_leaks"] for c, info in manifest["configs"].items() if "dropped_train_leaks" in info
    }
    if dropped:
        items.append(
            "Train rows whose (role, question) was also in test were dropped at build time: "
            + ", ".join(f"`{c}` {n}" for c, n in dropped.items())
            + "."
        )
    if missing:
        items.append("This build does not contain every RoleBench config (absent: " + ", ".join(missing) + ").")
    return "\n".join(f"- {item}" for item in items)


def render_card(
    manifest: dict[str, Any], source: Source, template: Path | None = None, repo_id: str = "NAMESPACE/rolebench"
) -> str:
    from data_gen.release.layout import ReleaseError

    template = Path(template) if template else DEFAULT_TEMPLATE
    if not template.is_file():
        raise ReleaseError(f"{template}: dataset card template not found (pass --card-template)")
    header = yaml.safe_dump(front_matter(manifest), sort_keys=False, allow_unicode=True, width=1000)
    names = list(manifest["configs"])
    return Template(template.read_text(encoding="utf-8")).substitute(
        front_matter=header,
        pretty_name=manifest["name"],
        version=manifest["version"],
        repo_id=repo_id,
        first_config=names[0],
        config_list=", ".join(names),
        counts_table=counts_table(manifest),
        generation=generation_text(manifest, source),
        limitations=limitations_text(manifest),
    )


def render_changelog(manifest: dict[str, Any], notes: str = "", previous: str = "") -> str:
    """New entry on top of the previous release's CHANGELOG.md (if given)."""
    entry = [f"## v{manifest['version']}", ""]
    if notes:
        entry.append(f"- {notes}")
    entry.append(f"- Source: {manifest['source']['kind']}, manifest sha256 `{manifest['source']['manifest_sha256']}`.")
    for name, config in manifest["configs"].items():
        counts = ", ".join(f"{split} {info['rows']}" for split, info in config["splits"].items())
        leaks = (
            f" ({config['dropped_train_leaks']} train rows dropped: also in test)"
            if "dropped_train_leaks" in config
            else ""
        )
        entry.append(f"- `{name}`: {counts}{leaks}.")
    body = previous.removeprefix("# Changelog\n").lstrip("\n")
    return "# Changelog\n\n" + "\n".join(entry) + "\n" + ("\n" + body if body else "")
