"""A local OpenAI-compatible chat-completions server for tests and benchmarks (127.0.0.1 only).

- ``POST /v1/chat/completions``: checks ``Authorization: Bearer <key>`` against the accepted keys
  (401 otherwise), sleeps ``latency`` seconds, answers with ``responder(body) -> (text,
  finish_reason)``; usage tokens are word counts, so costs are deterministic.
- Injected faults: ``fault_plan(body_key, attempt) -> None | "400" | "429" | "500" | "hang" | "malformed"``
  (``attempt`` counts from 1 per distinct request body). 429 carries ``Retry-After``; "hang"
  sleeps ``hang_seconds`` (past the client's timeout); "malformed" returns a body that is not JSON.
- Counters per request body (sha256 of its canonical JSON): ``attempts`` and ``successes`` (200s),
  plus ``auth_rejections``; ``GET /stats`` returns them as JSON for out-of-process use.

Usable as a context manager (``with FakeOpenAIServer(...) as srv: srv.base_url``) or as a process:
``python tests/helpers/fake_openai_server.py --latency 0.2`` prints the base URL on its first line.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

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
        for period, fault in (
            (every_429, "429"),
            (every_500, "500"),
            (every_hang, "hang"),
            (every_malformed, "malformed"),
        ):
            if period and h % period == 0:
                return fault
        return None

    return plan


def _h(*parts) -> int:
    return int(hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode()).hexdigest()[:8], 16)


def _role_lines(segment: str, limit: int) -> list[str]:
    lines = [
        ln.replace("：", ":").split(":", 1)[1].strip() for ln in segment.replace("：", ":").splitlines() if ":" in ln
    ]
    return [ln for ln in lines if len(ln) > 12][:limit] or ["the case"]


def _qa_answer(body: dict, role: str, topics: list[str], zh: bool, grade: str) -> tuple[str, str]:
    """Numbered Q/grade/A items in a layout picked from the body's hash, with a low-graded item, a
    missing answer, a near-duplicate and extra prose; one body in 7 is cut off (finish_reason
    "length"). The grade is labelled as our prompt asks (Confidence / 置信度) or, as real models do,
    with the paper's words (``grade``: Factualness / Completeness, 事实性 / 完整性), in bold too; some
    English answers come in a Chinese layout (1、 numbering, full-width colons)."""
    h = _h(body)
    style = h % 7
    items = []
    for i, topic in enumerate(topics):
        q = f'{role}, what did you mean by "{topic}"?' if not zh else f"{role}，你说“{topic}”是什么意思？"
        a = f"I meant it plainly: {topic.lower()}" if not zh else f"俺的意思很简单：{topic}"
        items.append((q, "low" if i == 1 else ("high" if not zh else "高"), a))
    items.append((items[0][0] + " Tell me.", "high" if not zh else "高", items[0][2]))  # near-duplicate of the first
    items.append(("Which of them was it?" if not zh else "是哪一个？", "high" if not zh else "高", ""))  # no answer
    zh_grade = {"Factualness": "事实性", "Completeness": "完整性"}[grade]
    out = ["Here are the questions you asked for:" if not zh else "以下是你要的问题：", ""]
    for n, (q, c, a) in enumerate(items, 1):
        c = "低" if zh and c == "low" else c
        if zh and style % 3 == 0:
            out += [f"{n}. 问题：{q}", f"   置信度：{c}"] + ([f"   答案：{a}"] if a else [])
        elif zh and style % 3 == 1:
            out += [f"{n}. 问题：{q}", f"   {zh_grade}：{c}"] + ([f"   答案：{a}"] if a else [])
        elif zh:
            out += [f"**问题{n}：**{q}", f"**{zh_grade}：**{c}"] + ([f"**答案：**{a}"] if a else [])
        elif style == 0:
            out += [f"{n}. Question: {q}", f"   Confidence: {c}"] + ([f"   Answer: {a}"] if a else [])
        elif style == 1:
            out += [f"{n}. **Question:** {q}", f"**Confidence:** {c.capitalize()}"] + (
                [f"**Answer:** {a}"] if a else []
            )
        elif style == 2:
            out += [f"Q{n}: {q}", f"Confidence: {'9/10' if c == 'high' else '3/10'}"] + ([f"A{n}: {a}"] if a else [])
        elif style == 3:
            out += [f"{n}) Question: {q} Confidence: {c}" + (f" Answer: {a}" if a else "")]
        elif style == 4:
            out += [f"{n}. Question: {q}", f"   {grade}: {c.capitalize()}"] + ([f"   Answer: {a}"] if a else [])
        elif style == 5:
            out += [f"{n}. **Question:** {q}", f"**{grade}:** {c}"] + ([f"**Answer:** {a}"] if a else [])
        else:
            out += [f"{n}、Question：{q}", f"{grade}：{c.capitalize()}"] + ([f"Answer：{a}"] if a else [])
        out.append("")
    out.append("I hope these help!" if not zh else "希望对你有帮助！")
    text = "\n".join(out)
    if h % 7 == 0:
        return text[: int(len(text) * 0.8)], "length"
    return text, "stop"


def request_kind(body: dict) -> str:
    """Which data_gen stage asked this (by its prompt's wording, as the responder tells them apart):
    "profiles", "context-instruct", "rolegpt" or "other"."""
    msgs = body["messages"]
    user, system = msgs[-1]["content"], msgs[0]["content"] if msgs[0]["role"] == "system" else ""
    if any(m in user for m in ("third person", "第三人称", "second person", "第二人称")):
        return "profiles"
    if any(m in user for m in ("based on the script segment below", "根据下面的剧本片段")):
        return "context-instruct"
    if any(m in user for m in ("not tied to any particular scene", "不局限于某一场景")):
        return "context-instruct"
    if "your description is" in system or "你的特征描述是" in system:
        return "rolegpt"
    return "other"


def rolebench_responder(body: dict) -> tuple[str, str]:
    """Scripted answers in the formats data_gen's prompts ask for (en and zh), with the variations
    and bad answers real models produce. Deterministic in the request body."""
    msgs = body["messages"]
    user = msgs[-1]["content"]
    system = msgs[0]["content"] if msgs[0]["role"] == "system" else ""
    zh = any("\u4e00" <= ch <= "\u9fff" for ch in user[:200] + system[:50])
    if "third person" in user or "第三人称" in user:
        role = (
            user.split("character ", 1)[1].split(" speaks", 1)[0]
            if not zh
            else user.split("角色", 1)[1].split("在其中", 1)[0]
        )
        if zh:
            return "描述：该角色桀骜不驯，本领高强，说话直来直去。\n口头禅：“俺老孙来也！”，“吃俺老孙一棒！”", "stop"
        bold = "**" if _h(role) % 2 else ""
        return (
            f"{bold}Description:{bold} The character is a sharp, proud figure from the story, who speaks "
            f'in vivid images and never hides an opinion.\n{bold}Catchphrases:{bold} "Mark my words.", '
            f'"So it is."'
        ), "stop"
    if "second person" in user or "第二人称" in user:
        desc = user.rsplit("\n\n", 1)[-1]
        if zh:
            return "你的描述是：" + desc.replace("该角色", "你"), "stop"
        return "Your description is: " + desc.replace("The character is", "You are").replace(
            "who speaks", "you speak"
        ), "stop"
    if "based on the script segment below" in user or "根据下面的剧本片段" in user:
        role = user.split("ask ", 1)[1].split(",", 1)[0] if not zh else user.split("会问", 1)[1].split("的问题", 1)[0]
        segment = user.split("\n\n")[-2]
        return _qa_answer(body, role, _role_lines(segment, 3), zh, "Completeness")
    if "not tied to any particular scene" in user or "不局限于某一场景" in user:
        role = user.split("ask ", 1)[1].split(",", 1)[0] if not zh else user.split("会问", 1)[1].split("的问题", 1)[0]
        seed = body.get("seed", 0)
        topics = [f"your view of duty number {seed}", f"the world in year {seed}", f"your oldest friend {seed}"]
        if zh:
            topics = [f"第{seed}次取经", f"第{seed}座山", f"第{seed}个妖怪"]
        return _qa_answer(body, role, topics, zh, "Factualness")
    if "your description is" in system or "你的特征描述是" in system:
        role = (
            system.split("You are ", 1)[1].split(",", 1)[0] if not zh else system.split("你是", 1)[1].split("，", 1)[0]
        )
        h = _h(body) % 20
        if h == 0:
            return "As an AI language model, I cannot pretend to be a character.", "stop"
        if h == 1:
            return "I'm sorry, but I can't help with that.", "stop"
        if h == 2:
            return "", "stop"
        if h == 3:
            return (
                "Well, let me tell you, it is a long story that begins" if not zh else "这事说来话长，要从"
            ), "length"
        if h == 4:
            return ("这是一个中文回答。" if not zh else "This answer is in English only."), "stop"
        q = user.replace("\n", " ")[:60]
        if zh:
            return f"俺老孙说：{q}（第{body.get('seed', 0)}回）", "stop"
        return f"As {role} I say: {q} (take {body.get('seed', 0)})", "stop"
    return "I do not understand the request.", "stop"


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # listen backlog: the default 5 resets bursts of new connections

    def handle_error(self, request, client_address) -> None:
        # clients that give up (timeouts, cancellation, a killed process) close sockets mid-answer
        import sys

        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


class FakeOpenAIServer:
    def __init__(
        self,
        responder: Responder = echo_responder,
        *,
        keys: tuple[str, ...] = ("sk-test-key",),
        latency: float = 0.0,
        fault_plan: FaultPlan | None = None,
        retry_after: str = "1",
        hang_seconds: float = 5.0,
        port: int = 0,
    ):
        self.responder = responder
        self.keys = set(keys)
        self.latency = latency
        self.fault_plan = fault_plan
        self.retry_after = retry_after
        self.hang_seconds = hang_seconds
        self.attempts: collections.Counter[str] = collections.Counter()
        self.successes: collections.Counter[str] = collections.Counter()
        self.auth_rejections = 0
        # hold_after: once this many requests have succeeded, hold every new request unanswered
        # until `release` is set, then drop it (counted in `dropped`): lets a test kill a client
        # while requests are in flight without any answer being in transit.
        self.hold_after: int | None = None
        self.release = threading.Event()
        self.dropped = 0
        # on_served(count): called after each 200 answer is written, with the number of distinct
        # request bodies answered so far (lets a test kill a client at a chosen moment).
        self.on_served: Callable[[int], None] | None = None
        self.open_requests = 0  # requests received and not yet fully answered
        self.lock = threading.Lock()
        self.httpd = _QuietServer(("127.0.0.1", port), self._handler_class())
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def start(self) -> FakeOpenAIServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def stats(self) -> dict:
        with self.lock:
            return {
                "attempts": dict(self.attempts),
                "successes": dict(self.successes),
                "auth_rejections": self.auth_rejections,
            }

    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real endpoints
            # TCP_NODELAY, as real servers (uvicorn) set it: the handler writes headers and body in
            # two sends, and with Nagle the body waits for the client's delayed ACK (~40 ms each).
            disable_nagle_algorithm = True

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
                self._send(
                    code, json.dumps({"error": {"message": message, "type": "fake", "code": code}}).encode(), headers
                )

            def do_GET(self) -> None:
                if self.path.rstrip("/").endswith("/stats"):
                    self._send(200, json.dumps(server.stats()).encode())
                else:
                    self._error(404, "not found")

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length))
                with server.lock:
                    server.open_requests += 1
                try:
                    self._answer(body)
                finally:
                    with server.lock:
                        server.open_requests -= 1

            def _answer(self, body: dict) -> None:
                auth = self.headers.get("Authorization", "")
                if auth.removeprefix("Bearer ") not in server.keys:
                    with server.lock:
                        server.auth_rejections += 1
                    self._error(401, "Incorrect API key provided.")
                    return
                key = body_key(body)
                if server.hold_after is not None and sum(server.successes.values()) >= server.hold_after:
                    server.release.wait()
                    with server.lock:
                        server.dropped += 1
                    self.close_connection = True
                    return
                with server.lock:
                    server.attempts[key] += 1
                    attempt = server.attempts[key]
                fault = server.fault_plan(key, attempt) if server.fault_plan else None
                if server.latency:
                    time.sleep(server.latency)
                if fault == "429":
                    self._error(429, "rate limited", {"Retry-After": server.retry_after})
                    return
                if fault == "400":
                    self._error(400, "bad request: this prompt was refused")
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
                    "id": "chatcmpl-" + key[:12],
                    "object": "chat.completion",
                    "created": 0,
                    "model": body["model"],
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}
                    ],
                    "usage": {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct},
                }
                with server.lock:
                    server.successes[key] += 1
                    served = len(server.successes)
                self._send(200, json.dumps(payload, ensure_ascii=False).encode())
                if server.on_served is not None:
                    server.on_served(served)

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
