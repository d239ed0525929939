from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    TraceIdRatioBased,
)
from opentelemetry.trace import SpanContext, SpanKind, StatusCode
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route

from faas.integrations import prometheus
from faas.integrations.bus import Message
from faas.integrations.bus.memory import InProcessBus
from faas.integrations.otel import (
    Telemetry,
    TracingMiddleware,
    sampler_from_env,
    setup_telemetry,
)
from faas.integrations.otel_messaging import (
    consumer_span,
    extract_context,
    inject_headers,
    link_from_headers,
    producer_span,
)
from faas.shared.config import load_settings
from faas.shared.context import Identity, RequestContext, reset_context, set_context
from faas.shared.middleware import AuthMiddleware

TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
PARENT_ID = 0x00F067AA0BA902B7
TRACEPARENT = f"00-{TRACE_ID:032x}-{PARENT_ID:016x}-01"
TENANT = {"X-Tenant-ID": "acme", "X-User-ID": "u-1"}

# One exposition line: a comment, or `name{labels} value`.
SAMPLE_RE = re.compile(
    r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\.)*",?)*\})? '
    r"(-?[0-9.]+(e[-+]?[0-9]+)?|\+Inf|-Inf|NaN)$"
)
COMMENT_RE = re.compile(
    r"^# (HELP [a-zA-Z_:][a-zA-Z0-9_:]* .*|TYPE [a-zA-Z_:][a-zA-Z0-9_:]* "
    r"(counter|gauge|histogram|summary|untyped))$"
)


MakeTelemetry = Callable[..., tuple[Telemetry, InMemorySpanExporter]]


@pytest.fixture
def make_telemetry() -> Iterator[MakeTelemetry]:
    made: list[Telemetry] = []

    def make(
        env: dict[str, str] | None = None, **kwargs: Any
    ) -> tuple[Telemetry, InMemorySpanExporter]:
        exporter = InMemorySpanExporter()
        telemetry = setup_telemetry(
            "test-svc", span_exporter=exporter, env=env or {}, set_global=False, **kwargs
        )
        made.append(telemetry)
        return telemetry, exporter

    yield make
    for telemetry in made:
        telemetry.shutdown()


class Seen:
    """What the endpoint saw of the current span."""

    def __init__(self) -> None:
        self.span_context: SpanContext | None = None


def build_app(telemetry: Telemetry, seen: Seen | None = None) -> Starlette:
    async def item(request: Request) -> Response:
        if seen is not None:
            seen.span_context = trace.get_current_span().get_span_context()
        return JSONResponse({"id": request.path_params["item_id"]})

    async def unavailable(request: Request) -> Response:
        return PlainTextResponse("down", status_code=503)

    async def boom(request: Request) -> Response:
        raise RuntimeError("boom")

    async def ok(request: Request) -> Response:
        return PlainTextResponse("ok")

    settings = load_settings(auth="trusted-headers")
    return Starlette(
        routes=[
            Route("/items/{item_id}", item),
            Route("/unavailable", unavailable),
            Route("/boom", boom),
            Route("/livez", ok),
            Mount("/v1", routes=[Route("/things/{thing_id:int}", item)]),
            Mount("/files", app=PlainTextResponse("file")),
        ],
        middleware=[
            Middleware(TracingMiddleware, telemetry=telemetry),
            Middleware(AuthMiddleware, settings=settings, verifier=None),
        ],
    )


def client(app: Any) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


def only_span(exporter: InMemorySpanExporter) -> ReadableSpan:
    spans = exporter.get_finished_spans()
    assert len(spans) == 1, [s.name for s in spans]
    return spans[0]


async def test_one_server_span_with_route_name_attributes_and_identity(
    make_telemetry: MakeTelemetry,
) -> None:
    telemetry, exporter = make_telemetry()
    async with client(build_app(telemetry)) as c:
        response = await c.get("/items/42", headers=TENANT)
    assert response.status_code == 200

    span = only_span(exporter)
    assert span.name == "GET /items/{item_id}"
    assert span.kind is SpanKind.SERVER
    assert span.parent is None
    assert span.status.status_code is StatusCode.UNSET
    assert dict(span.attributes or {}) == {
        "http.request.method": "GET",
        "url.path": "/items/42",
        "http.route": "/items/{item_id}",
        "http.response.status_code": 200,
        "faas.tenant_id": "acme",
        "faas.user_id": "u-1",
    }
    assert span.resource.attributes["service.name"] == "test-svc"


async def test_identity_from_request_context_when_scope_has_none(
    make_telemetry: MakeTelemetry,
) -> None:
    telemetry, exporter = make_telemetry()

    async def endpoint(request: Request) -> Response:
        return PlainTextResponse("ok")

    inner = TracingMiddleware(Starlette(routes=[Route("/x", endpoint)]), telemetry)

    async def with_context(scope: Any, receive: Any, send: Any) -> None:
        ctx = RequestContext("c", "r", identity=Identity(tenant_id="t2", user_id=None))
        token = set_context(ctx)
        try:
            await inner(scope, receive, send)
        finally:
            reset_context(token)

    async with client(with_context) as c:
        await c.get("/x")
    attributes = only_span(exporter).attributes or {}
    assert attributes["faas.tenant_id"] == "t2"
    assert "faas.user_id" not in attributes


async def test_incoming_traceparent_is_the_parent(make_telemetry: MakeTelemetry) -> None:
    telemetry, exporter = make_telemetry()
    async with client(build_app(telemetry)) as c:
        await c.get("/items/1", headers={**TENANT, "traceparent": TRACEPARENT, "tracestate": "k=v"})

    span = only_span(exporter)
    assert span.context.trace_id == TRACE_ID
    assert span.parent is not None
    assert span.parent.span_id == PARENT_ID
    assert span.parent.is_remote
    assert span.context.trace_state.get("k") == "v"


async def test_ambient_span_is_not_the_parent_without_traceparent(
    make_telemetry: MakeTelemetry,
) -> None:
    telemetry, exporter = make_telemetry()
    async with client(build_app(telemetry)) as c:
        with telemetry.tracer.start_as_current_span("test-client") as outer:
            await c.get("/items/1", headers=TENANT)
    server = next(s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER)
    assert server.parent is None
    assert server.context.trace_id != outer.get_span_context().trace_id


async def test_5xx_response_marks_error(make_telemetry: MakeTelemetry) -> None:
    telemetry, exporter = make_telemetry()
    async with client(build_app(telemetry)) as c:
        response = await c.get("/unavailable", headers=TENANT)
    assert response.status_code == 503
    span = only_span(exporter)
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None
    assert span.attributes["http.response.status_code"] == 503
    assert span.attributes["error.type"] == "503"


async def test_exception_is_500_error_with_exception_event(make_telemetry: MakeTelemetry) -> None:
    telemetry, exporter = make_telemetry()
    async with client(build_app(telemetry)) as c:
        response = await c.get("/boom", headers=TENANT)
    assert response.status_code == 500
    span = only_span(exporter)
    assert span.name == "GET /boom"
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None
    assert span.attributes["http.response.status_code"] == 500
    assert span.attributes["error.type"] == "RuntimeError"
    assert [e.name for e in span.events] == ["exception"]


async def test_unmatched_path_names_span_by_raw_path_without_route(
    make_telemetry: MakeTelemetry,
) -> None:
    telemetry, exporter = make_telemetry()
    async with client(build_app(telemetry)) as c:
        response = await c.get("/nope/123", headers=TENANT)
    assert response.status_code == 404
    span = only_span(exporter)
    assert span.name == "GET /nope/123"
    assert span.attributes is not None
    assert "http.route" not in span.attributes
    assert span.attributes["http.response.status_code"] == 404


async def test_route_under_mount_includes_mount_path(make_telemetry: MakeTelemetry) -> None:
    telemetry, exporter = make_telemetry()
    async with client(build_app(telemetry)) as c:
        await c.get("/v1/things/7", headers=TENANT)
    span = only_span(exporter)
    assert span.name == "GET /v1/things/{thing_id}"
    assert span.attributes is not None
    assert span.attributes["http.route"] == "/v1/things/{thing_id}"


async def test_mounted_app_route_is_the_mount_path(make_telemetry: MakeTelemetry) -> None:
    telemetry, exporter = make_telemetry()
    async with client(build_app(telemetry)) as c:
        response = await c.get("/files/a/b.txt", headers=TENANT)
    assert response.text == "file"
    span = only_span(exporter)
    assert span.name == "GET /files"
    assert span.attributes is not None
    assert span.attributes["http.route"] == "/files"
    assert span.attributes["url.path"] == "/files/a/b.txt"


async def test_fastapi_router_prefix_route(make_telemetry: MakeTelemetry) -> None:
    telemetry, exporter = make_telemetry()
    router = APIRouter(prefix="/users")

    @router.get("/{user_id}")
    async def get_user(user_id: str) -> dict[str, str]:
        return {"id": user_id}

    app = FastAPI()
    app.include_router(router)
    app.add_middleware(TracingMiddleware, telemetry=telemetry)
    async with client(app) as c:
        response = await c.get("/users/9")
    assert response.json() == {"id": "9"}
    span = only_span(exporter)
    assert span.name == "GET /users/{user_id}"


async def test_excluded_paths_make_no_span_and_no_metric(make_telemetry: MakeTelemetry) -> None:
    telemetry, exporter = make_telemetry()
    async with client(build_app(telemetry)) as c:
        response = await c.get("/livez")
    assert response.text == "ok"
    assert exporter.get_finished_spans() == ()
    assert "http_server_request_duration_seconds_count" not in telemetry.prometheus_text()


async def test_inner_code_sees_the_server_span_as_current(make_telemetry: MakeTelemetry) -> None:
    telemetry, exporter = make_telemetry()
    seen = Seen()
    async with client(build_app(telemetry, seen)) as c:
        await c.get("/items/1", headers={**TENANT, "traceparent": TRACEPARENT})
    span = only_span(exporter)
    assert seen.span_context == span.get_span_context()
    assert trace.get_current_span() is trace.INVALID_SPAN  # detached afterwards


async def test_sampled_out_request_records_no_span_but_keeps_trace(
    make_telemetry: MakeTelemetry,
) -> None:
    telemetry, exporter = make_telemetry()  # parentbased_always_on: follows the parent's flag
    seen = Seen()
    unsampled = TRACEPARENT[:-2] + "00"
    async with client(build_app(telemetry, seen)) as c:
        response = await c.get("/items/1", headers={**TENANT, "traceparent": unsampled})
    assert response.status_code == 200
    assert exporter.get_finished_spans() == ()
    assert seen.span_context is not None
    assert seen.span_context.trace_id == TRACE_ID
    assert not seen.span_context.trace_flags.sampled
    assert "http_server_request_duration_seconds_count{" in telemetry.prometheus_text()


async def test_no_exporter_means_no_spans_but_parent_is_propagated() -> None:
    telemetry = setup_telemetry("svc", env={"OTEL_TRACES_EXPORTER": "none"}, set_global=False)
    try:
        assert telemetry.tracing_enabled is False
        seen = Seen()
        async with client(build_app(telemetry, seen)) as c:
            await c.get("/items/1", headers={**TENANT, "traceparent": TRACEPARENT})
        assert seen.span_context is not None
        assert (seen.span_context.trace_id, seen.span_context.span_id) == (TRACE_ID, PARENT_ID)
    finally:
        telemetry.shutdown()


def check_exposition(text: str) -> list[str]:
    lines = text.splitlines()
    assert text.endswith("\n")
    bad = [line for line in lines if not (SAMPLE_RE.match(line) or COMMENT_RE.match(line))]
    assert bad == []
    return lines


async def test_prometheus_duration_histogram_counts_requests(make_telemetry: MakeTelemetry) -> None:
    telemetry, _ = make_telemetry()
    async with client(build_app(telemetry)) as c:
        for i in range(3):
            await c.get(f"/items/{i}", headers=TENANT)
        await c.get("/unavailable", headers=TENANT)
    lines = check_exposition(telemetry.prometheus_text())

    name = "http_server_request_duration_seconds"
    labels = (
        'http_request_method="GET",http_response_status_code="200",http_route="/items/{item_id}"'
    )
    assert f"# TYPE {name} histogram" in lines
    assert f"# HELP {name} Duration of HTTP server requests." in lines
    assert f"{name}_count{{{labels}}} 3" in lines
    assert f'{name}_bucket{{{labels},le="+Inf"}} 3' in lines
    assert any(line.startswith(f'{name}_bucket{{{labels},le="0.005"}} ') for line in lines)
    unavailable = labels.replace("200", "503").replace("/items/{item_id}", "/unavailable")
    assert f"{name}_count{{{unavailable}}} 1" in lines
    sums = [line for line in lines if line.startswith(f"{name}_sum{{{labels}}} ")]
    assert len(sums) == 1 and float(sums[0].rsplit(" ", 1)[1]) > 0
    # Buckets are cumulative: never decreasing, last equals the count.
    counts = [
        int(line.rsplit(" ", 1)[1])
        for line in lines
        if line.startswith(f"{name}_bucket{{{labels},")
    ]
    assert counts == sorted(counts) and counts[-1] == 3
    assert "# TYPE http_server_active_requests gauge" in lines
    assert 'http_server_active_requests{http_request_method="GET"} 0' in lines


def test_prometheus_counter_gauge_and_label_escaping(make_telemetry: MakeTelemetry) -> None:
    telemetry, _ = make_telemetry()
    counter = telemetry.meter.create_counter("bus.published", unit="{message}", description="Sent.")
    counter.add(2, {"subject": 'a"b\\c\nd', "ok": True})
    counter.add(1, {"subject": "x", "ok": False})
    depth = telemetry.meter.create_up_down_counter("jobs.queue.depth", description="Queued\njobs")
    depth.add(5)
    depth.add(-2)
    size = telemetry.meter.create_histogram("payload.size", unit="By")
    size.record(10)
    lines = check_exposition(telemetry.prometheus_text())

    assert "# TYPE bus_published_total counter" in lines
    assert "# HELP bus_published_total Sent." in lines
    assert 'bus_published_total{ok="true",subject="a\\"b\\\\c\\nd"} 2' in lines
    assert 'bus_published_total{ok="false",subject="x"} 1' in lines
    assert "# TYPE jobs_queue_depth gauge" in lines
    assert "# HELP jobs_queue_depth Queued\\njobs" in lines
    assert "jobs_queue_depth 3" in lines
    assert "# TYPE payload_size_bytes histogram" in lines
    assert "payload_size_bytes_count 1" in lines
    assert "payload_size_bytes_sum 10" in lines


def test_prometheus_names() -> None:
    assert prometheus.metric_name("http.server.request.duration", "s") == (
        "http_server_request_duration_seconds"
    )
    assert prometheus.metric_name("rate", "By/s") == "rate_bytes_per_second"
    assert prometheus.metric_name("x.seconds", "s") == "x_seconds"
    assert prometheus.metric_name("9lives-left", "{cat}") == "_9lives_left"
    assert prometheus.label_name("http.route") == "http_route"
    assert prometheus.render(None) == ""


def test_inject_extract_round_trip_keeps_trace_and_parent(make_telemetry: MakeTelemetry) -> None:
    telemetry, _ = make_telemetry()
    with telemetry.tracer.start_as_current_span("request") as span:
        headers = inject_headers({"content-type": "application/json"})
    assert headers["content-type"] == "application/json"
    ctx = span.get_span_context()
    assert ctx.trace_flags.sampled
    flags = int(ctx.trace_flags)
    assert headers["traceparent"] == f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{flags:02x}"

    extracted = trace.get_current_span(extract_context({"TraceParent": headers["traceparent"]}))
    remote = extracted.get_span_context()
    assert (remote.trace_id, remote.span_id, remote.is_remote) == (ctx.trace_id, ctx.span_id, True)


async def test_a_dead_lettered_job_is_published_in_its_own_span_under_the_failed_run(
    make_telemetry: MakeTelemetry,
) -> None:
    """Its stored headers still carry the submit's trace context; the dead-letter publish is a
    span of its own under the failed job's run, not a continuation of the submit."""
    telemetry, exporter = make_telemetry()
    bus = InProcessBus(tracer=telemetry.tracer, max_attempts=1, retry_base_s=0.01)
    dead: list[Message] = []

    async def on_dead(message: Message) -> None:
        dead.append(message)

    async def broken(_: Any) -> None:
        raise ValueError("boom")

    await bus.subscribe("dlq.k.x", on_dead)
    await bus.consume(["k.x"], broken)
    try:
        with telemetry.tracer.start_as_current_span("request"):
            await bus.submit("k.x", b"p", job_id="j1")
        for _ in range(200):
            if dead:
                break
            await asyncio.sleep(0.01)
    finally:
        await bus.close()
    spans = {s.name: s for s in exporter.get_finished_spans()}
    publish, run = spans["publish dlq.k.x"], spans["process jobs.k.x"]
    assert publish.parent is not None and publish.parent.span_id == run.context.span_id
    assert dead and f"{publish.context.span_id:016x}" in dead[0].headers["traceparent"]


def test_inject_without_span_adds_nothing_and_extract_of_nothing_is_invalid() -> None:
    assert inject_headers({}) == {}
    assert not trace.get_current_span(extract_context({})).get_span_context().is_valid
    assert link_from_headers({"traceparent": "garbage"}) is None


def test_producer_and_consumer_spans_are_parent_and_child(make_telemetry: MakeTelemetry) -> None:
    telemetry, exporter = make_telemetry()
    headers: dict[str, str] = {}
    with producer_span(telemetry, "jobs.submitted", headers) as producer:
        pass
    assert "traceparent" in headers
    with consumer_span(telemetry.tracer, "jobs.submitted", headers) as consumer:
        assert trace.get_current_span() is consumer

    finished = {s.kind: s for s in exporter.get_finished_spans()}
    assert set(finished) == {SpanKind.PRODUCER, SpanKind.CONSUMER}
    p, c = finished[SpanKind.PRODUCER], finished[SpanKind.CONSUMER]
    assert p.context == producer.get_span_context()
    assert c.context == consumer.get_span_context()
    assert c.parent is not None and c.parent.span_id == p.context.span_id
    assert c.context.trace_id == p.context.trace_id
    assert p.name == "publish jobs.submitted" and c.name == "process jobs.submitted"
    for span, operation in ((p, "publish"), (c, "process")):
        assert span.attributes is not None
        assert span.attributes["messaging.system"] == "nats"
        assert span.attributes["messaging.destination.name"] == "jobs.submitted"
        assert span.attributes["messaging.operation.name"] == operation


def test_consumer_span_links_to_submitting_request(make_telemetry: MakeTelemetry) -> None:
    telemetry, exporter = make_telemetry()
    with telemetry.tracer.start_as_current_span("submit") as request:
        submitted = inject_headers({})
    link = link_from_headers(submitted)
    assert link is not None
    with consumer_span(telemetry, "jobs.run", {}, links=[link]):
        pass
    job = next(s for s in exporter.get_finished_spans() if s.kind is SpanKind.CONSUMER)
    assert job.parent is None
    assert [lk.context.span_id for lk in job.links] == [request.get_span_context().span_id]


def test_consumer_span_records_errors(make_telemetry: MakeTelemetry) -> None:
    telemetry, exporter = make_telemetry()
    with pytest.raises(ValueError), consumer_span(telemetry, "s", None):
        raise ValueError("bad message")
    assert only_span(exporter).status.status_code is StatusCode.ERROR


async def test_two_telemetry_instances_do_not_share_spans(make_telemetry: MakeTelemetry) -> None:
    first, first_spans = make_telemetry()
    second, second_spans = make_telemetry()
    async with client(build_app(first)) as c:
        await c.get("/items/1", headers=TENANT)
    async with client(build_app(second)) as c:
        await c.get("/unavailable", headers=TENANT)
        await c.get("/unavailable", headers=TENANT)
    assert [s.name for s in first_spans.get_finished_spans()] == ["GET /items/{item_id}"]
    assert [s.name for s in second_spans.get_finished_spans()] == ["GET /unavailable"] * 2
    assert "/unavailable" not in first.prometheus_text()
    assert "/items/{item_id}" not in second.prometheus_text()


def test_env_selects_exporters_service_name_and_sampler() -> None:
    env = {
        "OTEL_TRACES_EXPORTER": "otlp,console",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/",
        "OTEL_SERVICE_NAME": "from-env",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test,team=ai%20ops",
        "OTEL_TRACES_SAMPLER": "traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.25",
    }
    telemetry = setup_telemetry("svc", env=env, set_global=False)
    try:
        assert telemetry.service_name == "from-env"
        otlp, console = telemetry.exporters
        assert isinstance(otlp, OTLPSpanExporter)
        assert otlp._endpoint == "http://collector:4318/v1/traces"
        assert isinstance(console, ConsoleSpanExporter)
        processors = telemetry.tracer_provider._active_span_processor._span_processors
        assert [type(p) for p in processors] == [BatchSpanProcessor, BatchSpanProcessor]
        resource = telemetry.tracer_provider.resource.attributes
        assert resource["service.name"] == "from-env"
        assert resource["team"] == "ai ops"
        sampler = telemetry.tracer_provider.sampler
        assert isinstance(sampler, TraceIdRatioBased) and sampler.rate == 0.25
    finally:
        telemetry.shutdown()
    assert setup_telemetry("svc", env={}, set_global=False).exporters == ()


def describe(sampler: Any) -> str:
    return str(sampler.get_description())


@pytest.mark.parametrize(
    ("name", "arg", "check"),
    [
        ("always_on", None, lambda s: s is ALWAYS_ON),
        ("always_off", None, lambda s: s is ALWAYS_OFF),
        (
            "parentbased_always_off",
            None,
            lambda s: isinstance(s, ParentBased) and "AlwaysOff" in describe(s),
        ),
        (
            "parentbased_traceidratio",
            "0.5",
            lambda s: isinstance(s, ParentBased) and "0.5" in describe(s),
        ),
        (None, None, lambda s: isinstance(s, ParentBased) and "AlwaysOn" in describe(s)),
        (
            "nonsense",
            None,
            lambda s: isinstance(s, ParentBased) and "AlwaysOn" in describe(s),
        ),
    ],
)
def test_sampler_from_env(name: str | None, arg: str | None, check: Callable[[Any], bool]) -> None:
    env = {k: v for k, v in (("OTEL_TRACES_SAMPLER", name), ("OTEL_TRACES_SAMPLER_ARG", arg)) if v}
    assert check(sampler_from_env(env))


async def test_always_off_sampler_from_env_exports_nothing(make_telemetry: MakeTelemetry) -> None:
    telemetry, exporter = make_telemetry(env={"OTEL_TRACES_SAMPLER": "always_off"})
    async with client(build_app(telemetry)) as c:
        await c.get("/items/1", headers={**TENANT, "traceparent": TRACEPARENT})
    assert exporter.get_finished_spans() == ()


def test_shutdown_flushes_and_is_idempotent(make_telemetry: MakeTelemetry) -> None:
    telemetry, exporter = make_telemetry()
    with telemetry.tracer.start_as_current_span("late"):
        pass
    telemetry.shutdown()
    telemetry.shutdown()
    assert [s.name for s in exporter.get_finished_spans()] == ["late"]
    with telemetry.tracer.start_as_current_span("after-shutdown"):
        pass
    assert [s.name for s in exporter.get_finished_spans()] == ["late"]


def test_first_telemetry_becomes_the_global_provider() -> None:
    script = """
from opentelemetry import metrics, trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from faas.integrations.otel import setup_telemetry
first_spans, second_spans = InMemorySpanExporter(), InMemorySpanExporter()
first = setup_telemetry("a", span_exporter=first_spans, env={})
second = setup_telemetry("b", span_exporter=second_spans, env={})
assert trace.get_tracer_provider() is first.tracer_provider
assert metrics.get_meter_provider() is first.meter_provider
with trace.get_tracer("lib").start_as_current_span("library-span"):
    pass
metrics.get_meter("lib").create_counter("lib.calls").add(1)
assert [s.name for s in first_spans.get_finished_spans()] == ["library-span"]
assert second_spans.get_finished_spans() == ()
assert "lib_calls_total 1" in first.prometheus_text()
print("ok")
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
    assert "Overriding" not in result.stderr
