"""Wire contracts shared by every service: headers, envelopes, pages."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")

TENANT_HEADER = "x-tenant-id"
USER_HEADER = "x-user-id"
CORRELATION_HEADER = "x-correlation-id"
REQUEST_HEADER = "x-request-id"


def utcnow() -> datetime:
    return datetime.now(UTC)


class StandardHeaders(BaseModel):
    """The identity and tracing headers every request and message carries."""

    model_config = ConfigDict(frozen=True)

    tenant_id: str | None = None
    user_id: str | None = None
    correlation_id: str | None = None
    request_id: str | None = None
    traceparent: str | None = None

    def as_http(self) -> dict[str, str]:
        pairs = {
            "X-Tenant-ID": self.tenant_id,
            "X-User-ID": self.user_id,
            "X-Correlation-ID": self.correlation_id,
            "X-Request-ID": self.request_id,
            "traceparent": self.traceparent,
        }
        return {k: v for k, v in pairs.items() if v}


class ServiceRequest(BaseModel, Generic[T]):
    """A request envelope for callers that send identity in the body (NATS request/reply)."""

    headers: StandardHeaders = Field(default_factory=StandardHeaders)
    data: T


class ServiceResponse(BaseModel, Generic[T]):
    success: bool = True
    data: T
    message: str | None = None
    correlation_id: str | None = None
    request_id: str | None = None
    timestamp: datetime = Field(default_factory=utcnow)
    metadata: dict[str, Any] = Field(default_factory=dict)


class ErrorBody(BaseModel):
    code: str
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


class ErrorResponse(BaseModel):
    success: bool = False
    error: ErrorBody
    correlation_id: str | None = None
    request_id: str | None = None
    timestamp: datetime = Field(default_factory=utcnow)


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int
