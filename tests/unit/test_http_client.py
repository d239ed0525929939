from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from faas.shared.breaker import BreakerState, CircuitBreaker
from faas.shared.context import Identity, RequestContext, reset_context, set_context
from faas.shared.exceptions import DependencyUnavailable, UpstreamTimeout
from faas.shared.http_client import _URLS_KEPT, ServiceClient

Handler = Callable[[httpx.Request], Coroutine[None, None, httpx.Response]]


class Recorder:
    """A transport handler that answers from a script and remembers what it saw."""

    def __init__(self, *answers: int | Exception | httpx.Response) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, httpx.Response):
            return answer
        return httpx.Response(answer, json={"n": len(self.requests)})

    @property
    def calls(self) -> int:
        return len(self.requests)


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def no_context() -> Iterator[None]:
    token = set_context(None)
    yield
    reset_context(token)


def state_of(breaker: CircuitBreaker) -> BreakerState:
    """Reads the state afresh; a bare attribute read would stay narrowed by an earlier assert."""
    return breaker.state


def client(handler: Handler, sleeps: Sleeps | None = None, **kwargs: object) -> ServiceClient:
    return ServiceClient(
        "rag",
        base_url="http://rag.test",
        transport=httpx.MockTransport(handler),
        sleep=sleeps or Sleeps(),
        **kwargs,  # type: ignore[arg-type]
    )


async def test_forwards_identity_correlation_and_fresh_request_ids() -> None:
    identity = Identity(tenant_id="t1", user_id="u1", token="tok-123")
    set_context(RequestContext(correlation_id="corr-1", request_id="in-1", identity=identity))
    rec = Recorder(200)
    async with client(rec) as svc:
        spoof = {"X-Tenant-ID": "evil", "authorization": "Bearer forged", "X-Extra": "kept"}
        await svc.get("/a", headers=spoof)
        await svc.post("/b", json={"q": 1}, idempotency_key="key-9")
    first, second = rec.requests
    assert first.headers["Authorization"] == "Bearer tok-123"
    assert first.headers["X-Tenant-ID"] == "t1"
    assert first.headers["X-User-ID"] == "u1"
    assert first.headers["X-Correlation-ID"] == second.headers["X-Correlation-ID"] == "corr-1"
    assert first.headers["X-Extra"] == "kept"
    assert "Idempotency-Key" not in first.headers
    assert second.headers["Idempotency-Key"] == "key-9"
    ids = {first.headers["X-Request-ID"], second.headers["X-Request-ID"], "in-1"}
    assert len(ids) == 3


async def test_caller_cannot_add_identity_the_context_lacks() -> None:
    set_context(RequestContext(correlation_id="c", request_id="r", identity=Identity("t1")))
    rec = Recorder(200)
    async with client(rec) as svc:
        await svc.get("/a", headers={"X-User-ID": "root", "Authorization": "Bearer forged"})
    sent = rec.requests[0].headers
    assert sent["X-Tenant-ID"] == "t1"
    assert "X-User-ID" not in sent
    assert "Authorization" not in sent


async def test_asgi_app_runs_in_process() -> None:
    async def echo(request: Request) -> JSONResponse:
        return JSONResponse(
            {"host": request.url.hostname, "tenant": request.headers["x-tenant-id"]}
        )

    app = Starlette(routes=[Route("/echo", echo)])
    set_context(RequestContext(correlation_id="c", request_id="r", identity=Identity("t7")))
    async with ServiceClient("cache", asgi_app=app) as svc:
        response = await svc.get("/echo")
    assert response.json() == {"host": "cache.inprocess", "tenant": "t7"}


async def test_in_process_bodies_streams_and_no_cookie_jar() -> None:
    """In-process requests skip the client's send: the JSON body (orjson, integer keys as
    strings like the standard library), its content type, a streamed answer and its status all
    arrive as over the network, and a cookie one answer sets is not sent with the next request
    (no jar between services, where one tenant's call could carry another's cookie)."""
    seen: list[tuple[bytes, str, str]] = []

    async def echo(request: Request) -> JSONResponse:
        body = await request.body()
        seen.append((body, request.headers["content-type"], request.headers.get("cookie", "")))
        answer = JSONResponse({"got": len(body)}, status_code=201)
        answer.set_cookie("session", "tenant-a")
        return answer

    app = Starlette(routes=[Route("/echo", echo, methods=["POST"])])
    async with ServiceClient("cache", asgi_app=app) as svc:
        first = await svc.post("/echo", json={"a": [1, 2.5, None], 7: "seven"})
        second = await svc.post("/echo", content=b"raw", headers={"Content-Type": "text/plain"})
        assert second.status_code == 201
        async with svc.stream("POST", "/echo", json={"s": "é"}) as streamed:
            chunks = [chunk async for chunk in streamed.aiter_bytes()]
    assert first.status_code == 201 and first.json() == {"got": len(seen[0][0])}
    assert first.request.url.path == "/echo"
    assert seen[0][:2] == (b'{"a":[1,2.5,null],"7":"seven"}', "application/json")
    assert seen[1] == (b"raw", "text/plain", "")
    assert seen[2][0] == '{"s":"é"}'.encode() and seen[2][2] == ""
    assert streamed.status_code == 201 and b"".join(chunks) == b'{"got":10}'
    with pytest.raises(ValueError, match="json or content"):
        await svc.post("/echo", json={}, content=b"x")


async def test_a_cookie_an_answer_sets_is_not_sent_with_the_next_call() -> None:
    cookie = {"set-cookie": "session=tenant-a; Path=/"}
    rec = Recorder(httpx.Response(200, headers=cookie, json={}), httpx.Response(200, json={}))
    async with client(rec) as svc:
        await svc.get("/a")
        await svc.get("/a")
    assert [r.headers.get("cookie") for r in rec.requests] == [None, None]


async def test_get_retries_503_then_succeeds() -> None:
    rec, sleeps = Recorder(503, 200), Sleeps()
    async with client(rec, sleeps, backoff_base_s=0.05) as svc:
        response = await svc.get("/x")
    assert response.status_code == 200
    assert rec.calls == 2
    assert len(sleeps.delays) == 1
    assert 0.0 <= sleeps.delays[0] <= 0.05


async def test_post_without_idempotency_key_is_not_retried() -> None:
    rec, sleeps = Recorder(503, 200), Sleeps()
    async with client(rec, sleeps) as svc:
        response = await svc.post("/x", json={})
    assert response.status_code == 503
    assert rec.calls == 1
    assert sleeps.delays == []


async def test_post_with_idempotency_key_is_retried() -> None:
    rec = Recorder(502, 504, 201)
    async with client(rec) as svc:
        response = await svc.post("/x", json={}, idempotency_key="k1")
    assert response.status_code == 201
    assert rec.calls == 3
    assert [r.headers["Idempotency-Key"] for r in rec.requests] == ["k1"] * 3


@pytest.mark.parametrize("status", [400, 401, 404, 409, 422])
async def test_client_errors_are_not_retried(status: int) -> None:
    rec = Recorder(status, 200)
    async with client(rec) as svc:
        response = await svc.get("/x")
    assert response.status_code == status
    assert rec.calls == 1


@pytest.mark.parametrize(("status", "header", "expected"), [(429, "7", 7.0), (503, "120", 30.0)])
async def test_retry_after_is_honoured_and_capped(
    status: int, header: str, expected: float
) -> None:
    rec, sleeps = Recorder(httpx.Response(status, headers={"Retry-After": header}), 200), Sleeps()
    async with client(rec, sleeps) as svc:
        response = await svc.get("/x")
    assert response.status_code == 200
    assert sleeps.delays == [expected]


async def test_exhausted_retries_return_last_response() -> None:
    rec, sleeps = Recorder(500), Sleeps()
    async with client(rec, sleeps, retries=2, backoff_base_s=0.1, backoff_max_s=0.15) as svc:
        response = await svc.delete("/x")
    assert response.status_code == 500
    assert rec.calls == 3
    assert len(sleeps.delays) == 2
    assert all(0.0 <= d <= 0.15 for d in sleeps.delays)


async def test_connect_error_raises_dependency_unavailable_after_retries() -> None:
    rec = Recorder(httpx.ConnectError("refused"))
    async with client(rec, retries=2) as svc:
        with pytest.raises(DependencyUnavailable) as info:
            await svc.get("/x")
    assert rec.calls == 3
    assert info.value.details == {"service": "rag"}
    assert "rag" in info.value.message


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_read_timeout_is_not_retried(method: str) -> None:
    rec = Recorder(httpx.ReadTimeout("slow"))
    async with client(rec) as svc:
        with pytest.raises(UpstreamTimeout):
            await svc.request(method, "/x")
    assert rec.calls == 1


async def test_breaker_opens_and_fails_fast_without_calling_transport() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=3, cooldown_s=10.0, clock=clock)
    rec = Recorder(500)
    async with client(rec, retries=0, breaker=breaker) as svc:
        for _ in range(2):
            await svc.get("/x")
        assert breaker.state is BreakerState.CLOSED
        await svc.get("/x")
        assert state_of(breaker) is BreakerState.OPEN
        clock.now += 2.5
        with pytest.raises(DependencyUnavailable) as info:
            await svc.get("/x")
    assert rec.calls == 3
    assert info.value.message == "rag circuit open"
    assert info.value.details == {"service": "rag", "retry_after_s": 7.5}
    assert info.value.headers["Retry-After"] == "8"


async def test_client_errors_do_not_trip_the_breaker() -> None:
    breaker = CircuitBreaker(failure_threshold=2, clock=Clock())
    async with client(Recorder(500, 404, 500, 404), retries=0, breaker=breaker) as svc:
        for _ in range(4):
            await svc.get("/x")
    assert breaker.state is BreakerState.CLOSED


async def test_half_open_admits_one_probe_and_success_closes() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=1, cooldown_s=5.0, clock=clock)
    gate = asyncio.Event()
    calls: list[str] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if request.url.path == "/probe":
            await gate.wait()
            return httpx.Response(200)
        return httpx.Response(500)

    async with client(handler, retries=0, breaker=breaker) as svc:
        await svc.get("/fail")
        assert breaker.state is BreakerState.OPEN
        clock.now += 5.0
        assert state_of(breaker) is BreakerState.HALF_OPEN
        probe = asyncio.create_task(svc.get("/probe"))
        await asyncio.sleep(0)
        assert calls == ["/fail", "/probe"]
        with pytest.raises(DependencyUnavailable):
            await svc.get("/other")
        gate.set()
        assert (await probe).status_code == 200
        assert state_of(breaker) is BreakerState.CLOSED
        await svc.get("/fail")
    assert calls == ["/fail", "/probe", "/fail"]


async def test_half_open_probe_failure_reopens_for_another_cooldown() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=2, cooldown_s=5.0, clock=clock)
    rec = Recorder(httpx.ConnectError("refused"))
    async with client(rec, retries=0, breaker=breaker) as svc:
        for _ in range(2):
            with pytest.raises(DependencyUnavailable, match="unreachable"):
                await svc.get("/x")
        clock.now += 5.0
        assert breaker.state is BreakerState.HALF_OPEN
        with pytest.raises(DependencyUnavailable, match="unreachable"):
            await svc.get("/x")
        assert state_of(breaker) is BreakerState.OPEN
        assert breaker.retry_after_s == 5.0
        with pytest.raises(DependencyUnavailable, match="circuit open"):
            await svc.get("/x")
    assert rec.calls == 3


def test_breaker_ignores_results_admitted_before_a_state_change() -> None:
    clock = Clock()
    breaker = CircuitBreaker(failure_threshold=1, cooldown_s=1.0, clock=clock)
    stale = breaker.acquire()
    failing = breaker.acquire()
    assert stale is not None and failing is not None
    breaker.record(failing, ok=False)
    clock.now += 1.0
    probe = breaker.acquire()
    assert probe is not None
    assert breaker.acquire() is None
    breaker.record(stale, ok=True)
    assert breaker.state is BreakerState.HALF_OPEN
    breaker.release(probe)
    assert breaker.acquire() is not None


async def test_client_span_wraps_attempt_and_parents_the_request() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    rec = Recorder(200)
    async with client(rec, tracer=provider.get_tracer("test")) as svc:
        await svc.get("/docs", params={"q": "x"})
    (span,) = exporter.get_finished_spans()
    assert span.name == "GET rag"
    assert span.kind is trace.SpanKind.CLIENT
    assert dict(span.attributes or {}) == {
        "http.request.method": "GET",
        "server.address": "rag",
        "url.path": "/docs",
        "http.response.status_code": 200,
    }
    assert span.context is not None
    traceparent = rec.requests[0].headers["traceparent"]
    assert traceparent.split("-")[2] == format(span.context.span_id, "016x")


def test_exactly_one_target_is_required() -> None:
    app = Starlette()
    with pytest.raises(ValueError):
        ServiceClient("rag")
    with pytest.raises(ValueError):
        ServiceClient("rag", base_url="http://x", asgi_app=app)
    with pytest.raises(ValueError):
        ServiceClient("rag", asgi_app=app, transport=httpx.MockTransport(Recorder(200)))
    with pytest.raises(ValueError):
        ServiceClient("rag", transport=httpx.MockTransport(Recorder(200)))


async def test_requests_are_what_httpx_builds_with_each_paths_url_merged_once() -> None:
    """A path's URL is merged into the base URL once and kept (bounded); the request is the
    one the client's build_request would make: URL, the client's default headers under the
    call's, the timeout, the body."""
    recorder = Recorder(200)
    rag = ServiceClient(
        "rag", base_url="http://rag.test/base", transport=httpx.MockTransport(recorder)
    )
    reference = httpx.AsyncClient(base_url="http://rag.test/base", timeout=30.0)
    for _ in range(2):
        await rag.post("/api/v1/x", json={"a": 1}, timeout_s=5.0)
    await rag.get("/api/v1/x", params={"q": "two words"})
    expected = reference.build_request("POST", "/api/v1/x", content=b'{"a":1}', timeout=5.0)
    first, second, query = recorder.requests
    assert first.url == second.url == expected.url == "http://rag.test/base/api/v1/x"
    assert list(rag._urls) == ["/api/v1/x"]
    assert first.extensions["timeout"] == expected.extensions["timeout"]
    assert first.content == b'{"a":1}'
    for name in ("user-agent", "accept", "accept-encoding"):
        assert first.headers[name] == expected.headers[name]
    assert first.headers["content-type"] == "application/json"
    assert str(query.url) == "http://rag.test/base/api/v1/x?q=two+words"
    for i in range(_URLS_KEPT + 1):
        await rag.get(f"/api/v1/items/{i}")
    assert len(rag._urls) <= _URLS_KEPT
    await reference.aclose()
    await rag.aclose()
