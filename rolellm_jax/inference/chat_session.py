"""A conversation with a role, for the REPL (rolellm_jax/chat.py): the history, the commands
``/reset``, ``/role NAME``, ``/save FILE``, ``/quit``, and two ways to get answers streamed:

- ``EngineBackend``: in-process, an engine over a loaded checkpoint (one slot); the conversation
  is rendered by chat_format.render_chat_prompt with the role system text as training built it;
- ``ServerBackend``: a client of a running OpenAI-compatible server (ours or any): the role is the
  model id, so our server adds the role's system text itself; a role known here (a card, profiles)
  sends its system text as the first message instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Protocol, TextIO

from data_gen.files import write_json
from rolellm_jax.data.chat_format import render_chat_prompt
from rolellm_jax.errors import UserError
from rolellm_jax.inference.engine import Engine, Finished, Piece, Request
from rolellm_jax.inference.roles import Role, with_role_system


class ChatError(UserError, ValueError):
    """A REPL command that cannot be done (the message says which and why)."""


class Backend(Protocol):
    def stream(self, model_id: str, messages: list[dict[str, str]], settings: dict[str, Any]) -> Iterator[str]: ...


class EngineBackend:
    def __init__(self, engine: Engine, tokenizer, family: str):
        self.engine, self.tokenizer, self.family = engine, tokenizer, family
        self.last_prompt: list[int] = []

    def stream(self, model_id: str, messages: list[dict[str, str]], settings: dict[str, Any]) -> Iterator[str]:
        self.last_prompt = render_chat_prompt(self.tokenizer, self.family, messages)
        room = self.engine.max_len - len(self.last_prompt)
        if room < 1:
            raise ChatError(f"the conversation has {len(self.last_prompt)} tokens: no room left (/reset)")
        max_tokens = min(settings.get("max_tokens") or room, room)
        request = Request(
            tuple(self.last_prompt), max_tokens, settings.get("temperature", 0.7), seed=settings.get("seed")
        )
        for event in self.engine.submit(request):
            if isinstance(event, Piece):
                yield event.text
            elif isinstance(event, Finished) and event.reason == "error":
                raise ChatError(f"generation failed: {event.error}")


class ServerBackend:
    def __init__(self, base_url: str, api_key: str | None):
        import openai

        self.client = openai.OpenAI(base_url=base_url, api_key=api_key or "none")

    def stream(self, model_id: str, messages: list[dict[str, str]], settings: dict[str, Any]) -> Iterator[str]:
        import openai

        params = {k: v for k, v in settings.items() if v is not None}
        try:
            for chunk in self.client.chat.completions.create(model=model_id, messages=messages, stream=True, **params):
                if chunk.choices and chunk.choices[0].delta.content:
                    yield chunk.choices[0].delta.content
        except openai.APIError as err:
            raise ChatError(f"the server answered: {err}") from None


class ChatSession:
    """``model_id`` is what a server is asked for; ``role`` (when known here) adds its system text."""

    def __init__(
        self,
        backend: Backend,
        model_id: str,
        role: Role | None = None,
        roles: dict[str, Role] | None = None,
        settings: dict[str, Any] | None = None,
    ):
        self.backend, self.model_id, self.role = backend, model_id, role
        self.roles = roles or {}
        self.settings = settings or {}
        self.history: list[dict[str, str]] = []

    def messages(self) -> list[dict[str, str]]:
        return with_role_system(self.role, self.history)

    def ask(self, text: str) -> Iterator[str]:
        """The answer to ``text``, streamed; history keeps both once the answer is complete."""
        pieces = []
        for piece in self.backend.stream(
            self.model_id, [*self.messages(), {"role": "user", "content": text}], self.settings
        ):
            pieces.append(piece)
            yield piece
        self.history += [{"role": "user", "content": text}, {"role": "assistant", "content": "".join(pieces)}]

    def switch_role(self, name: str) -> None:
        if name in self.roles:
            self.role = self.roles[name]
        elif isinstance(self.backend, ServerBackend):  # the server's own role id
            self.role, self.model_id = None, name
        else:
            raise ChatError(f"/role {name}: unknown role; known: {', '.join(sorted(self.roles)) or 'none'}")
        self.history = []

    def save(self, path: str) -> None:
        write_json(path, {"model": self.model_id, "role": self.role and self.role.name, "messages": self.messages()})


HELP = "commands: /reset (forget the conversation), /role NAME, /save FILE, /quit"


def run_repl(session: ChatSession, lines: Iterable[str], out: TextIO) -> None:
    """Read user lines, print streamed answers; commands start with '/'."""
    if session.role is not None and session.role.greeting:
        print(f"{session.role.name}: {session.role.greeting}", file=out)  # shown, not part of the history
    for line in lines:
        line = line.strip()
        if not line:
            continue
        command, _, arg = line.partition(" ")
        try:
            if command == "/quit":
                return
            elif command == "/reset":
                session.history = []
                print("(conversation reset)", file=out)
            elif command == "/role":
                session.switch_role(arg.strip())
                print(f"(now talking to {arg.strip()})", file=out)
            elif command == "/save":
                if not arg.strip():
                    raise ChatError("/save needs a file name")
                session.save(arg.strip())
                print(f"(saved to {arg.strip()})", file=out)
            elif command.startswith("/"):
                print(HELP, file=out)
            else:
                for piece in session.ask(line):
                    print(piece, end="", file=out, flush=True)
                print(file=out)
        except UserError as err:
            print(f"error: {err}", file=out)
