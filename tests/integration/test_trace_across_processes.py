"""One trace across processes: HTTP request → service client call → NATS job submit →
consumer in a separate `faas worker` process → job span, with correct parent/child links.

The test process records its spans in memory; the worker exports over real OTLP/HTTP to a small
collector run by the test."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from faas.app import create_service_app
from faas.integrations.otel import setup_telemetry
from faas.runtime import Runtime
from faas.services.cache_service.service import CacheService
from faas.shared.api import caller, respond
from faas.shared.config import Settings
from tests.conftest import TEST_SECRET, auth, drop_streams

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class SpanRecord:
    name: str
    trace_id: str
    span_id: str
    parent_id: str | None
    service: str


class _Collector(BaseHTTPRequestHandler):
    spans: list[SpanRecord]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            service = next(
                (
                    a.value.string_value
                    for a in resource_spans.resource.attributes
                    if a.key == "service.name"
                ),
                "",
            )
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.spans.append(
                        SpanRecord(
                            span.name,
                            span.trace_id.hex(),
                            span.span_id.hex(),
                            span.parent_span_id.hex() or None,
                            service,
                        )
                    )
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()
        self.wfile.write(trace_service_pb2.ExportTraceServiceResponse().SerializeToString())

    def log_message(self, *args: Any) -> None:
        return


@pytest.fixture
def collector() -> Iterator[tuple[str, list[SpanRecord]]]:
    spans: list[SpanRecord] = []
    server = HTTPServer(("127.0.0.1", 0), type("Collector", (_Collector,), {"spans": spans}))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", spans
    server.shutdown()
    server.server_close()


def local_records(exporter: InMemorySpanExporter) -> list[SpanRecord]:
    records = []
    for span in exporter.get_finished_spans():
        ctx = span.get_span_context()
        assert ctx is not None
        records.append(
            SpanRecord(
                span.name,
                format(ctx.trace_id, "032x"),
                format(ctx.span_id, "016x"),
                format(span.parent.span_id, "016x") if span.parent else None,
                "faas-test",
            )
        )
    return records


def build_app(settings: Settings, exporter: InMemorySpanExporter) -> tuple[FastAPI, Runtime]:
    telemetry = setup_telemetry("faas-test", span_exporter=exporter, set_global=False)
    runtime = Runtime.build(settings, telemetry=telemetry)
    runtime.load_job_modules()
    app = create_service_app([CacheService(settings, runtime.kv, runtime.events)], runtime)

    @app.post("/test/chain")
    async def chain() -> Any:
        identity = caller()
        cache = runtime.clients.get("cache")
        stored = await cache.post("/api/v1/cache", json={"key": "traced", "value": 1})
        assert stored.status_code == 201, stored.text
        view = await runtime.jobs.submit(identity, "testjobs.echo", {"n": 1})
        return respond({"job_id": view.job_id})

    return app, runtime


async def test_one_trace_spans_http_client_nats_and_a_job_in_another_process(
    tmp_path: Path, nats_url: str, collector: tuple[str, list[SpanRecord]]
) -> None:
    endpoint, remote = collector
    prefix = f"t{uuid.uuid4().hex[:8]}"
    database = f"sqlite+aiosqlite:///{tmp_path / 'faas.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FAAS_", "OTEL_"))}
    env |= {
        "FAAS_DATA_DIR": str(tmp_path / "data"),
        "FAAS_DATABASE_URL": database,
        "FAAS_NATS_URL": nats_url,
        "FAAS_NATS_PREFIX": prefix,
        "FAAS_JOB_MODULES": "tests.jobkinds",
        "FAAS_SERVICES": "",
        "FAAS_JWT_SECRET": TEST_SECRET,
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_SERVICE_NAME": "faas-worker",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=database,
        nats_url=nats_url,
        nats_prefix=prefix,
        job_modules=["tests.jobkinds"],
        run_worker=False,
        jwt_secret=TEST_SECRET,
        log_requests=False,
    )
    exporter = InMemorySpanExporter()
    app, runtime = build_app(settings, exporter)
    worker = subprocess.Popen(
        [sys.executable, "-m", "faas", "worker", "--kinds", "testjobs.echo"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                response = await client.post("/test/chain", headers=auth("acme"))
                assert response.status_code == 200, response.text
                job_id = response.json()["data"]["job_id"]
                for _ in range(300):
                    job = await runtime.jobs.get("acme", job_id)
                    if job.status == "succeeded":
                        break
                    await asyncio.sleep(0.05)
                assert job.status == "succeeded"
                await drop_streams(runtime.bus)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=20)

    deadline = time.monotonic() + 5
    while not any(s.name.startswith("job ") for s in remote) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)

    local = local_records(exporter)
    by_name = {s.name: s for s in local + remote}
    server = by_name["POST /test/chain"]
    client_span = next(s for s in local if s.name.startswith("POST cache"))
    cache_server = by_name["POST /api/v1/cache"]
    producer = next(s for s in local if s.name.startswith("publish ") and "jobs." in s.name)
    consumer = next(s for s in remote if s.name.startswith("process ") and "jobs." in s.name)
    job = next(s for s in remote if s.name == "job testjobs.echo")

    trace_ids = {s.trace_id for s in (server, client_span, cache_server, producer, consumer, job)}
    assert trace_ids == {server.trace_id}
    assert client_span.parent_id == server.span_id
    assert cache_server.parent_id == client_span.span_id
    assert producer.parent_id == server.span_id
    assert consumer.parent_id == producer.span_id
    assert job.parent_id == consumer.span_id
    assert {consumer.service, job.service} == {"faas-worker"}
