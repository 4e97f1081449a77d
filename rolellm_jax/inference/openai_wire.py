"""The OpenAI chat-completions wire format: request parsing (pydantic) and the reply / chunk / error
bodies, as the ``openai`` client reads them. Nothing here knows about models or the engine."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class WireError(Exception):
    """An HTTP error in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")  # name, tool fields...: not used
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # clients send more (user, logprobs=false, ...): ignored
    model: str
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0)  # not OpenAI's; vLLM and others take it too
    repetition_penalty: float | None = Field(None, gt=0)  # not OpenAI's either; vLLM's (transformers' meaning)
    min_tokens: int | None = Field(None, ge=0)  # vLLM's: no EOS or stop string before this many tokens
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int | None = Field(None, ge=1, le=1)

    def stop_strings(self) -> tuple[str, ...]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stops) > 4:
            raise WireError(400, f"stop: at most 4 stop strings, got {len(stops)}", param="stop")
        return tuple(s for s in stops if s)

    def chat_messages(self) -> list[dict[str, str]]:
        # "developer" is the newer OpenAI name of the system role
        return [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in self.messages]


def _field(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part not in ("str", "list[TextPart]", "literal['text']") and not str(part).startswith("function-"):
            out += f".{part}" if out else str(part)
    return out or "body"


def parse_chat_request(raw: bytes) -> ChatCompletionRequest:
    """The request, or a 400 naming the first bad field."""
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise WireError(400, f"the body is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise WireError(400, "the body must be a JSON object")
    try:
        return ChatCompletionRequest.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        param = _field(first["loc"])
        if param == "n":
            raise WireError(400, f"n={data.get('n')!r}: only n=1 is supported", param="n") from None
        raise WireError(400, f"{param}: {first['msg']}", param=param) from None


def new_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def completion_body(cid: str, model: str, text: str, finish_reason: str, use: dict) -> dict[str, Any]:
    return {
        "id": cid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish_reason,
                "logprobs": None,
            }
        ],
        "usage": use,
    }


def chunk_body(
    cid: str, model: str, delta: dict | None, finish_reason: str | None = None, use: dict | None = None
) -> dict[str, Any]:
    """A stream chunk; ``delta`` None makes the usage-only chunk (no choices) of stream_options."""
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}]
    body = {"id": cid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
    return body | {"choices": choices} | ({"usage": use} if use is not None else {})


def sse(data: dict[str, Any] | str) -> str:
    """One server-sent event: ``data: <json>`` and a blank line."""
    return f"data: {data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)}\n\n"
