"""Agent tools: the calculator, call_tool's error capture, the SSRF guard of the HTTP tools
(against a real local server), declarative HTTP tools, delegation depth, time zones, and the
rag/cache plumbing (with small fakes of the service clients)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from faas.services.agent_service.models import HttpToolSpec
from faas.services.agent_service.tools.base import (
    ToolContext,
    ToolError,
    call_tool,
    openai_tool_spec,
)
from faas.services.agent_service.tools.builtin import BUILTIN_TOOLS
from faas.services.agent_service.tools.http import DeclarativeHttpTool as declarative_http_tool
from faas.shared.context import Identity, current_context
from faas.shared.exceptions import NotFound

IDENTITY = Identity(tenant_id="tenant-a", user_id="u1")
BIG = 1_000_000


class Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, ctype: str = "text/plain", **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(body)

    def _echo(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        payload = {
            "method": self.command,
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": body,
        }
        self._send(200, json.dumps(payload).encode(), "application/json")

    def do_GET(self) -> None:
        if self.path == "/hello":
            self._send(200, "héllo".encode(), "text/plain; charset=utf-8")
        elif self.path == "/big":
            self._send(200, b"x" * BIG)
        elif self.path == "/to-metadata":
            self._send(302, b"", Location="http://169.254.169.254/latest/meta-data/")
        elif self.path == "/to-hello":
            self._send(302, b"", Location="/hello")
        else:
            self._echo()

    def do_POST(self) -> None:
        self._echo()

    def do_PUT(self) -> None:
        self._echo()


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


class FakeClient:
    """Records calls and the identity in force; answers from a fixed response."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.calls: list[tuple[str, str, dict[str, Any]]] = []
        self.identities: list[Identity | None] = []

    async def _record(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        self.calls.append((method, path, kwargs))
        context = current_context()
        self.identities.append(context.identity if context else None)
        return self.response

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return await self._record(method, path, **kwargs)


class FakeClients:
    def __init__(self, **clients: FakeClient) -> None:
        self.clients = clients

    def get(self, name: str) -> FakeClient:
        return self.clients[name]


async def no_agents(agent_id: str, task: str, depth: int) -> str:
    raise NotFound(f"agent {agent_id} not found")


def make_ctx(**overrides: Any) -> ToolContext:
    values: dict[str, Any] = {
        "identity": IDENTITY,
        "agent_id": "agent1",
        "depth": 0,
        "clients": FakeClients(),
        "call_agent": no_agents,
        "http_allowlist": [],
        "timeout_s": 5.0,
    }
    values.update(overrides)
    return ToolContext(**values)


async def run(name: str, args: dict[str, Any], **ctx: Any) -> tuple[Any, str | None]:
    return await call_tool(BUILTIN_TOOLS[name], json.dumps(args), make_ctx(**ctx))


# -- calculator ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("2 ** 3 ** 2", 512),
        ("-2 ** 2", -4),
        ("7 // 2 + 7 % 3", 4),
        ("10 / 4", 2.5),
        ("sqrt(16) + abs(-3)", 7.0),
        ("round(pi, 2)", 3.14),
        ("log(e) + log10(1000) + exp(0)", 5.0),
        ("floor(2.7) + ceil(2.1)", 5),
        ("max(1, 5, 3) - min(4, 2)", 3),
        ("sin(0) + cos(0) + tan(0)", 1.0),
    ],
)
async def test_calculator_results(expression: str, expected: float) -> None:
    result, error = await run("calculator", {"expression": expression})
    assert error is None
    assert result == {"expression": expression, "result": pytest.approx(expected)}


@pytest.mark.parametrize(
    "expression",
    [
        "__import__('os')",
        "__import__('os').system('true')",
        "(1).real",
        "math.pi",
        "(lambda: 1)()",
        "[x for x in range(3)]",
        "9**9**9",
        "2 ** 1001",
        "1.0001 ** 100000",
        "10**400 * 10**400",
        # intermediate too large although the result (10) is small
        "10**1000 * 10**1000 * 10**1000 * 10**1000 // 10**1000 // 10**1000 // 10**1000 // 10**999",
        "x + 1",
        "open('/etc/passwd')",
        "1 / 0",
        "5 % 0",
        "sqrt(-1)",
        "'a' * 3",
        "True + 1",
        "1 if 1 else 2",
        "1 < 2",
        "1" + "+1" * 300,
    ],
)
async def test_calculator_refuses(expression: str) -> None:
    result, error = await run("calculator", {"expression": expression})
    assert result is None
    assert error


async def test_calculator_division_by_zero_message() -> None:
    _, error = await run("calculator", {"expression": "1/0"})
    assert error == "division by zero"


# -- call_tool -------------------------------------------------------------------------------


class SlowTool:
    name = "slow"
    description = "sleeps"
    parameters: dict[str, Any] = {"type": "object", "properties": {}}

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> Any:
        await asyncio.sleep(5)
        return "done"


class FailingTool:
    name = "failing"
    description = "fails"
    parameters: dict[str, Any] = {"type": "object", "properties": {}}

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> Any:
        raise ToolError("the thing is broken")


async def test_call_tool_invalid_json() -> None:
    result, error = await call_tool(BUILTIN_TOOLS["calculator"], '{"expression": ', make_ctx())
    assert result is None
    assert error is not None and "not valid JSON" in error


async def test_call_tool_non_object() -> None:
    _, error = await call_tool(BUILTIN_TOOLS["calculator"], "[1]", make_ctx())
    assert error == "arguments must be a JSON object"


@pytest.mark.parametrize(
    "args",
    [{}, {"expression": 5}, {"expression": "1+1", "extra": True}],
)
async def test_call_tool_schema_violation(args: dict[str, Any]) -> None:
    result, error = await run("calculator", args)
    assert result is None
    assert error is not None and error.startswith("invalid arguments")


async def test_call_tool_timeout() -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    result, error = await call_tool(SlowTool(), "{}", make_ctx(timeout_s=0.05))
    assert result is None
    assert error is not None and "timed out" in error
    assert loop.time() - started < 1


async def test_call_tool_tool_error_and_empty_arguments() -> None:
    assert await call_tool(FailingTool(), "", make_ctx()) == (None, "the thing is broken")


async def test_openai_tool_spec() -> None:
    spec = openai_tool_spec(BUILTIN_TOOLS["calculator"])
    assert spec["type"] == "function"
    assert spec["function"]["name"] == "calculator"
    assert spec["function"]["parameters"]["required"] == ["expression"]


# -- current_time ----------------------------------------------------------------------------


async def test_current_time_zone() -> None:
    result, error = await run("current_time", {"timezone": "Asia/Kolkata"})
    assert error is None
    assert result["timezone"] == "Asia/Kolkata"
    assert result["time"].endswith("+05:30")
    default, _ = await run("current_time", {})
    assert default["time"].endswith("+00:00")


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "../../etc/passwd"])
async def test_current_time_invalid_zone(zone: str) -> None:
    result, error = await run("current_time", {"timezone": zone})
    assert result is None
    assert error is not None and "unknown time zone" in error


# -- call_agent ------------------------------------------------------------------------------


async def test_call_agent_delegates_one_level_deeper() -> None:
    seen: list[tuple[str, str, int]] = []

    async def call(agent_id: str, task: str, depth: int) -> str:
        seen.append((agent_id, task, depth))
        return "42"

    result, error = await run(
        "call_agent", {"agent_id": "helper", "task": "think"}, call_agent=call, depth=1
    )
    assert error is None
    assert result == {"agent_id": "helper", "answer": "42"}
    assert seen == [("helper", "think", 2)]


async def test_call_agent_depth_limit() -> None:
    called = False

    async def call(agent_id: str, task: str, depth: int) -> str:
        nonlocal called
        called = True
        return "no"

    result, error = await run(
        "call_agent", {"agent_id": "helper", "task": "x"}, call_agent=call, depth=3, max_depth=3
    )
    assert result is None
    assert error is not None and "delegation depth limit" in error
    assert not called


async def test_call_agent_unknown_agent_is_a_tool_error() -> None:
    result, error = await run("call_agent", {"agent_id": "other-tenants", "task": "x"})
    assert result is None
    assert error == "agent other-tenants not found"


# -- rag / cache plumbing --------------------------------------------------------------------


async def test_rag_search_calls_rag_as_the_tool_identity() -> None:
    hit = {"title": "Doc", "text": "y" * 2000, "document_id": "d1", "score": 0.9, "chunk_id": "c"}
    hits = [hit | {"collection_id": "kb", "metadata": {}}]
    data = {"mode": "hybrid", "results": hits}
    rag = FakeClient(httpx.Response(200, json={"success": True, "data": data}))
    result, error = await run(
        "rag_search", {"query": "q", "top_k": 3, "collection": "kb"}, clients=FakeClients(rag=rag)
    )
    assert error is None
    assert result == [{"title": "Doc", "text": "y" * 800, "document_id": "d1", "score": 0.9}]
    method, path, kwargs = rag.calls[0]
    assert (method, path) == ("POST", "/api/v1/rag/search")
    sent = {"query_text": "q", "top_k": 3, "mode": "hybrid", "collection": "kb"}
    assert {k: kwargs["json"][k] for k in sent} == sent
    assert rag.identities == [IDENTITY]


async def test_rag_search_top_k_bounded() -> None:
    _, error = await run("rag_search", {"query": "q", "top_k": 11})
    assert error is not None and "invalid arguments" in error


async def test_rag_not_found_is_a_tool_error() -> None:
    body = {"success": False, "error": {"code": "not_found", "message": "no collection kb"}}
    rag = FakeClient(httpx.Response(404, json=body))
    result, error = await run(
        "rag_search", {"query": "q", "collection": "kb"}, clients=FakeClients(rag=rag)
    )
    assert (result, error) == (None, "no collection kb")


async def test_cache_get_and_set_use_the_agent_namespace() -> None:
    data = {"key": "k", "found": True, "value": {"a": 1}, "ttl_remaining_s": 5}
    data["namespace"] = "agent-agent1"
    cache = FakeClient(httpx.Response(200, json={"data": data}))
    clients = FakeClients(cache=cache)
    result, error = await run("cache_get", {"key": "k"}, clients=clients)
    assert error is None
    assert result == {"key": "k", "found": True, "value": {"a": 1}}
    assert cache.calls[0][:2] == ("GET", "/api/v1/cache/k")
    assert cache.calls[0][2]["params"] == {"namespace": "agent-agent1"}

    stored = {"key": "k", "namespace": "agent-agent1", "bytes": 3, "ttl_s": 60}
    cache.response = httpx.Response(201, json={"data": stored})
    result, error = await run("cache_set", {"key": "k", "value": [1], "ttl_s": 60}, clients=clients)
    assert error is None
    assert cache.calls[1][:2] == ("POST", "/api/v1/cache")
    assert cache.calls[1][2]["json"] == {
        "key": "k",
        "value": [1],
        "namespace": "agent-agent1",
        "ttl_s": 60,
        "tags": [],
    }
    assert cache.identities == [IDENTITY, IDENTITY]


async def test_cache_key_validated() -> None:
    _, error = await run("cache_get", {"key": "../../stats"})
    assert error is not None and "invalid arguments" in error


# -- http_request ----------------------------------------------------------------------------


async def test_http_request_refuses_host_not_allow_listed() -> None:
    for url in ("http://example.com/", "http://93.184.216.34/", "https://api.allowed.test.evil/"):
        result, error = await run("http_request", {"url": url}, http_allowlist=["api.allowed.test"])
        assert result is None
        assert error is not None and "allow-list" in error, url


@pytest.fixture
async def fake_dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Names resolved without the network: name -> address."""
    table: dict[str, str] = {}
    loop = asyncio.get_running_loop()
    real = loop.getaddrinfo

    async def getaddrinfo(host: str, port: int, **kwargs: Any) -> Any:
        if host in table:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (table[host], port))]
        return await real(host, port, **kwargs)

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
    return table


async def test_http_request_name_outside_allow_listed_networks(fake_dns: dict[str, str]) -> None:
    fake_dns["public.example"] = "93.184.216.34"
    _, error = await run(
        "http_request", {"url": "http://public.example/"}, http_allowlist=["10.0.0.0/8"]
    )
    assert error is not None and "allow-list" in error


async def test_http_request_allow_listed_name_rebound_to_private(fake_dns: dict[str, str]) -> None:
    fake_dns["api.allowed.test"] = "10.1.2.3"
    _, error = await run(
        "http_request", {"url": "http://api.allowed.test/"}, http_allowlist=["api.allowed.test"]
    )
    assert error is not None and "private" in error


async def test_http_request_refuses_loopback_unless_allow_listed(server: str) -> None:
    url = f"http://{server}/hello"
    _, error = await run("http_request", {"url": url}, http_allowlist=["api.allowed.test"])
    assert error is not None and "allow-list" in error
    # A host name entry admits the name, not the private addresses it resolves to.
    port = server.rpartition(":")[2]
    _, error = await run(
        "http_request", {"url": f"http://localhost:{port}/hello"}, http_allowlist=["localhost"]
    )
    assert error is not None and "private" in error
    _, error = await run("http_request", {"url": "file:///etc/passwd"}, http_allowlist=["*"])
    assert error is not None


async def test_http_request_fetches_allow_listed_server(server: str) -> None:
    result, error = await run(
        "http_request", {"url": f"http://{server}/hello"}, http_allowlist=["127.0.0.1"]
    )
    assert error is None
    assert result["status"] == 200
    assert result["text"] == "héllo"
    assert result["content_type"].startswith("text/plain")
    assert result["truncated"] is False


async def test_http_request_follows_checked_redirect(server: str) -> None:
    result, error = await run(
        "http_request", {"url": f"http://{server}/to-hello"}, http_allowlist=["127.0.0.0/8"]
    )
    assert error is None
    assert result["text"] == "héllo"
    assert result["url"].endswith("/hello")


async def test_http_request_refuses_redirect_to_metadata(server: str) -> None:
    result, error = await run(
        "http_request", {"url": f"http://{server}/to-metadata"}, http_allowlist=["127.0.0.1"]
    )
    assert result is None
    assert error is not None and "169.254.169.254" in error


async def test_http_request_truncates_oversize_body(server: str) -> None:
    result, error = await run(
        "http_request",
        {"url": f"http://{server}/big"},
        http_allowlist=["127.0.0.1"],
        max_response_bytes=1000,
    )
    assert error is None
    assert result["truncated"] is True
    assert len(result["text"]) == 1000


async def test_http_request_post_json(server: str) -> None:
    result, error = await run(
        "http_request",
        {"url": f"http://{server}/echo", "method": "POST", "body": {"a": 1}},
        http_allowlist=["127.0.0.1"],
    )
    assert error is None
    echoed = json.loads(result["text"])
    assert echoed["method"] == "POST"
    assert json.loads(echoed["body"]) == {"a": 1}
    assert echoed["headers"]["content-type"] == "application/json"


# -- declarative HTTP tools ------------------------------------------------------------------


def weather_spec(server: str, **overrides: Any) -> HttpToolSpec:
    values: dict[str, Any] = {
        "name": "weather",
        "description": "weather of a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "units": {"type": "string"}},
            "required": ["city", "units"],
        },
        "url_template": f"http://{server}/weather/{{city}}?units={{units}}",
        "headers": {"Authorization": "Bearer tenant-key", "X-Units": "{units}"},
    }
    values.update(overrides)
    return HttpToolSpec(**values)


async def test_declarative_tool_templates_and_encodes(server: str) -> None:
    tool = declarative_http_tool(weather_spec(server))
    args = {"city": "São Paulo/x?y=1&z", "units": "metric"}
    result, error = await call_tool(tool, json.dumps(args), make_ctx(http_allowlist=["127.0.0.1"]))
    assert error is None
    echoed = json.loads(result["text"])
    assert echoed["method"] == "GET"
    assert echoed["path"] == "/weather/S%C3%A3o%20Paulo%2Fx%3Fy%3D1%26z?units=metric"
    assert echoed["headers"]["authorization"] == "Bearer tenant-key"
    assert echoed["headers"]["x-units"] == "metric"
    # Header values must be printable ASCII (no injection, no encoding surprises).
    for units in ("a\r\nHost: internal", "métrique"):
        _, error = await call_tool(
            tool, json.dumps({"city": "x", "units": units}), make_ctx(http_allowlist=["127.0.0.1"])
        )
        assert error is not None and "printable ASCII" in error


async def test_declarative_tool_post_body(server: str) -> None:
    spec = HttpToolSpec(
        name="create_ticket",
        description="open a ticket",
        parameters={
            "type": "object",
            "properties": {
                "queue": {"type": "string"},
                "title": {"type": "string"},
                "priority": {"type": "integer"},
            },
            "required": ["queue", "title"],
            "additionalProperties": False,
        },
        method="POST",
        url_template=f"http://{server}/queues/{{queue}}/tickets",
    )
    tool = declarative_http_tool(spec)
    args = {"queue": "ops", "title": "disk full", "priority": 2}
    result, error = await call_tool(tool, json.dumps(args), make_ctx(http_allowlist=["127.0.0.1"]))
    assert error is None
    echoed = json.loads(result["text"])
    assert echoed["method"] == "POST"
    assert echoed["path"] == "/queues/ops/tickets"
    assert json.loads(echoed["body"]) == {"title": "disk full", "priority": 2}
    # The schema is enforced before any request.
    _, error = await call_tool(tool, '{"queue": "ops"}', make_ctx(http_allowlist=["127.0.0.1"]))
    assert error is not None and "invalid arguments" in error


async def test_declarative_tool_host_still_allow_listed(server: str) -> None:
    tool = declarative_http_tool(weather_spec(server))
    _, error = await call_tool(tool, '{"city": "x", "units": "m"}', make_ctx(http_allowlist=[]))
    assert error is not None and "allow-list" in error


@pytest.mark.parametrize(
    "url_template",
    [
        "http://{host}/x",
        "http://api.{city}.example.com/x",
        "http://example.com:{units}/x",
        "http://{city}@example.com/x",
        "ftp://example.com/{city}",
        "http://example.com/{city",
        "http://example.com/{undeclared}",
    ],
)
def test_declarative_spec_rejects_bad_url_templates(url_template: str) -> None:
    with pytest.raises(ValidationError):
        weather_spec("example.com", url_template=url_template)


@pytest.mark.parametrize(
    "parameters",
    [
        {"type": "object", "properties": {"city": {"type": "strin"}}},
        {"type": 5},
        {"type": "object", "required": "city"},
        {"type": "string"},
    ],
)
def test_declarative_spec_rejects_invalid_parameters_schema(parameters: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        weather_spec("example.com", parameters=parameters, headers={}, url_template="http://a.b/")


@pytest.mark.parametrize(
    ("overrides"),
    [
        {"headers": {"Authorization": "Bearer {city}"}},
        {"headers": {"Host": "internal"}},
        {"headers": {"Cookie": "a=b"}},
        {"headers": {"X-Bad": "a\r\nHost: internal"}},
        {"name": "calculator"},
        {"name": "9lives"},
        {"method": "PATCH"},
    ],
)
def test_declarative_spec_rejects_bad_fields(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        weather_spec("example.com", **overrides)


def test_declarative_spec_valid() -> None:
    spec = weather_spec("example.com")
    tool = declarative_http_tool(spec)
    assert openai_tool_spec(tool)["function"]["name"] == "weather"
