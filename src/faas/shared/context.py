"""The request context: who is calling and which ids to carry, held in a contextvar."""

from __future__ import annotations

import os
import random
from contextvars import ContextVar
from dataclasses import dataclass, field, replace


def new_id() -> str:
    """128 random bits as 32 hex characters (the shape of a uuid4 hex, at a fifth of the cost)."""
    return os.urandom(16).hex()


_trace_ids = random.Random(os.urandom(32))
os.register_at_fork(after_in_child=lambda: _trace_ids.seed(os.urandom(32)))


def trace_id() -> str:
    """An id for tracing a request or an event (request, correlation and event ids): 32 hex
    characters, unique but not unpredictable — a seeded generator instead of a system call
    each time (0.3 against 2.5 us; four per gateway call). Never for anything that must not be
    guessed; that is `new_id` (or `secrets`)."""
    return f"{_trace_ids.getrandbits(128):032x}"


ADMIN = "admin"
PLATFORM_ADMIN = "platform:admin"
PLATFORM_PREFIX = "platform:"

# The headers that carry the context across HTTP and the bus. HTTP compares header names
# case-insensitively, bus message headers do not: receivers look up these spellings.
TENANT_HEADER = "X-Tenant-ID"
USER_HEADER = "X-User-ID"
CORRELATION_HEADER = "X-Correlation-ID"
REQUEST_HEADER = "X-Request-ID"

# An ASGI scope key set on requests one service makes to another inside this process (see
# `ServiceClient`); no network peer can set a scope key.
IN_PROCESS = "faas.in_process"


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is calling. `admin` holds every scope inside its own tenant; only `platform:admin`
    (minted by `faas token --platform-admin`) may name another tenant, and it holds every scope.

    A caller authenticated by an API key (`fk-…`) also carries the key's id and name, its team,
    the models it may call (`models`; None is every model) and the key's own caps (`key_rpm`,
    `key_tpm`, `key_budget_usd` a month; None is unlimited). A JWT may name a `team` too."""

    tenant_id: str
    user_id: str | None = None
    scopes: frozenset[str] = field(default_factory=frozenset)
    token: str | None = None
    key_id: str | None = None
    key_name: str | None = None
    team: str | None = None
    models: frozenset[str] | None = None
    key_rpm: int | None = None
    key_tpm: int | None = None
    key_budget_usd: float | None = None

    def has_scope(self, scope: str) -> bool:
        if scope in self.scopes or PLATFORM_ADMIN in self.scopes:
            return True
        return ADMIN in self.scopes and not scope.startswith(PLATFORM_PREFIX)

    def may_act_for(self, tenant_id: str) -> bool:
        return tenant_id == self.tenant_id or self.has_scope(PLATFORM_ADMIN)


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
