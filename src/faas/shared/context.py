"""The request context: who is calling and which ids to carry, held in a contextvar."""

from __future__ import annotations

import os
from contextvars import ContextVar
from dataclasses import dataclass, field, replace


def new_id() -> str:
    """128 random bits as 32 hex characters (the shape of a uuid4 hex, at a fifth of the cost)."""
    return os.urandom(16).hex()


@dataclass(frozen=True, slots=True)
class Identity:
    tenant_id: str
    user_id: str | None = None
    scopes: frozenset[str] = field(default_factory=frozenset)
    token: str | None = None

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


@dataclass(frozen=True, slots=True)
class RequestContext:
    correlation_id: str
    request_id: str
    identity: Identity | None = None
    traceparent: str | None = None

    @property
    def tenant_id(self) -> str | None:
        return self.identity.tenant_id if self.identity else None

    @property
    def user_id(self) -> str | None:
        return self.identity.user_id if self.identity else None

    def with_identity(self, identity: Identity) -> RequestContext:
        return replace(self, identity=identity)


_current: ContextVar[RequestContext | None] = ContextVar("faas_request_context", default=None)


def current_context() -> RequestContext | None:
    return _current.get()


def set_context(ctx: RequestContext | None) -> object:
    return _current.set(ctx)


def reset_context(token: object) -> None:
    _current.reset(token)  # type: ignore[arg-type]
