"""A local OpenAI-compatible chat-completions server for tests and benchmarks (127.0.0.1 only).

- ``POST /v1/chat/completions``: checks ``Authorization: Bearer <key>`` against the accepted keys
  (401 otherwise), sleeps ``latency`` seconds, answers with ``responder(body) -> (text,
  finish_reason)``; usage tokens are word counts, so costs are deterministic.
- Injected faults: ``fault_plan(body_key, attempt) -> None | "429" | "500" | "hang" | "malformed"``
  (``attempt`` counts from 1 per distinct request body). 429 carries ``Retry-After``; "hang"
  sleeps ``hang_seconds`` (past the client's timeout); "malformed" returns a body that is not JSON.
- Counters per request body (sha256 of its canonical JSON): ``attempts`` and ``successes`` (200s),
  plus ``auth_rejections``; ``GET /stats`` returns them as JSON for out-of-process use.

Usable as a context manager (``with FakeOpenAIServer(...) as srv: srv.base_url``) or as a process:
``python tests/fake_openai_server.py --latency 0.2`` prints the base URL on its first line.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

Responder = Callable[[dict], "tuple[str, str]"]
FaultPlan = Callable[[str, int], "str | None"]


def echo_responder(body: dict) -> tuple[str, str]:
    return "ok: " + body["messages"][-1]["content"][:40], "stop"


def body_key(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def hash_faults(every_429: int = 0, every_500: int = 0, every_hang: int = 0, every_malformed: int = 0) -> FaultPlan:
    """Deterministic faults on the *first* attempt of a request whose key hash is divisible by the
    given period (0 = never); the retry then succeeds. Same pattern for every run of the same data."""

    def plan(key: str, attempt: int) -> str | None:
        if attempt != 1:
            return None
        h = int(key[:8], 16)
        for period, fault in ((every_429, "429"), (every_500, "500"), (every_hang, "hang"),
                              (every_malformed, "malformed")):
            if period and h % period == 0:
                return fault
        return None

    return plan


class FakeOpenAIServer:
    def __init__(self, responder: Responder = echo_responder, *, keys: tuple[str, ...] = ("sk-test-key",),
                 latency: float = 0.0, fault_plan: FaultPlan | None = None, retry_after: str = "1",
                 hang_seconds: float = 5.0):
        self.responder = responder
        self.keys = set(keys)
        self.latency = latency
        self.fault_plan = fault_plan
        self.retry_after = retry_after
        self.hang_seconds = hang_seconds
        self.attempts: collections.Counter[str] = collections.Counter()
        self.successes: collections.Counter[str] = collections.Counter()
        self.auth_rejections = 0
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def start(self) -> "FakeOpenAIServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> "FakeOpenAIServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def stats(self) -> dict:
        with self.lock:
            return {"attempts": dict(self.attempts), "successes": dict(self.successes),
                    "auth_rejections": self.auth_rejections}

    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real endpoints

            def log_message(self, *args) -> None:  # quiet
                pass

            def _send(self, code: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(payload)

            def _error(self, code: int, message: str, headers: dict[str, str] | None = None) -> None:
                self._send(code, json.dumps({"error": {"message": message, "type": "fake", "code": code}}).encode(),
                           headers)

            def do_GET(self) -> None:
                if self.path.rstrip("/").endswith("/stats"):
                    self._send(200, json.dumps(server.stats()).encode())
                else:
                    self._error(404, "not found")

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length))
                auth = self.headers.get("Authorization", "")
                if auth.removeprefix("Bearer ") not in server.keys:
                    with server.lock:
                        server.auth_rejections += 1
                    self._error(401, "Incorrect API key provided.")
                    return
                key = body_key(body)
                with server.lock:
                    server.attempts[key] += 1
                    attempt = server.attempts[key]
                fault = server.fault_plan(key, attempt) if server.fault_plan else None
                if server.latency:
                    time.sleep(server.latency)
                if fault == "429":
                    self._error(429, "rate limited", {"Retry-After": server.retry_after})
                    return
                if fault == "500":
                    self._error(500, "internal error")
                    return
                if fault == "hang":
                    time.sleep(server.hang_seconds)
                    self._error(504, "too late")
                    return
                if fault == "malformed":
                    self._send(200, b'{"id": "x", "choices": [ {"mess')
                    return
                text, finish = server.responder(body)
                pt = sum(len(m["content"].split()) for m in body["messages"])
                ct = len(text.split())
                payload = {
                    "id": "chatcmpl-" + key[:12], "object": "chat.completion", "created": 0, "model": body["model"],
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                 "finish_reason": finish}],
                    "usage": {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct},
                }
                with server.lock:
                    server.successes[key] += 1
                self._send(200, json.dumps(payload, ensure_ascii=False).encode())

        return Handler


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latency", type=float, default=0.0)
    ap.add_argument("--key", default="sk-test-key")
    args = ap.parse_args()
    srv = FakeOpenAIServer(keys=(args.key,), latency=args.latency)
    print(srv.base_url, flush=True)
    try:
        srv.httpd.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
