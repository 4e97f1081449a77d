"""Prompt templates are files in ``data_gen/prompts/`` (``<name>_<en|zh>.txt``, str.format fields).

Every template a run uses is recorded (name -> sha256) so the manifest pins the exact prompts.
"""

from __future__ import annotations

from importlib import resources

from data_gen.files import sha256_text


class TemplateRegistry:
    """Loads templates and remembers the hash of each one used."""

    def __init__(self) -> None:
        self.used: dict[str, str] = {}

    def text(self, name: str, lang: str) -> str:
        fname = f"{name}_{lang}.txt"
        text = resources.files("data_gen.prompts").joinpath(fname).read_text(encoding="utf-8")
        self.used[fname] = sha256_text(text)
        return text

    def render(self, name: str, lang: str, **fields: str) -> str:
        return self.text(name, lang).format(**fields)
