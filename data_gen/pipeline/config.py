"""The generator's configuration: one dataclass, filled from the CLI, recorded in the manifest."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from data_gen.errors import ConfigError
from data_gen.rolebench import RoleBenchError, canonical_lang


@dataclass
class GenConfig:
    lang: str = "eng"  # "eng" | "zh": RoleBench's language tags
    model: str = "gpt-4o-mini"
    seed: int = 0
    # profiles
    segment_tokens: int = 1500  # token budget of one script segment (estimated tokens)
    desc_temperature: float = 0.2
    desc_max_tokens: int = 600  # per description request (3rd person, then its 2nd-person rewrite)
    # Context-Instruct
    questions_per_segment: int = 5  # asked for, per segment and kind
    ci_temperature: float = 0.7
    ci_max_tokens: int = 1500
    dedup_threshold: float = 0.7  # normalised LCS (Rouge-L-like) above which a question is a duplicate
    min_keep_share: float = 0.2  # a stage keeping less of a role's items than this warns (with the reasons)
    # RoleGPT
    few_shot: int = 3  # BM25-retrieved dialogue turns (user/assistant pairs)
    samples: int = 6  # 5 references + 1 baseline (the last)
    rolegpt_temperature: float = 0.7
    rolegpt_max_tokens: int = 400
    # splits
    general_test_fraction: float = 0.2  # held-out general instructions (instruction generalisation)
    role_specific_test_fraction: float = 0.2  # held-out role-specific questions per role
    test_roles: list[str] = field(default_factory=list)  # role generalisation; empty: pick test_role_count
    test_role_count: int = 1

    def __post_init__(self) -> None:
        try:  # eng / en / zh, as everywhere else
            object.__setattr__(self, "lang", canonical_lang(self.lang))
        except RoleBenchError:
            raise ConfigError(f"lang: {self.lang!r} is not one of eng (or en), zh") from None
        if self.samples < 2:
            raise ConfigError(f"samples: {self.samples} < 2 (need at least one reference and the baseline)")
        for name in ("general_test_fraction", "role_specific_test_fraction", "dedup_threshold", "min_keep_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name}: {getattr(self, name)} is not in [0, 1]")

    @property
    def prompt_lang(self) -> str:
        """Suffix of prompt template files: en | zh."""
        return "en" if self.lang == "eng" else "zh"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
