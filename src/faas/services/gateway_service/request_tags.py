"""Spend attribution tags of one request: the `x-faas-tags` header (`team=search,env=prod` or
plain tags `batch,nightly`) and the body's `metadata` (OpenAI's string map, Anthropic's
`user_id`), carried into the call's usage event. Held in a context variable that the gateway's
routes set at the start of every request, so no call path has to pass them along."""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from starlette.types import Scope

from faas.services.gateway_service import agent_run
from faas.shared.exceptions import BadRequest
from faas.shared.middleware import scope_header

MAX_TAGS = 16  # per source (header, metadata): OpenAI's own bounds on metadata
MAX_KEY = 64
MAX_VALUE = 512
HEADER = "x-faas-tags"
_HEADER = HEADER.encode()  # as the ASGI scope holds header names
_AGENT_RUN = agent_run.HEADER.lower().encode()

_tags: ContextVar[dict[str, str] | None] = ContextVar("faas_gateway_tags", default=None)


def current_tags() -> dict[str, str]:
    return _tags.get() or {}


def begin_request(scope: Scope, body: Any = None) -> None:
    """Start the attribution of a gateway request from its ASGI scope: its tags (the header,
    then `body`'s `metadata`) and the agent run it belongs to (`agent_run`). Every gateway route
    that makes a call starts here; the headers are read from the scope (a fifth of a lookup in
    Starlette's `request.headers`)."""
    begin(scope_header(scope, _HEADER), body)
    agent_run.begin(scope_header(scope, _AGENT_RUN))


def begin(header: str | None, body: Any = None) -> None:
    """Start a request's tags: its `x-faas-tags` header, then the `metadata` of its JSON body
    (None of both clears them: every request starts afresh)."""
    _tags.set(parse_header(header) if header else None)
    if isinstance(body, dict):
        add_metadata(body.get("metadata"))


def add_metadata(metadata: Any) -> None:
    """Merge a body's `metadata` map into the request's tags (the header wins a clash)."""
    if metadata is None:
        return
    if not isinstance(metadata, dict):
        raise BadRequest("metadata must be an object of strings", details={"param": "metadata"})
    found: dict[str, str] = {}
    for key, value in metadata.items():
        if value is None:  # Anthropic's `user_id: null`: no tag
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, int | float):
            value = str(value)
        if not isinstance(value, str):
            raise BadRequest(
                f"metadata[{str(key)[:MAX_KEY]!r}] must be a string, number or boolean",
                details={"param": "metadata"},
            )
        found[str(key)] = value
    _tags.set({**_bounded(found, "metadata"), **current_tags()})


def parse_header(value: str) -> dict[str, str]:
    """`k=v,k2=v2` pairs or plain tags (a plain tag's value is empty)."""
    found: dict[str, str] = {}
    for part in value.split(","):
        key, _, tag_value = part.partition("=")
        key = key.strip()
        if not key:
            if part.strip():
                raise BadRequest(f"{HEADER}: a tag needs a name", details={"header": HEADER})
            continue
        found[key] = tag_value.strip()
    return _bounded(found, HEADER)


def _bounded(tags: dict[str, str], where: str) -> dict[str, str]:
    if len(tags) > MAX_TAGS:
        raise BadRequest(f"{where}: at most {MAX_TAGS} tags", details={"param": where})
    for key, value in tags.items():
        if len(key) > MAX_KEY or len(value) > MAX_VALUE or not key.isprintable():
            raise BadRequest(
                f"{where}: a tag name is at most {MAX_KEY} printable characters and a value "
                f"at most {MAX_VALUE}",
                details={"param": where},
            )
    return tags


def label(key: str, value: str) -> str:
    """How a tag is shown and grouped: `key=value`, or `key` for a plain tag."""
    return f"{key}={value}" if value else key
