"""An OpenAI-compatible HTTP server over the engine (FastAPI; run it with uvicorn).

Routes: ``GET /health``, ``GET /v1/models`` (the checkpoint and one id per role),
``POST /v1/chat/completions`` (JSON reply or SSE stream). This layer only translates the wire
format (openai_wire.py): rendering is chat_format's, decoding the engine's. Each request is
isolated: its errors become its own HTTP error (OpenAI's error shape), never the server's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import ipaddress
import logging
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from rolellm_jax.data.chat_format import ChatFormatError, render_chat_prompt
from rolellm_jax.errors import UserError
from rolellm_jax.inference import openai_wire as wire
from rolellm_jax.inference.engine import Engine, EngineBusy, Finished, Piece
from rolellm_jax.inference.engine import Request as EngineRequest
from rolellm_jax.inference.generate import GenerationError
from rolellm_jax.inference.roles import Role, with_role_system

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 1 << 20
DISCONNECT_POLL_S = 0.5  # how often a waiting non-streamed request checks that its client is still there


class ServeError(UserError, ValueError):
    """A server setting that cannot be used (the message names the flag)."""


def check_bind(host: str, api_key: str | None, insecure_no_auth: bool) -> None:
    """Anyone who reaches a non-loopback address could use the model: refuse it without a key."""
    if api_key or insecure_no_auth or host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        loopback = False  # a host name: it may resolve to anything
    if not loopback:
        raise ServeError(
            f"--host {host}: serving beyond this machine needs --api-key (or ROLELLM_API_KEY); "
            "pass --insecure-no-auth to serve without one"
        )


@dataclasses.dataclass
class ServedModel:
    engine: Engine
    tokenizer: Any
    family: str
    model_id: str
    roles: dict[str, Role] = dataclasses.field(default_factory=dict)

    def known_ids(self) -> list[str]:
        return [self.model_id, *self.roles]


def build_app(served: ServedModel, *, api_key: str | None = None, max_body_bytes: int = MAX_BODY_BYTES) -> FastAPI:
    app = FastAPI(title="rolellm-jax", docs_url=None, redoc_url=None, openapi_url=None)
    created = int(time.time())

    @app.exception_handler(wire.WireError)
    async def wire_error(_request: Request, err: wire.WireError) -> JSONResponse:
        return JSONResponse(err.body(), status_code=err.status, headers=err.headers)

    @app.exception_handler(Exception)
    async def server_error(_request: Request, err: Exception) -> JSONResponse:
        logger.exception("request failed")
        body = wire.WireError(500, f"internal error: {type(err).__name__}", type="server_error").body()
        return JSONResponse(body, status_code=500)

    def authorize(request: Request) -> None:
        if api_key is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
            raise wire.WireError(
                401,
                "missing or wrong API key: send 'Authorization: Bearer <key>'",
                type="invalid_request_error",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", **served.engine.load()}

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        authorize(request)

        def entry(model_id: str) -> dict[str, Any]:
            role = served.roles.get(model_id)
            extra = {"greeting": role.greeting} if role is not None and role.greeting else {}  # clients ignore it
            return {"id": model_id, "object": "model", "created": created, "owned_by": "rolellm-jax"} | extra

        return {"object": "list", "data": [entry(m) for m in served.known_ids()]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        authorize(request)
        req = wire.parse_chat_request(await read_body(request, max_body_bytes))
        engine_request = to_engine_request(served, req)
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        try:
            handle = served.engine.submit(engine_request, lambda ev: loop.call_soon_threadsafe(events.put_nowait, ev))
        except EngineBusy as err:
            raise wire.WireError(
                429, str(err), type="rate_limit_error", code="rate_limit_exceeded", headers={"Retry-After": "1"}
            ) from None
        except GenerationError as err:
            raise wire.WireError(400, str(err)) from None
        cid = wire.new_id()
        if req.stream:
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            return StreamingResponse(
                stream_chunks(handle, events, cid, req.model, include_usage),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        return await whole_reply(request, handle, events, cid, req.model)

    return app


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 once it is over ``limit`` (before reading it when it says so)."""
    declared = request.headers.get("content-length")
    too_big = wire.WireError(413, f"request body over {limit} bytes", code="request_too_large")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_big
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise too_big
    return bytes(body)


def to_engine_request(served: ServedModel, req: wire.ChatCompletionRequest) -> EngineRequest:
    if req.model not in served.known_ids():
        raise wire.WireError(
            404,
            f"model {req.model!r} not found; known models: {', '.join(map(repr, served.known_ids()))}",
            param="model",
            code="model_not_found",
        )
    messages = with_role_system(served.roles.get(req.model), req.chat_messages())
    try:
        prompt = render_chat_prompt(served.tokenizer, served.family, messages)
    except ChatFormatError as err:
        raise wire.WireError(400, str(err), param="messages") from None
    max_len = served.engine.max_len
    asked = req.max_completion_tokens or req.max_tokens
    max_tokens = asked or max_len - len(prompt)
    if len(prompt) + max_tokens > max_len or max_tokens < 1:
        what = f"and max_tokens is {max_tokens}: together" if asked else "(no room for an answer):"
        raise wire.WireError(
            400,
            f"the prompt has {len(prompt)} tokens {what} over this model's maximum context length of {max_len} tokens",
            param="max_tokens" if asked else "messages",
            code="context_length_exceeded",
        )
    return EngineRequest(
        prompt_ids=tuple(prompt),
        max_tokens=max_tokens,
        temperature=1.0 if req.temperature is None else req.temperature,  # OpenAI's default
        top_p=1.0 if req.top_p is None else req.top_p,
        top_k=req.top_k or 0,
        repetition_penalty=1.0 if req.repetition_penalty is None else req.repetition_penalty,
        min_tokens=req.min_tokens or 0,
        seed=req.seed,
        stop=req.stop_strings(),
    )


def _failure(event: Finished) -> wire.WireError:
    return wire.WireError(500, f"generation failed: {event.error}", type="server_error")


async def whole_reply(request: Request, handle, events: asyncio.Queue, cid: str, model: str) -> dict[str, Any]:
    watcher = asyncio.create_task(_cancel_when_gone(request, handle, events))
    pieces = []
    try:
        while True:
            event = await events.get()
            if event is None:  # the client went away (the watcher cancelled the request)
                raise wire.WireError(499, "client closed the request")
            if isinstance(event, Piece):
                pieces.append(event.text)
                continue
            if event.reason == "error":
                raise _failure(event)
            use = wire.usage(event.prompt_tokens, event.completion_tokens)
            return wire.completion_body(cid, model, "".join(pieces), _finish_reason(event), use)
    finally:
        watcher.cancel()
        handle.cancel()  # a no-op once finished; frees the slot when this task is cancelled


async def _cancel_when_gone(request: Request, handle, events: asyncio.Queue) -> None:
    """Whether the request waits for a slot or decodes, a client that leaves cancels it."""
    while not await request.is_disconnected():
        await asyncio.sleep(DISCONNECT_POLL_S)
    handle.cancel()
    events.put_nowait(None)


async def stream_chunks(handle, events: asyncio.Queue, cid: str, model: str, include_usage: bool):
    """SSE chunks: the assistant role, content deltas, the finish (with usage), ``[DONE]``. A client
    that goes away ends this generator (Starlette cancels or closes it): its request is cancelled."""
    try:
        yield wire.sse(wire.chunk_body(cid, model, {"role": "assistant", "content": ""}))
        while True:
            event = await events.get()
            if isinstance(event, Piece):
                yield wire.sse(wire.chunk_body(cid, model, {"content": event.text}))
                continue
            if event.reason == "error":
                yield wire.sse(_failure(event).body())
                return
            use = wire.usage(event.prompt_tokens, event.completion_tokens)
            yield wire.sse(wire.chunk_body(cid, model, {}, _finish_reason(event), None if include_usage else use))
            if include_usage:  # OpenAI's stream_options: one more chunk, usage and no choices
                yield wire.sse(wire.chunk_body(cid, model, None, use=use))
            yield wire.sse("[DONE]")
            return
    finally:
        handle.cancel()


def _finish_reason(event: Finished) -> str:
    return "length" if event.reason == "length" else "stop"
