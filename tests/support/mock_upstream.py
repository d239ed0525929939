"""A real HTTP server speaking the OpenAI API, for tests and as the benchmarks' upstream.

In-process::

    async with MockUpstream(latency_ms=5) as up:
        up.url            # "http://127.0.0.1:PORT/v1"
        up.control(fail_next=[{"status": 429, "retry_after": 2}])
        up.stats          # request count, last body and headers

As a process::

    python -m tests.support.mock_upstream --port 9100 --latency-ms 20

Endpoints: POST /v1/chat/completions (JSON or SSE), POST /v1/embeddings, GET /v1/models,
POST /v1/rerank (Cohere/Jina shape, scored by word overlap),
POST /v1/messages (Anthropic's Messages API, JSON or SSE: tests/support/mock_anthropic.py),
POST /_control (change the settings below at run time; `"reset": true` restores defaults),
GET /_stats. Raw ASGI with pre-encoded bodies so that it costs the benchmark little.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import random
import signal
import socket
import subprocess
import sys
import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import uvicorn

from tests.support import mock_anthropic

Scope = dict[str, Any]
Message = dict[str, Any]
REPLY = "Hello from the mock upstream."
USAGE = {"prompt_tokens": 10, "completion_tokens": 7, "total_tokens": 17}
_JSON = [(b"content-type", b"application/json")]
_SSE = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


@dataclass
class Controls:
    latency_ms: float = 0.0  # before every /v1 answer
    stream_delay_ms: float = 0.0  # between stream chunks
    fail_next: list[dict[str, Any]] = field(default_factory=list)  # {status, body?, retry_after?}
    fail_rate: float = 0.0  # chance of a 500 for each /v1 request
    tool_calls: bool = False  # call the first tool when the request has `tools`
    script: deque[dict[str, Any]] = field(default_factory=deque)  # next chat answers, in order
    break_stream_after: int | None = None  # drop the connection after N stream chunks
    require_api_key: str | None = None
    embedding_dim: int = 64
    usage: dict[str, int] | None = None  # reported instead of USAGE (JSON and streams)

    def update(self, changes: dict[str, Any]) -> None:
        for key, value in changes.items():
            if key == "script":
                self.script = deque(value or [])
            elif key == "fail_next":
                self.fail_next = list(value or [])
            elif key in self.__dataclass_fields__:
                setattr(self, key, value)
            else:
                raise KeyError(key)

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__} | {
            "script": list(self.script)
        }


@dataclass
class Stats:
    requests: int = 0
    paths: Counter[str] = field(default_factory=Counter)
    last_body: Any = None
    last_headers: dict[str, str] = field(default_factory=dict)
    last_stream_payloads: list[bytes] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "paths": dict(self.paths),
            "last_body": self.last_body,
            "last_headers": self.last_headers,
            "last_stream_payloads": [p.decode() for p in self.last_stream_payloads],
        }


class _DropConnection(Exception):
    """Raised mid-stream so the server aborts the response like a crashed upstream."""


def _completion(
    model: str, message: dict[str, Any], finish: str, usage: dict[str, int] = USAGE
) -> dict[str, Any]:
    return {
        "id": "chatcmpl-mockupstream",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": usage,
    }


def _stream_payloads(
    model: str,
    message: dict[str, Any],
    finish: str,
    include_usage: bool,
    usage: dict[str, int] = USAGE,
) -> list[bytes]:
    head = {"id": "chatcmpl-mockupstream", "object": "chat.completion.chunk"}
    head |= {"created": int(time.time()), "model": model}

    def chunk(delta: dict[str, Any], reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}
        return orjson.dumps({**head, "choices": [choice]})

    payloads = [chunk({"role": "assistant", "content": ""})]
    words = str(message.get("content") or "").split(" ")
    payloads += [chunk({"content": (" " if i else "") + w}) for i, w in enumerate(words) if w]
    for index, call in enumerate(message.get("tool_calls") or []):
        payloads.append(chunk({"tool_calls": [{"index": index, **call}]}))
    payloads.append(chunk({}, finish))
    if include_usage:
        payloads.append(orjson.dumps({**head, "choices": [], "usage": usage}))
    return payloads


def _vector(text: str, dim: int) -> list[float]:
    raw = hashlib.shake_256(text.encode()).digest(4 * dim)
    values = np.frombuffer(raw, dtype=np.uint32).astype(np.float64) / 2**31 - 1.0
    return [float(x) for x in values / np.linalg.norm(values)]


def _rerank(request: dict[str, Any]) -> dict[str, Any]:
    """Jina's answer: each document scored by the share of the query's words it holds."""
    words = set(str(request.get("query", "")).lower().split())
    docs = [d if isinstance(d, str) else d.get("text", "") for d in request.get("documents", [])]
    scores = [len(words & set(d.lower().split())) / max(1, len(words)) for d in docs]
    order = sorted(range(len(docs)), key=lambda i: (-scores[i], i))[: request.get("top_n")]
    results = [{"index": i, "relevance_score": scores[i]} for i in order]
    tokens = sum(len(d.split()) for d in docs) + len(words)
    usage = {"total_tokens": tokens}
    return {"model": request.get("model"), "results": results, "usage": usage}


class MockUpstreamApp:
    def __init__(self, controls: Controls | None = None) -> None:
        self.controls = controls or Controls()
        self.stats = Stats()
        self._plain: dict[str, bytes] = {}
        self._streams: dict[tuple[str, bool], list[bytes]] = {}
        self._models = orjson.dumps(
            {
                "object": "list",
                "data": [{"id": "mock-model", "object": "model", "owned_by": "mock"}],
            }
        )

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if path == "/_control" and method == "POST":
            changes = orjson.loads(body or b"{}")
            if changes.pop("reset", False):
                self.controls = Controls()
            if changes.pop("reset_stats", False):
                self.stats = Stats()
            try:
                self.controls.update(changes)
            except KeyError as exc:
                return await _respond(send, 400, {"error": {"message": f"unknown {exc}"}})
            return await _respond(send, 200, self.controls.as_dict())
        if path == "/_stats":
            return await _respond(send, 200, self.stats.as_dict())
        await self._api(scope, path, method, body, send)

    async def _api(self, scope: Scope, path: str, method: str, body: bytes, send: Any) -> None:
        controls, stats = self.controls, self.stats
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        stats.requests += 1
        stats.paths[path] += 1
        stats.last_headers = headers
        try:
            request: dict[str, Any] = orjson.loads(body) if body else {}
        except orjson.JSONDecodeError:
            return await _respond(send, 400, {"error": {"message": "body is not JSON"}})
        stats.last_body = request
        if controls.latency_ms:
            await asyncio.sleep(controls.latency_ms / 1000.0)
        if controls.require_api_key is not None:
            given = headers.get("authorization", "")
            anthropic_key = headers.get("x-api-key") == controls.require_api_key
            if given != f"Bearer {controls.require_api_key}" and not anthropic_key:
                # Real upstreams echo (part of) the key: the gateway must not pass it on.
                error = {"message": f"Incorrect API key provided: {given.removeprefix('Bearer ')}"}
                return await _respond(send, 401, {"error": error | {"code": "invalid_api_key"}})
        if controls.fail_next:
            failure = controls.fail_next.pop(0)
            return await _fail(send, failure)
        if controls.fail_rate and random.random() < controls.fail_rate:
            return await _fail(send, {"status": 500})
        if path == "/v1/messages" and method == "POST":
            answer = mock_anthropic.message(request, controls.tool_calls)
            if not request.get("stream"):
                return await _respond(send, 200, answer)
            return await self._stream(mock_anthropic.stream_frames(answer), send, framed=True)
        if path == "/v1/chat/completions" and method == "POST":
            return await self._chat(request, send)
        if path == "/v1/embeddings" and method == "POST":
            inputs = request.get("input", [])
            texts = [inputs] if isinstance(inputs, str) else [str(x) for x in inputs]
            dim = int(request.get("dimensions") or controls.embedding_dim)
            data = [
                {"object": "embedding", "index": i, "embedding": _vector(t, dim)}
                for i, t in enumerate(texts)
            ]
            tokens = sum(len(t.split()) for t in texts)
            usage = {"prompt_tokens": tokens, "total_tokens": tokens}
            payload = {
                "object": "list",
                "data": data,
                "model": request.get("model"),
                "usage": usage,
            }
            return await _respond(send, 200, payload)
        if path == "/v1/models" and method == "GET":
            return await _send(send, 200, self._models)
        if path == "/v1/rerank" and method == "POST":
            return await _respond(send, 200, _rerank(request))
        return await _respond(send, 404, {"error": {"message": f"no route {method} {path}"}})

    async def _chat(self, request: dict[str, Any], send: Any) -> None:
        model = str(request.get("model") or "mock-model")
        stream = bool(request.get("stream"))
        include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
        scripted: dict[str, Any] | None = None
        usage = self.controls.usage or USAGE
        if self.controls.usage is not None and not self.controls.script:
            scripted = {"role": "assistant", "content": REPLY}  # not the cached answers
        elif self.controls.script:
            scripted = self.controls.script.popleft()
        elif self.controls.tool_calls and request.get("tools"):
            name = request["tools"][0]["function"]["name"]
            function = {"name": name, "arguments": "{}"}
            call = {"id": "call_mock_1", "type": "function", "function": function}
            scripted = {"role": "assistant", "content": None, "tool_calls": [call]}
        if scripted is not None and "choices" in scripted:
            message = scripted["choices"][0]["message"]
            finish = scripted["choices"][0].get("finish_reason") or "stop"
            full = scripted
        elif scripted is not None:
            message = {"role": "assistant", "content": None} | scripted
            finish = "tool_calls" if message.get("tool_calls") else "stop"
            full = _completion(model, message, finish, usage)
        else:
            if not stream:
                cached = self._plain.get(model)
                if cached is None:
                    reply = {"role": "assistant", "content": REPLY}
                    cached = self._plain[model] = orjson.dumps(_completion(model, reply, "stop"))
                return await _send(send, 200, cached)
            key = (model, include_usage)
            payloads = self._streams.get(key)
            if payloads is None:
                reply = {"role": "assistant", "content": REPLY}
                payloads = self._streams[key] = _stream_payloads(
                    model, reply, "stop", include_usage
                )
            return await self._stream(payloads, send)
        if not stream:
            return await _respond(send, 200, full)
        payloads = _stream_payloads(model, message, finish, include_usage, usage)
        return await self._stream(payloads, send)

    async def _stream(self, payloads: list[bytes], send: Any, *, framed: bool = False) -> None:
        self.stats.last_stream_payloads = payloads
        delay = self.controls.stream_delay_ms / 1000.0
        limit = self.controls.break_stream_after
        await send({"type": "http.response.start", "status": 200, "headers": _SSE})
        try:
            for sent, payload in enumerate(payloads):
                if limit is not None and sent >= limit:
                    raise _DropConnection(f"mock upstream dropped the stream after {sent} chunks")
                if delay and sent:
                    await asyncio.sleep(delay)
                frame = payload if framed else b"data: " + payload + b"\n\n"
                await send({"type": "http.response.body", "body": frame, "more_body": True})
            done = b"" if framed else b"data: [DONE]\n\n"
            await send({"type": "http.response.body", "body": done})
        except OSError:
            return  # the client went away


async def _send(send: Any, status: int, body: bytes, extra: list[Any] | None = None) -> None:
    headers = [*_JSON, (b"content-length", str(len(body)).encode()), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _respond(send: Any, status: int, payload: Any) -> None:
    await _send(send, status, orjson.dumps(payload))


async def _fail(send: Any, failure: dict[str, Any]) -> None:
    status = int(failure.get("status", 500))
    body = failure.get("body")
    if body is None:
        body = {"error": {"message": f"mock upstream failure {status}", "type": "mock_error"}}
    raw = body.encode() if isinstance(body, str) else orjson.dumps(body)
    extra = []
    if failure.get("retry_after") is not None:
        extra.append((b"retry-after", str(failure["retry_after"]).encode()))
    await _send(send, status, raw, extra)


class MockUpstream:
    """The app served by uvicorn on 127.0.0.1 and a free port, inside the running loop."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, **controls: Any) -> None:
        self.app = MockUpstreamApp()
        self.app.controls.update(controls)
        self.host = host
        self._port = port
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self._port}"

    @property
    def url(self) -> str:
        return self.base_url + "/v1"

    @property
    def stats(self) -> Stats:
        return self.app.stats

    def control(self, **changes: Any) -> None:
        self.app.controls.update(changes)

    async def __aenter__(self) -> MockUpstream:
        # asyncio sets TCP_NODELAY only on sockets whose proto is TCP; proto 0 costs each
        # request a 40 ms delayed-ACK stall.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self._port))
        self._port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            lifespan="off",
            log_level="warning",
            access_log=False,
            ws="none",
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError("mock upstream stopped while starting")
            await asyncio.sleep(0.005)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task


@contextlib.contextmanager
def upstream_process() -> Iterator[str]:
    """The mock upstream as a separate process (for tests of real `faas` processes); yields its
    base URL once it answers, and stops it afterwards."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.mock_upstream", "--port", str(port)],
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, f"mock upstream exited with {proc.returncode}"
            try:
                if httpx.get(f"{url}/_stats", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "mock upstream did not start"
            time.sleep(0.05)
        yield url
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description="OpenAI-compatible mock upstream")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--stream-delay-ms", type=float, default=0.0)
    parser.add_argument("--tool-calls", action="store_true")
    args = parser.parse_args()
    app = MockUpstreamApp(
        Controls(
            latency_ms=args.latency_ms,
            stream_delay_ms=args.stream_delay_ms,
            tool_calls=args.tool_calls,
        )
    )
    print(f"mock upstream on http://{args.host}:{args.port}/v1", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
