"""OpenAI's error shape for the OpenAI-compatible routes under /v1/ (its clients parse it)."""

from __future__ import annotations

import orjson
from starlette.types import Scope

from faas.shared.exceptions import FaaSError

OPENAI_PREFIX = "/v1/"
_OPENAI_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    429: "rate_limit_error",
}


def openai_error_body(exc: FaaSError) -> dict[str, object]:
    """OpenAI's error shape, for the OpenAI-compatible routes (its clients parse it)."""
    if exc.status_code >= 500:
        kind = "api_error"
    else:
        kind = _OPENAI_TYPES.get(exc.status_code, "invalid_request_error")
    return {
        "error": {
            "message": exc.message,
            "type": kind,
            "param": exc.details.get("param"),
            "code": exc.code,
        }
    }


def openai_error_renderer(scope: Scope, exc: FaaSError) -> tuple[bytes, str]:
    return orjson.dumps(openai_error_body(exc)), "application/json"
