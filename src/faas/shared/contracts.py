"""Wire contracts shared by every service: the response envelopes and pages."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, Field

from faas.shared.clock import utcnow

T = TypeVar("T")


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
