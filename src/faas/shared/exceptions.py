"""The one error tree of the platform.

FaaSError                      500 internal_error
├── BadRequest                 400 bad_request
│   └── UndecodableBody        400 undecodable_body
├── Unauthenticated            401 unauthenticated
├── Forbidden                  403 forbidden
├── NotFound                   404 not_found
├── NotAcceptable              406 not_acceptable
├── Conflict                   409 conflict
├── PayloadTooLarge            413 payload_too_large
├── UnsupportedMediaType       415 unsupported_media_type
├── ValidationFailed           422 validation_failed
├── RateLimited                429 rate_limited (Retry-After)
├── UpstreamError              502 upstream_error
├── DependencyUnavailable      503 dependency_unavailable
└── UpstreamTimeout            504 upstream_timeout

Every class carries its HTTP status and a stable machine-readable `code`; the middleware renders
any of them as an `ErrorResponse`.
"""

from __future__ import annotations

from typing import Any


class FaaSError(Exception):
    status_code: int = 500
    code: str = "internal_error"

    def __init__(
        self,
        message: str | None = None,
        *,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.message = message or self.default_message()
        self.details = details or {}
        self.headers = headers or {}
        super().__init__(self.message)

    @classmethod
    def default_message(cls) -> str:
        return cls.code.replace("_", " ").capitalize()

    def __reduce__(self) -> tuple[Any, ...]:
        # Errors cross process boundaries (work in faas.shared.cpu's pool): the default
        # pickling re-calls __init__ with the message alone and loses details and headers.
        return (_rebuild, (type(self), self.__dict__.copy()))


def _rebuild(cls: type[FaaSError], state: dict[str, Any]) -> FaaSError:
    error = cls.__new__(cls)
    Exception.__init__(error, state.get("message"))
    error.__dict__.update(state)
    return error


class BadRequest(FaaSError):
    status_code = 400
    code = "bad_request"


class UndecodableBody(BadRequest):
    code = "undecodable_body"


class Unauthenticated(FaaSError):
    status_code = 401
    code = "unauthenticated"

    def __init__(self, message: str | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.headers.setdefault("WWW-Authenticate", "Bearer")


class Forbidden(FaaSError):
    status_code = 403
    code = "forbidden"


class NotFound(FaaSError):
    status_code = 404
    code = "not_found"


class NotAcceptable(FaaSError):
    status_code = 406
    code = "not_acceptable"


class Conflict(FaaSError):
    status_code = 409
    code = "conflict"


class PayloadTooLarge(FaaSError):
    status_code = 413
    code = "payload_too_large"


class UnsupportedMediaType(FaaSError):
    status_code = 415
    code = "unsupported_media_type"


class ValidationFailed(FaaSError):
    status_code = 422
    code = "validation_failed"


class RateLimited(FaaSError):
    status_code = 429
    code = "rate_limited"

    def __init__(
        self, message: str | None = None, *, retry_after_s: float = 1.0, **kwargs: Any
    ) -> None:
        super().__init__(message, **kwargs)
        self.retry_after_s = retry_after_s
        self.headers["Retry-After"] = str(max(1, round(retry_after_s + 0.499)))


class UpstreamError(FaaSError):
    status_code = 502
    code = "upstream_error"


class DependencyUnavailable(FaaSError):
    status_code = 503
    code = "dependency_unavailable"


class UpstreamTimeout(FaaSError):
    status_code = 504
    code = "upstream_timeout"


ERRORS_BY_STATUS: dict[int, type[FaaSError]] = {
    cls.status_code: cls
    for cls in (
        BadRequest,
        Unauthenticated,
        Forbidden,
        NotFound,
        NotAcceptable,
        Conflict,
        PayloadTooLarge,
        UnsupportedMediaType,
        ValidationFailed,
        RateLimited,
        UpstreamError,
        DependencyUnavailable,
        UpstreamTimeout,
    )
}


def error_for_status(status: int) -> type[FaaSError]:
    """The error class that best describes an HTTP status (used to map upstream answers)."""
    return ERRORS_BY_STATUS.get(status, BadRequest if 400 <= status < 500 else FaaSError)
