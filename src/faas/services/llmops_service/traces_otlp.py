"""OTLP/HTTP trace payloads (`ExportTraceServiceRequest`, protobuf or JSON) as span rows.

A span's tenant is the sender's; only a platform identity may name another one, with a
`faas.tenant_id` (or `faas.tenant`) span or resource attribute — so no tenant can write into
another's traces. Model-call spans (CLIENT spans carrying `gen_ai.usage.*`) carry the tokens
and cost a trace sums; agent spans repeat their calls' tokens and are not summed again."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any, Final

import orjson
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from faas.shared.exceptions import UnsupportedMediaType, ValidationFailed

MAX_SPANS: Final = 10_000  # a request; OTel SDKs batch 512 by default
MAX_ATTRIBUTE_CHARS: Final = 8 * 1024
MAX_EVENTS: Final = 64
LATEST_NS: Final = 7_258_118_400 * 10**9  # 2200-01-01
TENANT_KEYS: Final = ("faas.tenant_id", "faas.tenant")
SESSION_KEYS: Final = ("faas.session_id", "gen_ai.conversation.id", "session.id")
KINDS: Final = ("unspecified", "internal", "server", "client", "producer", "consumer")
_ID_FIELDS: Final = ("traceId", "spanId", "parentSpanId")


def parse_request(body: bytes, content_type: str) -> trace_service_pb2.ExportTraceServiceRequest:
    """The request in `body`; 415 for another media type, 422 for one that does not decode."""
    media = content_type.split(";", 1)[0].strip().lower()
    request = trace_service_pb2.ExportTraceServiceRequest()
    try:
        if media == "application/x-protobuf":
            request.ParseFromString(body)
        elif media == "application/json":
            payload = orjson.loads(body)
            if not isinstance(payload, dict):
                raise ValidationFailed("an OTLP/JSON body is an object")
            json_format.ParseDict(_hex_ids_as_base64(payload), request)
        else:
            raise UnsupportedMediaType(
                "send OTLP as application/x-protobuf or application/json",
                details={"content_type": content_type[:100]},
            )
    except (DecodeError, json_format.ParseError, ValueError, TypeError, AttributeError) as exc:
        raise ValidationFailed(f"not an OTLP ExportTraceServiceRequest: {exc}"[:300]) from None
    return request


def _hex_ids_as_base64(payload: Any) -> Any:
    """OTLP/JSON writes ids as hex; the protobuf JSON mapping reads bytes as base64."""
    if isinstance(payload, dict):
        out = {}
        for key, value in payload.items():
            if key in _ID_FIELDS and isinstance(value, str):
                value = base64.b64encode(bytes.fromhex(value)).decode()
            out[key] = _hex_ids_as_base64(value)
        return out
    if isinstance(payload, list):
        return [_hex_ids_as_base64(v) for v in payload]
    return payload


def value_of(value: common_pb2.AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [value_of(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: value_of(kv.value) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return value.bytes_value.hex()
    found = getattr(value, kind)
    if isinstance(found, str) and len(found) > MAX_ATTRIBUTE_CHARS:
        return found[:MAX_ATTRIBUTE_CHARS]
    return found


def attributes_of(items: Any) -> dict[str, Any]:
    return {kv.key: value_of(kv.value) for kv in items}


def span_rows(
    request: trace_service_pb2.ExportTraceServiceRequest, sender_tenant: str, platform: bool
) -> list[dict[str, Any]]:
    """One row per span; every tenant is `sender_tenant` unless the sender is `platform`."""
    rows: list[dict[str, Any]] = []
    for resource_spans in request.resource_spans:
        resource = attributes_of(resource_spans.resource.attributes)
        service = str(resource.get("service.name") or "")[:128]
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                if len(rows) >= MAX_SPANS:
                    raise ValidationFailed(f"send at most {MAX_SPANS} spans a request")
                attributes = attributes_of(span.attributes)
                tenant = sender_tenant
                if platform:
                    named = _first(attributes, TENANT_KEYS) or _first(resource, TENANT_KEYS)
                    tenant = str(named or sender_tenant)[:64]
                rows.append(_row(span, attributes, service, tenant))
    return rows


def _row(
    span: trace_pb2.Span, attributes: dict[str, Any], service: str, tenant: str
) -> dict[str, Any]:
    if len(span.trace_id) != 16 or len(span.span_id) != 8:
        raise ValidationFailed("a span needs a 16-byte trace id and an 8-byte span id")
    start = span.start_time_unix_nano
    end = max(span.end_time_unix_nano, start)
    if end > LATEST_NS:
        raise ValidationFailed("a span's times are Unix nanoseconds before the year 2200")
    model_call = span.kind == trace_pb2.Span.SPAN_KIND_CLIENT and (
        "gen_ai.usage.input_tokens" in attributes or "faas.api" in attributes
    )
    session = _first(attributes, SESSION_KEYS)
    return {
        "tenant_id": tenant,
        "trace_id": span.trace_id.hex(),
        "span_id": span.span_id.hex(),
        "parent_id": span.parent_span_id.hex() or None,
        "name": span.name[:256],
        "kind": KINDS[span.kind] if 0 <= span.kind < len(KINDS) else "unspecified",
        "service": service,
        "started_at": datetime.fromtimestamp(start / 1e9, UTC),
        "duration_ms": round((end - start) / 1e6, 3),
        "status": "error" if span.status.code == trace_pb2.Status.STATUS_CODE_ERROR else "ok",
        "session_id": str(session)[:128] if session is not None else None,
        "model": _short(attributes.get("gen_ai.request.model")),
        "input_tokens": _int(attributes.get("gen_ai.usage.input_tokens")) if model_call else 0,
        "output_tokens": _int(attributes.get("gen_ai.usage.output_tokens")) if model_call else 0,
        "cost_usd": _float(attributes.get("faas.cost_usd")) if model_call else 0.0,
        "attributes": attributes,
        "events": [
            {
                "name": event.name[:256],
                "time_unix_nano": event.time_unix_nano,
                "attributes": attributes_of(event.attributes),
            }
            for event in span.events[:MAX_EVENTS]
        ],
    }


def _first(attributes: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        if attributes.get(key) not in (None, ""):
            return attributes[key]
    return None


def _short(value: Any) -> str | None:
    return str(value)[:128] if value is not None else None


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _float(value: Any) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and value >= 0
    return float(value) if ok and value < 1e12 else 0.0
