"""Stage 1, role profiles: parse scripts, write RoleBench's profile layout, segment, describe roles.

Script format (plain UTF-8 text, one file per script; see data_gen/demo/ for examples)::

    TITLE: The Adventure of the Copper Kettle      <- required, first non-comment line
    ROLE: Sherlock Holmes = HOLMES                  <- a profiled role: display name = speaker tag
    # a comment                                     <- ignored, as are blank lines
    SCENE 1. Baker Street, a foggy morning.         <- scene heading: a line starting with SCENE
    [Rain against the window.]                      <- narration (speaker "Narration")
    HOLMES: You have been in Kensington, Watson.    <- a turn: SPEAKER: text  (":" or "："）
        and you came back on foot.                  <- an indented line continues the last turn

Outputs under ``WORK/profiles-<lang>/`` (RoleBench's layout plus our working files):
``profiles-<lang>-{role}.jsonl`` with rows ``{act_id, diag_id, role, content}`` (every turn of the
scenes the role speaks in; act_id = scene index in its script, diag_id = turn index in the scene),
``desc.json`` (role -> second-person description with catchphrases), ``scripts.json`` (role ->
script title), ``split_info.txt`` (role and number of segments) and ``segments.jsonl`` (the
segments that Context-Instruct reads: scenes packed under ``segment_tokens`` estimated tokens).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from data_gen.errors import UserError
from data_gen.files import atomic_write_text, read_jsonl, write_json, write_jsonl
from data_gen.llm.client import LLMClient
from data_gen.llm.types import ChatRequest, ChatResult, estimate_tokens
from data_gen.pipeline.config import GenConfig
from data_gen.pipeline.templates import TemplateRegistry

NARRATION = "Narration"
_TURN = re.compile(r"^(?P<speaker>[^\s:：\[#][^:：]{0,39}?)\s*[:：]\s*(?P<text>.*)$")
_DIRECTIVE = re.compile(r"^(?P<name>TITLE|ROLE)\s*[:：]\s*(?P<value>.*)$")
_SCENE = re.compile(r"^(SCENE\b|场景|第.{1,6}[场幕])")


class ScriptError(UserError):
    """A script or profile problem; the message names the file and line, or the role."""


@dataclass
class Turn:
    speaker: str
    text: str
    line: int


@dataclass
class Scene:
    heading: str
    turns: list[Turn] = field(default_factory=list)


@dataclass
class Script:
    path: Path
    title: str
    roles: dict[str, str]  # display name -> speaker tag
    scenes: list[Scene]

    def speaker_name(self, tag: str) -> str:
        for name, t in self.roles.items():
            if t == tag:
                return name
        return tag


def parse_script(path: str | Path) -> Script:
    """Parse one script file; any line it cannot read raises ScriptError("file:line: ...")."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ScriptError(f"{path}: cannot read script ({e})") from None
    title, roles, scenes = None, {}, []
    last: Turn | None = None
    for n, raw in enumerate(lines, 1):
        line = raw.rstrip()
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        where = f"{path}:{n}"
        if line[0] in " \t":  # continuation of the previous turn
            if last is None:
                raise ScriptError(f"{where}: indented continuation line with no turn before it")
            last.text = f"{last.text} {stripped}".strip()
            continue
        if m := _DIRECTIVE.match(line):
            if m["name"] == "TITLE":
                title = m["value"].strip()
            else:
                name, tag = _role_directive(where, line, m["value"].strip())
                roles[name] = tag
            continue
        if title is None:
            raise ScriptError(f"{where}: the script must start with 'TITLE: <title>'")
        if _SCENE.match(line):
            scenes.append(Scene(stripped))
            last = None
            continue
        if not scenes:
            raise ScriptError(f"{where}: dialogue before the first SCENE heading")
        last = _turn(where, n, line, stripped)
        scenes[-1].turns.append(last)
    _check_script(path, title, roles, scenes)
    return Script(path, title, roles, scenes)


def _role_directive(where: str, line: str, value: str) -> tuple[str, str]:
    """(display name, speaker tag) of a 'ROLE: Display Name = SPEAKER' line."""
    name, eq, tag = value.partition("=")
    if not eq or not name.strip() or not tag.strip():
        raise ScriptError(f"{where}: expected 'ROLE: Display Name = SPEAKER', got {line!r}")
    return name.strip(), tag.strip()


def _turn(where: str, n: int, line: str, stripped: str) -> Turn:
    """The turn of a scene line: [narration] or 'SPEAKER: text'."""
    if line.startswith("[") or line.startswith("("):
        if not line.endswith("]") and not line.endswith(")"):
            raise ScriptError(f"{where}: unclosed narration bracket")
        return Turn(NARRATION, stripped[1:-1].strip(), n)
    if (m := _TURN.match(line)) and len(m["speaker"].split()) <= 4:
        return Turn(m["speaker"].strip(), m["text"].strip(), n)
    raise ScriptError(
        f"{where}: expected 'SPEAKER: text', a SCENE heading, [narration] or an indented "
        f"continuation; got {stripped[:60]!r}"
    )


def _check_script(path: Path, title: str | None, roles: dict[str, str], scenes: list[Scene]) -> None:
    """A whole script's requirements: a title, at least one role, dialogue for every role."""
    if title is None:
        raise ScriptError(f"{path}:1: the script must start with 'TITLE: <title>'")
    if not roles:
        raise ScriptError(f"{path}: no 'ROLE: Name = SPEAKER' line: which characters should get profiles?")
    for name, tag in roles.items():
        if not any(t.speaker == tag and t.text for s in scenes for t in s.turns):
            raise ScriptError(f"{path}: role {name!r} (speaker {tag}) has no dialogue in this script")


def profile_rows(script: Script, role: str) -> list[dict]:
    """RoleBench profile rows: every turn of each scene where the role speaks."""
    tag = script.roles[role]
    rows = []
    for act_id, scene in enumerate(script.scenes):
        if not any(t.speaker == tag for t in scene.turns):
            continue
        for diag_id, t in enumerate(scene.turns):
            rows.append(
                {"act_id": act_id, "diag_id": diag_id, "role": script.speaker_name(t.speaker), "content": t.text}
            )
    if not any(r["role"] == role and r["content"].strip() for r in rows):
        raise ScriptError(f"profile of role {role!r} has no dialogue of the role")
    return rows


def segment_rows(rows: list[dict], budget: int) -> list[list[dict]]:
    """Pack whole scenes (act_id groups) into segments of at most ``budget`` estimated tokens; a
    scene larger than the budget is split at turn boundaries (the only place a scene is cut)."""
    scenes: list[list[dict]] = []
    for r in rows:
        if not scenes or scenes[-1][0]["act_id"] != r["act_id"]:
            scenes.append([])
        scenes[-1].append(r)
    segments: list[list[dict]] = []
    current: list[dict] = []
    size = 0
    for scene in scenes:
        cost = sum(_turn_tokens(r) for r in scene)
        if current and size + cost > budget:
            segments.append(current)
            current, size = [], 0
        if cost > budget:
            for r in scene:
                if current and size + _turn_tokens(r) > budget:
                    segments.append(current)
                    current, size = [], 0
                current.append(r)
                size += _turn_tokens(r)
            continue
        current.extend(scene)
        size += cost
    if current:
        segments.append(current)
    return segments


def _turn_tokens(r: dict) -> int:
    return estimate_tokens(f"{r['role']}: {r['content']}")


def render_dialogue(rows: list[dict]) -> str:
    return "\n".join(f"{r['role']}: {r['content']}" for r in rows)


def role_file_name(lang: str, role: str) -> str:
    return f"profiles-{lang}-{role.replace('/', '_')}.jsonl"


# ----------------------------------------------------------------------------- descriptions
_LABEL = r"(?:\*\*|__)?\s*{}\s*(?:\*\*|__)?\s*[:：]\s*(?:\*\*|__)?"
_DESC = re.compile(_LABEL.format(r"(?:Description|描述)"), re.I)
_CATCH = re.compile(_LABEL.format(r"(?:Catchphrases?|口头禅)"), re.I)
_SECOND = re.compile(r"^\s*(?:\*\*)?\s*(?:Your description is|你的描述是)\s*(?:\*\*)?\s*[:：]?\s*(?:\*\*)?\s*", re.I)


def parse_third_person(text: str) -> tuple[str, str]:
    """(description, catchphrases) from 'Description: ... Catchphrases: ...' (labels optional)."""
    text = text.strip()
    c = _CATCH.search(text)
    body, catch = (text[: c.start()], text[c.end() :]) if c else (text, "")
    d = _DESC.search(body)
    desc = body[d.end() :] if d else body
    return " ".join(desc.split()), " ".join(catch.split())


def parse_second_person(text: str) -> str:
    return " ".join(_SECOND.sub("", text.strip(), count=1).split())


def check_scripts_dir(scripts_dir: str | Path) -> list[Path]:
    """The *.txt scripts of --scripts, sorted; a missing folder or one without scripts is an error."""
    scripts_dir = Path(scripts_dir)
    if not scripts_dir.is_dir():
        what = "not a folder" if scripts_dir.exists() else "no such folder"
        raise ScriptError(f"{scripts_dir}: {what} (--scripts: the folder of *.txt scripts)")
    files = sorted(scripts_dir.glob("*.txt"))
    if not files:
        raise ScriptError(f"{scripts_dir}: no *.txt scripts found")
    return files


Roles = dict[str, tuple[Script, list[dict]]]  # role -> (its script, its profile rows)


def build_profiles(
    scripts_dir: str | Path, work: str | Path, cfg: GenConfig, client: LLMClient, templates: TemplateRegistry
) -> list[ChatResult]:
    """Stage 1. Idempotent: parsing is pure and the LLM steps replay from the journal."""
    scripts_dir, out = Path(scripts_dir), Path(work) / f"profiles-{cfg.lang}"
    roles = _roles_of([parse_script(p) for p in check_scripts_dir(scripts_dir)])
    segments = {role: segment_rows(rows, cfg.segment_tokens) for role, (_, rows) in roles.items()}
    params = {"temperature": cfg.desc_temperature, "max_tokens": cfg.desc_max_tokens}
    third, parsed = _third_person(roles, segments, params, cfg, client, templates)
    second, desc = _second_person(parsed, params, cfg, client, templates)
    _write_profiles(out, cfg, roles, segments, desc)
    return third + second


def _roles_of(scripts: list[Script]) -> Roles:
    """Every declared role with its script and rows; a role declared by two scripts is an error."""
    roles: Roles = {}
    for s in scripts:
        for role in s.roles:
            if role in roles:
                raise ScriptError(f"{s.path}: role {role!r} is also declared in {roles[role][0].path}")
            roles[role] = (s, profile_rows(s, role))
    return roles


def _user_request(content: str, params: dict) -> ChatRequest:
    return ChatRequest([{"role": "user", "content": content}], params)


def _third_person(
    roles: Roles, segments: dict, params: dict, cfg: GenConfig, client: LLMClient, templates: TemplateRegistry
) -> tuple[list[ChatResult], dict[str, tuple[str, str]]]:
    """The third-person description of each role from its first script segment: (results, role -> parsed)."""
    requests = [
        _user_request(
            templates.render(
                "desc_third_person",
                cfg.prompt_lang,
                title=s.title,
                role=role,
                script=render_dialogue(segments[role][0]),
            ),
            params,
        )
        for role, (s, _) in roles.items()
    ]
    third = client.run_many(requests, stage="profiles: description (3rd person)")
    parsed = {}
    for role, r in zip(roles, third):
        if not r.ok:
            raise ScriptError(f"role {role!r}: description request failed ({r.error}); rerun with --retry-failed")
        parsed[role] = parse_third_person(r.text)
        if not parsed[role][0]:
            raise ScriptError(f"role {role!r}: the model returned an empty description; rerun with --retry-failed")
    return third, parsed


def _second_person(
    parsed: dict[str, tuple[str, str]], params: dict, cfg: GenConfig, client: LLMClient, templates: TemplateRegistry
) -> tuple[list[ChatResult], dict[str, str]]:
    """The second-person rewrite of each description, catchphrases appended: (results, role -> description)."""
    requests = [
        _user_request(templates.render("desc_second_person", cfg.prompt_lang, description=parsed[role][0]), params)
        for role in parsed
    ]
    second = client.run_many(requests, stage="profiles: description (2nd person)")
    desc = {}
    for role, r in zip(parsed, second):
        text = parse_second_person(r.text) if r.ok else ""
        if not text:
            raise ScriptError(f"role {role!r}: second-person rewrite failed ({r.error or 'empty answer'})")
        catch = parsed[role][1]
        if catch:
            text += f" Catchphrases: {catch}" if cfg.lang == "eng" else f"口头禅：{catch}"
        desc[role] = text
    return second, desc


def _write_profiles(out: Path, cfg: GenConfig, roles: Roles, segments: dict, desc: dict[str, str]) -> None:
    for role, (_, rows) in roles.items():
        write_jsonl(out / role_file_name(cfg.lang, role), rows)
    write_json(out / "desc.json", desc)
    write_json(out / "scripts.json", {role: s.title for role, (s, _) in roles.items()})
    atomic_write_text(out / "split_info.txt", "".join(f"{role}\t{len(segments[role])}\n" for role in roles))
    write_jsonl(
        out / "segments.jsonl",
        [
            {"role": role, "segment_id": i, "title": roles[role][0].title, "text": render_dialogue(seg)}
            for role in roles
            for i, seg in enumerate(segments[role])
        ],
    )


@dataclass
class Profiles:
    """What later stages read back from ``WORK/profiles-<lang>/``."""

    desc: dict[str, str]
    titles: dict[str, str]
    dialogues: dict[str, list[dict]]
    segments: list[dict]


def load_profiles(work: str | Path, lang: str) -> Profiles:
    d = Path(work) / f"profiles-{lang}"
    from data_gen.files import read_json

    desc = read_json(d / "desc.json")
    dialogues = {}
    for role in desc:
        rows = read_jsonl(d / role_file_name(lang, role))
        if not any(r.get("role") == role and str(r.get("content", "")).strip() for r in rows):
            raise ScriptError(f"{d / role_file_name(lang, role)}: profile has no dialogue for role {role!r}")
        dialogues[role] = rows
    return Profiles(desc, read_json(d / "scripts.json"), dialogues, read_jsonl(d / "segments.jsonl"))
