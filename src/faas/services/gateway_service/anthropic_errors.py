"""Anthropic's error shape for `/v1/messages` (its SDK picks the exception class by status and
reads `error.type` and `error.message`): `{"type": "error", "error": {"type", "message"}}`."""

from __future__ import annotations

import orjson
from starlette.types import Scope

from faas.shared.exceptions import FaaSError

ANTHROPIC_PREFIX = "/v1/messages"
_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def anthropic_error_type(status: int) -> str:
    if status in _TYPES:
        return _TYPES[status]
    return "api_error" if status >= 500 else "invalid_request_error"


def anthropic_error_body(status: int, message: str) -> dict[str, object]:
    return {"type": "error", "error": {"type": anthropic_error_type(status), "message": message}}


def anthropic_error_renderer(scope: Scope, exc: FaaSError) -> tuple[bytes, str]:
    return orjson.dumps(anthropic_error_body(exc.status_code, exc.message)), "application/json"
