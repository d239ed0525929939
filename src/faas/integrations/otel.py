"""OpenTelemetry for faas: per-instance tracer/meter providers, a lean ASGI server-span
middleware and Prometheus text from the SDK's in-memory metric reader (NATS header propagation
and messaging spans are in `otel_messaging`).

Each `Telemetry` owns its providers, so several can live in one process (tests); the first
one is also installed as the global provider so `trace.get_tracer(...)` in library code works.
"""

from __future__ import annotations

import atexit
import logging
import os
import weakref
from collections.abc import Iterable, Mapping, Sequence
from contextvars import Token
from time import perf_counter
from typing import Final
from urllib.parse import unquote

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.metrics._internal import _ProxyMeterProvider
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.sdk.version import __version__ as sdk_version
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from faas.integrations import prometheus
from faas.integrations.histograms import AggregatingMeter, AggregatingReader
from faas.shared.context import current_context

log = logging.getLogger("faas.otel")

SCOPE_NAME: Final = "faas"
# LLMOps' OTLP receiver too: a span for each export received would be one more to export.
DEFAULT_EXCLUDED_PATHS: Final = frozenset(
    {"/livez", "/readyz", "/metrics", "/llmops/otlp/v1/traces"}
)
# Semantic-convention advisory buckets for http.server.request.duration (seconds).
DURATION_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0)
_KNOWN_METHODS: Final = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)
_PROPAGATOR: Final = TraceContextTextMapPropagator()
_EMPTY: Final = Context()


class Telemetry:
    """One service's tracer and meter providers; build it with `setup_telemetry`."""

    def __init__(
        self,
        service_name: str,
        *,
        resource: Resource,
        sampler: Sampler,
        exporters: Sequence[SpanExporter],
        batch: bool,
        id_generator: IdGenerator | None,
    ) -> None:
        self.service_name = service_name
        self.exporters: tuple[SpanExporter, ...] = tuple(exporters)
        # Without an exporter spans would go nowhere: the middleware then only propagates.
        self.tracing_enabled = bool(self.exporters)
        # Histograms are aggregated by faas (histograms.py) and added to what the SDK collects.
        self.metric_reader = AggregatingReader(resource)
        self.meter_provider = MeterProvider(
            metric_readers=[self.metric_reader],
            resource=resource,
            shutdown_on_exit=False,
            # Text format 0.0.4 cannot carry exemplars; sampling them costs ~4us a measurement.
            exemplar_filter=AlwaysOffExemplarFilter(),
        )
        self.tracer_provider = TracerProvider(
            sampler=sampler,
            resource=resource,
            shutdown_on_exit=False,
            id_generator=id_generator,
            meter_provider=self.meter_provider,
        )
        for exporter in self.exporters:
            processor = BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
            self.tracer_provider.add_span_processor(processor)
        # With nothing to export, spans would be built and dropped on every request, publish and
        # job: hand out the no-op tracer instead (context still propagates).
        self.tracer: Tracer = (
            self.tracer_provider.get_tracer(SCOPE_NAME)
            if self.tracing_enabled
            else trace.NoOpTracer()
        )
        self.meter: metrics.Meter = AggregatingMeter(
            self.meter_provider.get_meter(SCOPE_NAME), self.metric_reader
        )
        self.http_server_duration = self.meter.create_histogram(
            "http.server.request.duration",
            unit="s",
            description="Duration of HTTP server requests.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        # In-flight requests by method, kept as plain ints by the middleware and observed at
        # collection: a synchronous up-down counter would cost two SDK measurements a request.
        self.active_requests: dict[str, int] = {}
        self.http_server_active_requests = self.meter.create_observable_up_down_counter(
            "http.server.active_requests",
            callbacks=[self._observe_active_requests],
            unit="{request}",
            description="Number of active HTTP server requests.",
        )
        self._closed = False
        atexit.register(_shutdown_at_exit, weakref.ref(self))

    def _observe_active_requests(self, options: CallbackOptions) -> Iterable[Observation]:
        for method, count in list(self.active_requests.items()):
            yield Observation(count, {"http.request.method": method})

    def prometheus_text(self) -> str:
        """All metrics of this instance's meter provider in Prometheus text format 0.0.4."""
        return prometheus.render(self.metric_reader.get_metrics_data())

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self.tracer_provider.force_flush(timeout_millis)

    def shutdown(self) -> None:
        """Flush pending spans and shut both providers down; later calls do nothing."""
        if self._closed:
            return
        self._closed = True
        self.tracer_provider.shutdown()  # shuts the processors down, which flushes them
        self.meter_provider.shutdown()


def _shutdown_at_exit(ref: weakref.ref[Telemetry]) -> None:
    telemetry = ref()
    if telemetry is not None:
        telemetry.shutdown()


def setup_telemetry(
    service_name: str,
    *,
    span_exporter: SpanExporter | None = None,
    env: Mapping[str, str] | None = None,
    id_generator: IdGenerator | None = None,
    set_global: bool = True,
) -> Telemetry:
    """Build a `Telemetry` from the standard OTEL_* variables (`env`, default `os.environ`).

    A given `span_exporter` is used synchronously (SimpleSpanProcessor) instead of the
    exporters named by OTEL_TRACES_EXPORTER (otlp | console | none), which are batched.
    With `set_global`, the providers become the process-wide ones if none is set yet.
    """
    env = os.environ if env is None else env
    name = env.get("OTEL_SERVICE_NAME") or service_name
    if span_exporter is not None:
        exporters, batch = [span_exporter], False
    else:
        exporters, batch = _env_exporters(env), True
    telemetry = Telemetry(
        name,
        resource=_resource(name, env),
        sampler=sampler_from_env(env),
        exporters=exporters,
        batch=batch,
        id_generator=id_generator,
    )
    if set_global:
        if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
            trace.set_tracer_provider(telemetry.tracer_provider)
        if isinstance(metrics.get_meter_provider(), _ProxyMeterProvider):
            metrics.set_meter_provider(telemetry.meter_provider)
    return telemetry


def _resource(service_name: str, env: Mapping[str, str]) -> Resource:
    attributes: dict[str, AttributeValue] = {
        "telemetry.sdk.language": "python",
        "telemetry.sdk.name": "opentelemetry",
        "telemetry.sdk.version": sdk_version,
    }
    for pair in env.get("OTEL_RESOURCE_ATTRIBUTES", "").split(","):
        key, sep, value = pair.partition("=")
        if sep and key.strip():
            attributes[unquote(key.strip())] = unquote(value.strip())
    attributes["service.name"] = service_name
    return Resource(attributes)


def _env_exporters(env: Mapping[str, str]) -> list[SpanExporter]:
    exporters: list[SpanExporter] = []
    for name in env.get("OTEL_TRACES_EXPORTER", "none").lower().split(","):
        name = name.strip()
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporters.append(OTLPSpanExporter(endpoint=_otlp_traces_endpoint(env)))
        elif name == "console":
            exporters.append(ConsoleSpanExporter())
        elif name not in ("none", ""):
            log.warning("unknown OTEL_TRACES_EXPORTER %r ignored", name)
    return exporters


def _otlp_traces_endpoint(env: Mapping[str, str]) -> str:
    if endpoint := env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return endpoint
    base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or "http://localhost:4318"
    return base.rstrip("/") + "/v1/traces"


def sampler_from_env(env: Mapping[str, str]) -> Sampler:
    """OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG; default parentbased_always_on."""
    name = env.get("OTEL_TRACES_SAMPLER", "parentbased_always_on").strip().lower()
    try:
        rate = float(env.get("OTEL_TRACES_SAMPLER_ARG") or 1.0)
    except ValueError:
        log.warning("OTEL_TRACES_SAMPLER_ARG is not a number; using 1.0")
        rate = 1.0
    rate = min(max(rate, 0.0), 1.0)
    roots: dict[str, Sampler] = {"always_on": ALWAYS_ON, "always_off": ALWAYS_OFF}
    if name in ("traceidratio", "parentbased_traceidratio"):
        roots["traceidratio"] = TraceIdRatioBased(rate)
    root_name = name.removeprefix("parentbased_")
    if root_name not in roots:
        log.warning("unknown OTEL_TRACES_SAMPLER %r; using parentbased_always_on", name)
        return ParentBased(ALWAYS_ON)
    return ParentBased(roots[root_name]) if name.startswith("parentbased_") else roots[root_name]


class TracingMiddleware:
    """One SERVER span per HTTP request, plus the request duration and active-request metrics.

    Pure ASGI and deliberately lean: no spans per receive/send, attributes set in one call
    after the app ran. Put it outside the auth middleware; the identity is read from
    `scope["state"]["faas_identity"]` (or the request context) once the app returned.
    """

    def __init__(
        self,
        app: ASGIApp,
        telemetry: Telemetry,
        *,
        excluded_paths: frozenset[str] = DEFAULT_EXCLUDED_PATHS,
    ) -> None:
        self.app = app
        self.telemetry = telemetry
        self.excluded_paths = frozenset(excluded_paths)
        self._tracer = telemetry.tracer
        self._tracing = telemetry.tracing_enabled
        self._duration = telemetry.http_server_duration
        self._active = telemetry.active_requests

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.excluded_paths:
            await self.app(scope, receive, send)
            return
        start = perf_counter()
        method = scope["method"]
        if method not in _KNOWN_METHODS:
            method = "_OTHER"
        active = self._active
        active[method] = active.get(method, 0) + 1
        root_path = scope.get("root_path", "")
        parent = _parent_from_scope(scope)
        span: Span | None = None
        token: Token[Context] | None = None
        if self._tracing:
            # Attributes are set once, at the end: passing them here too costs ~8us more.
            span = self._tracer.start_span(method, parent, SpanKind.SERVER)
            token = otel_context.attach(trace.set_span_in_context(span, parent))
        else:  # nothing is exported: only carry an incoming trace through to outgoing calls
            token = otel_context.attach(parent) if parent is not _EMPTY else None
        status = 0

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        error: Exception | None = None
        try:
            await self.app(scope, receive, send_status)
        except Exception as exc:
            error = exc
            if not status:
                status = 500
            raise
        finally:
            if token is not None:
                otel_context.detach(token)
            route = _route(scope, root_path)
            metric_attrs: dict[str, AttributeValue] = {"http.request.method": method}
            if route is not None:
                metric_attrs["http.route"] = route
            if status:
                metric_attrs["http.response.status_code"] = status
            if span is not None:
                if span.is_recording():
                    _finish_server_span(span, scope, method, route, status, error)
                span.end()
            self._duration.record(perf_counter() - start, metric_attrs)
            active[method] -= 1


def _parent_from_scope(scope: Scope) -> Context:
    traceparent = tracestate = None
    for key, value in scope["headers"]:
        if key == b"traceparent":
            traceparent = value.decode("latin-1")
        elif key == b"tracestate":
            tracestate = value.decode("latin-1")
    if traceparent is None:
        return _EMPTY  # a server span's parent comes from the headers, never the ambient context
    carrier = {"traceparent": traceparent}
    if tracestate is not None:
        carrier["tracestate"] = tracestate
    return _PROPAGATOR.extract(carrier)


def _route(scope: Scope, root_path: str) -> str | None:
    """The matched route template, including the paths of the mounts it sits under."""
    route = scope.get("route")
    if route is None:
        return None
    prefix = scope.get("root_path", "")
    if prefix.startswith(root_path):
        prefix = prefix[len(root_path) :]
    if isinstance(route, Mount):
        return prefix or "/"  # the mount path already is in root_path
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    if not isinstance(template, str):
        return None
    return (prefix.rstrip("/") + template) or "/"


def _finish_server_span(
    span: Span, scope: Scope, method: str, route: str | None, status: int, error: Exception | None
) -> None:
    attributes: dict[str, AttributeValue] = {
        "http.request.method": method,
        "url.path": scope["path"],
    }
    if route is not None:
        attributes["http.route"] = route
    if status:
        attributes["http.response.status_code"] = status
    identity = (scope.get("state") or {}).get("faas_identity")
    if identity is None and (ctx := current_context()) is not None:
        identity = ctx.identity
    if identity is not None:
        attributes["faas.tenant_id"] = identity.tenant_id
        if identity.user_id:
            attributes["faas.user_id"] = identity.user_id
    if error is not None:
        attributes["error.type"] = type(error).__qualname__
        span.record_exception(error)
    elif status >= 500:
        attributes["error.type"] = str(status)
    span.set_attributes(attributes)
    span.update_name(f"{method} {route or scope['path']}")
    if status >= 500 or error is not None:
        span.set_status(Status(StatusCode.ERROR))
