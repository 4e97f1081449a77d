"""The roles a server offers as model ids: each is a role name with its description (from a RoleBench
source's profiles or a character card), and a request to it gets the role system instruction exactly
as training builds it (chat_format.role_system_text), unless it brings a system message of its own."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from data_gen.pipeline.cards import read_cards
from data_gen.rolebench import LANGS, RoleBenchError
from rolellm_jax.data.chat_format import role_system_text
from rolellm_jax.data.rolebench_source import read_descriptions


@dataclasses.dataclass(frozen=True)
class Role:
    name: str
    lang: str
    description: str
    greeting: str = ""  # a card's first message: what a chat shows before the user speaks

    def system_text(self) -> str:
        return role_system_text(self.lang, self.name, self.description)


def roles_from_profiles(source: str | Path) -> dict[str, Role]:
    """Model id -> role for every role described in a RoleBench source (both languages when it has
    them; a name that both have is ``NAME@zh`` for the second)."""
    roles: dict[str, Role] = {}
    problems = []
    for lang in LANGS:
        try:
            descriptions = read_descriptions(source, lang)
        except RoleBenchError as err:
            problems.append(str(err))
            continue
        for name, description in descriptions.items():
            model_id = name if name not in roles else f"{name}@{lang}"
            roles[model_id] = Role(name, lang, description)
    if not roles:
        raise RoleBenchError(f"--profiles {source}: no role descriptions found ({'; '.join(problems)})")
    return roles


def roles_from_cards(folder: str | Path) -> dict[str, Role]:
    """Model id (the character's name) -> role for every card in ``folder`` (data_gen/pipeline/cards.py)."""
    return {c.name: Role(c.name, c.lang, c.description, c.greeting) for c in read_cards(folder)}


def merge_roles(*catalogs: dict[str, Role]) -> dict[str, Role]:
    """One catalog; a model id in two of them is an error (a request could not say which it means)."""
    merged: dict[str, Role] = {}
    for catalog in catalogs:
        for model_id, role in catalog.items():
            if model_id in merged:
                raise RoleBenchError(f"model id {model_id!r} is both a profile role and a card (rename the card)")
            merged[model_id] = role
    return merged


def with_role_system(role: Role | None, messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """The conversation the model sees: the role's system text first unless one is given."""
    if role is None or (messages and messages[0]["role"] == "system"):
        return messages
    return [{"role": "system", "content": role.system_text()}, *messages]
