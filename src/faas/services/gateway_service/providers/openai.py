"""Any OpenAI-compatible HTTP endpoint: OpenAI, vLLM, Ollama, llama.cpp server, LM Studio...

Bodies pass through untouched; stream payloads are forwarded as the upstream's own bytes.
The upstream client is aiohttp: measured against httpx on this path (bench/gateway.py profile),
httpx's connection pool took 70% of the gateway's CPU at concurrency 32, and a request cost
0.97 ms in httpx against 0.22 ms in aiohttp.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp
import orjson
from multidict import CIMultiDictProxy

from faas.services.gateway_service.providers.base import (
    ChatRequest,
    ChatResult,
    EmbeddingResult,
    ProviderError,
    StreamEvent,
    Usage,
)
from faas.services.gateway_service.routing_table import Deployment

_HEALTH_TIMEOUT_S = 5.0
_DRAIN_TIMEOUT_S = 1.0
_MAX_CONNECTIONS = 1024
# Below the 5 s keep-alive of the Python servers many OpenAI-compatible upstreams run on
# (uvicorn): the client closes an idle connection before the server can, so a burst after a
# pause never sends on a connection the server has just closed (the multi-host run saw one
# failed call per burst, and three of them opened the deployment's breaker).
_KEEPALIVE_S = 4.0


class SSEDecoder:
    """Incremental `text/event-stream` decoder yielding each event's data payload."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._data: list[bytes] | None = None

    def feed(self, chunk: bytes) -> list[bytes]:
        self._buffer += chunk
        end = self._buffer.rfind(b"\n")
        if end < 0:
            return []
        complete = bytes(self._buffer[:end])
        del self._buffer[: end + 1]
        return self._lines(complete.split(b"\n"))

    def close(self) -> list[bytes]:
        """Payloads still pending when the stream ends without a final blank line."""
        rest = bytes(self._buffer)
        self._buffer.clear()
        return self._lines([rest, b""])

    def _lines(self, lines: list[bytes]) -> list[bytes]:
        payloads: list[bytes] = []
        for raw in lines:
            line = raw[:-1] if raw.endswith(b"\r") else raw
            if not line:
                if self._data is not None:
                    payloads.append(b"\n".join(self._data))
                    self._data = None
            elif line.startswith(b"data:"):
                value = line[6:] if line.startswith(b"data: ") else line[5:]
                if self._data is None:
                    self._data = [value]
                else:
                    self._data.append(value)
            # Comments (":...") and the event/id/retry fields carry nothing we forward.
        return payloads


def _retry_after(headers: CIMultiDictProxy[str]) -> float | None:
    milliseconds = headers.get("retry-after-ms")
    if milliseconds:
        try:
            return max(0.0, float(milliseconds) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _redact(text: str, deployment: Deployment) -> str:
    key = deployment.api_key.get_secret_value() if deployment.api_key else ""
    return text.replace(key, "[redacted]") if key and len(key) >= 4 else text


def _error_body(content: bytes, deployment: Deployment) -> dict[str, Any]:
    text = _redact(content.decode("utf-8", "replace"), deployment)
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict):
        return parsed
    return {"error": {"message": text[:2000]}}


def _status_error(
    status: int, headers: CIMultiDictProxy[str], content: bytes, deployment: Deployment
) -> ProviderError:
    where = f"deployment {deployment.id}: HTTP {status}"
    if status in (401, 403):
        # The upstream body may echo the key: keep it out of messages and logs.
        return ProviderError("auth", f"{where}: upstream rejected the credentials", status=status)
    body = _error_body(content, deployment)
    error = body.get("error")
    detail = error.get("message") if isinstance(error, dict) else error
    message = f"{where}: {str(detail)[:300]}" if detail else where
    if status == 429:
        retry = _retry_after(headers)
        return ProviderError("rate_limited", message, status=status, retry_after_s=retry, body=body)
    if status == 408:
        return ProviderError("timeout", message, status=status, body=body)
    if 400 <= status < 500:
        return ProviderError("bad_request", message, status=status, body=body)
    return ProviderError("server", message, status=status, body=body)


def _transport_error(exc: Exception, deployment: Deployment) -> ProviderError:
    where = f"deployment {deployment.id}"
    if isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError):
        return ProviderError("connect", f"{where}: cannot connect: {exc}")
    if isinstance(exc, TimeoutError):
        return ProviderError("timeout", f"{where}: timed out after {deployment.timeout_s}s")
    if isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ServerDisconnectedError):
        return ProviderError("server", f"{where}: broken response: {exc}")
    if isinstance(exc, aiohttp.ClientConnectionError):
        return ProviderError("connect", f"{where}: connection failed: {exc}")
    return ProviderError("server", f"{where}: {type(exc).__name__}: {exc}")


_ERRORS = (aiohttp.ClientError, TimeoutError)


def _json_object(content: bytes, deployment: Deployment) -> dict[str, Any]:
    try:
        parsed = orjson.loads(content)
    except orjson.JSONDecodeError:
        parsed = None
    if not isinstance(parsed, dict):
        raise ProviderError("server", f"deployment {deployment.id}: upstream sent invalid JSON")
    return parsed


def _event(payload: bytes, deployment: Deployment) -> StreamEvent:
    chunk = _json_object(payload, deployment)
    if "error" in chunk and "choices" not in chunk:
        error = chunk["error"]
        detail = error.get("message") if isinstance(error, dict) else error
        raise ProviderError(
            "server", f"deployment {deployment.id}: upstream error mid-stream: {detail}", body=chunk
        )
    has_content = False
    finish_reason = None
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") or {}
        if delta.get("content") or delta.get("tool_calls"):
            has_content = True
        finish_reason = choice.get("finish_reason") or finish_reason
    usage = Usage.from_openai(chunk.get("usage"))
    return StreamEvent(payload, has_content=has_content, usage=usage, finish_reason=finish_reason)


class OpenAICompatibleProvider:
    name = "openai"

    def __init__(self) -> None:
        self._sessions: dict[str, aiohttp.ClientSession] = {}

    def _base(self, deployment: Deployment) -> str:
        if not deployment.api_base:
            raise ProviderError("bad_request", f"deployment {deployment.id} has no api_base")
        return deployment.api_base.rstrip("/")

    def _session(self, base: str) -> aiohttp.ClientSession:
        session = self._sessions.get(base)
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(
                limit=_MAX_CONNECTIONS, limit_per_host=0, keepalive_timeout=_KEEPALIVE_S
            )
            # trust_env=False: proxies from the environment never see the upstream's key.
            session = aiohttp.ClientSession(
                connector=connector, trust_env=False, auto_decompress=True
            )
            self._sessions[base] = session
        return session

    def _headers(self, deployment: Deployment) -> dict[str, str]:
        headers = {"content-type": "application/json", **deployment.headers}
        if deployment.api_key is not None:
            headers["authorization"] = f"Bearer {deployment.api_key.get_secret_value()}"
        return headers

    def _timeout(self, deployment: Deployment, *, total: bool = True) -> aiohttp.ClientTimeout:
        # sock_connect bounds the TCP connect alone. aiohttp's `connect` also counts the wait
        # for a free pooled connection, so an overloaded replica's queued calls failed as
        # "connect" errors and took a healthy upstream out of rotation.
        connect = min(deployment.timeout_s, 10.0)
        if total:
            return aiohttp.ClientTimeout(total=deployment.timeout_s, sock_connect=connect)
        # Streams may run long: bound the wait for each piece instead of the whole, and the
        # wait for a pooled connection plus the connect by the deployment's timeout.
        return aiohttp.ClientTimeout(
            connect=deployment.timeout_s, sock_connect=connect, sock_read=deployment.timeout_s
        )

    async def _post(self, path: str, body: dict[str, Any], deployment: Deployment) -> bytes:
        base = self._base(deployment)
        try:
            async with self._session(base).post(
                base + path,
                data=orjson.dumps(body),
                headers=self._headers(deployment),
                timeout=self._timeout(deployment),
            ) as response:
                content = await response.read()
                if response.status >= 300:
                    raise _status_error(response.status, response.headers, content, deployment)
                return content
        except _ERRORS as exc:
            raise _transport_error(exc, deployment) from exc

    async def chat(self, request: ChatRequest, deployment: Deployment) -> ChatResult:
        payload = {
            **request.params,
            "messages": request.messages,
            "model": deployment.model,
            "stream": False,
        }
        payload.pop("stream_options", None)
        body = _json_object(await self._post("/chat/completions", payload, deployment), deployment)
        return ChatResult(body=body, usage=Usage.from_openai(body.get("usage")))

    async def stream(
        self, request: ChatRequest, deployment: Deployment
    ) -> AsyncIterator[StreamEvent]:
        options = request.params.get("stream_options") or {}
        payload = {
            **request.params,
            "messages": request.messages,
            "model": deployment.model,
            "stream": True,
            "stream_options": {**options, "include_usage": True},
        }
        base = self._base(deployment)
        finished = False
        try:
            async with self._session(base).post(
                base + "/chat/completions",
                data=orjson.dumps(payload),
                headers=self._headers(deployment),
                timeout=self._timeout(deployment, total=False),
            ) as response:
                if response.status >= 300:
                    content = await response.read()
                    raise _status_error(response.status, response.headers, content, deployment)
                decoder = SSEDecoder()
                chunks = response.content.iter_any()
                done = False
                while not done:
                    raw = await anext(chunks, None)
                    payloads = decoder.feed(raw) if raw is not None else decoder.close()
                    for data in payloads:
                        if data.strip() == b"[DONE]":
                            done = finished = True
                            break
                        event = _event(data, deployment)
                        finished = finished or event.finish_reason is not None
                        yield event
                    done = done or raw is None
                # Reading to the end returns the connection to the pool instead of closing it;
                # a slow or broken tail after [DONE] only costs that connection.
                with contextlib.suppress(*_ERRORS):
                    async with asyncio.timeout(_DRAIN_TIMEOUT_S):
                        async for _ in chunks:
                            pass
        except _ERRORS as exc:
            raise _transport_error(exc, deployment) from exc
        if not finished:
            raise ProviderError(
                "server", f"deployment {deployment.id}: stream ended before it was complete"
            )

    async def embed(self, texts: list[str], deployment: Deployment) -> EmbeddingResult:
        return await self._embed(texts, deployment)

    async def embed_token_ids(
        self, ids: list[list[int]], deployment: Deployment
    ) -> EmbeddingResult:
        """OpenAI's embeddings API takes lists of token ids as input, as its clients send them."""
        return await self._embed(ids, deployment)

    async def _embed(
        self, texts: list[str] | list[list[int]], deployment: Deployment
    ) -> EmbeddingResult:
        payload: dict[str, Any] = {"model": deployment.model, "input": texts}
        if deployment.dimensions:
            payload["dimensions"] = deployment.dimensions
        body = _json_object(await self._post("/embeddings", payload, deployment), deployment)
        try:
            rows = sorted(body["data"], key=lambda row: int(row.get("index", 0)))
            vectors: list[list[float]] = [row["embedding"] for row in rows]
            if not all(isinstance(v, list) for v in vectors):
                raise TypeError("embedding is not a list of floats")
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ProviderError(
                "server", f"deployment {deployment.id}: malformed embeddings response"
            ) from exc
        if len(vectors) != len(texts):
            raise ProviderError(
                "server",
                f"deployment {deployment.id}: {len(vectors)} embeddings for {len(texts)} inputs",
            )
        return EmbeddingResult(
            vectors=vectors,
            usage=Usage.from_openai(body.get("usage")),
            model=str(body.get("model") or deployment.model),
        )

    async def health(self, deployment: Deployment) -> bool:
        try:
            base = self._base(deployment)
            timeout = aiohttp.ClientTimeout(total=min(_HEALTH_TIMEOUT_S, deployment.timeout_s))
            async with self._session(base).get(
                base + "/models", headers=self._headers(deployment), timeout=timeout
            ) as response:
                await response.read()
                return 200 <= response.status < 300
        except (*_ERRORS, ProviderError):
            return False

    async def aclose(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            await session.close()
