"""Builds a cache-service app for API tests (a factory, so every test gets its own)."""

from __future__ import annotations

from fastapi import FastAPI
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from faas.app import create_service_app
from faas.integrations.otel import setup_telemetry
from faas.runtime import Runtime
from faas.services.cache_service.service import CacheService
from faas.shared.config import Settings


def build_cache_app(settings: Settings, exporter: InMemorySpanExporter | None = None) -> FastAPI:
    telemetry = setup_telemetry(
        "faas-test", span_exporter=exporter or InMemorySpanExporter(), set_global=False
    )
    runtime = Runtime.build(settings, telemetry=telemetry)
    service = CacheService(settings, runtime.kv, runtime.events)
    return create_service_app([service], runtime)
