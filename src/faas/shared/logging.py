"""Structured JSON-line logging with request ids, tenant and trace ids from the context."""

from __future__ import annotations

import asyncio
import logging
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

from faas.shared.clock import utcnow
from faas.shared.context import current_context

_RESERVED = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message"}


def _trace_ids() -> tuple[str | None, str | None]:
    try:
        from opentelemetry import trace
    except ImportError:  # pragma: no cover - opentelemetry is a core dependency
        return None, None
    span_ctx = trace.get_current_span().get_span_context()
    if not span_ctx.is_valid:
        return None, None
    return format(span_ctx.trace_id, "032x"), format(span_ctx.span_id, "016x")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        ctx = current_context()
        if ctx is not None:
            line["correlation_id"] = ctx.correlation_id
            line["request_id"] = ctx.request_id
            if ctx.tenant_id:
                line["tenant_id"] = ctx.tenant_id
        trace_id, span_id = _trace_ids()
        if trace_id:
            line["trace_id"] = trace_id
            line["span_id"] = span_id
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def configure_logging(level: str = "INFO") -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_faas", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler._faas = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class RequestLog:
    """The one-line-per-request log, kept off the hot path's slow parts: the line is built
    directly (no LogRecord, no formatter) and written through a buffer that is flushed within
    `flush_after_s` of the first unflushed line (or when it holds 64 KiB), instead of a write
    system call per request. Honours the level of the `faas.request` logger."""

    def __init__(self, stream: Any = None, *, flush_after_s: float = 0.25) -> None:
        self._stream = stream
        self._lines: list[bytes] = []
        self._size = 0
        self._flush_after_s = flush_after_s
        self._scheduled = False
        self._logger = logging.getLogger("faas.request")

    def enabled(self) -> bool:
        return self._logger.isEnabledFor(logging.INFO)

    def write(self, fields: dict[str, Any]) -> None:
        line: dict[str, Any] = {
            "ts": utcnow().isoformat(timespec="milliseconds"),
            "level": "info",
            "logger": "faas.request",
            "msg": "request",
        }
        ctx = current_context()
        if ctx is not None:
            line["correlation_id"] = ctx.correlation_id
            line["request_id"] = ctx.request_id
        trace_id, span_id = _trace_ids()
        if trace_id:
            line["trace_id"] = trace_id
            line["span_id"] = span_id
        line.update(fields)
        data = orjson.dumps(line, default=str, option=orjson.OPT_APPEND_NEWLINE)
        self._lines.append(data)
        self._size += len(data)
        if self._size >= 65536:
            self.flush()
        elif not self._scheduled:
            self._schedule()

    def _schedule(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        self._scheduled = True
        loop.call_later(self._flush_after_s, self.flush)

    def flush(self) -> None:
        self._scheduled = False
        if not self._lines:
            return
        data = b"".join(self._lines)
        self._lines.clear()
        self._size = 0
        stream = self._stream or sys.stderr
        target = getattr(stream, "buffer", None)
        if target is not None:
            stream.flush()
            target.write(data)
            target.flush()
        else:
            stream.write(data.decode())
            stream.flush()
