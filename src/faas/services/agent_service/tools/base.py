"""The `Tool` protocol, the context a tool runs in, and `call_tool`: argument validation,
timeout and the capture of the errors the model should hear about.

Every tool acts for `ToolContext.identity` only: service calls carry that identity (`acting_as`)
and HTTP tools reach nothing but the hosts of `ToolContext.http_allowlist`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from jsonschema import exceptions as jsonschema_exceptions
from jsonschema.validators import Draft202012Validator, validator_for

from faas.kernel.clients import ServiceClients
from faas.shared.context import (
    Identity,
    RequestContext,
    current_context,
    new_id,
    reset_context,
    set_context,
)
from faas.shared.exceptions import FaaSError

MAX_ARGUMENTS_CHARS = 100_000
# Service answers the model should hear about (bad arguments, missing or foreign resources);
# 401, 429 and 5xx are the platform's problem and propagate to the agent runtime.
TOOL_ERROR_STATUSES = frozenset({400, 403, 404, 406, 409, 413, 415, 422})


@dataclass
class ToolContext:
    identity: Identity
    agent_id: str
    depth: int
    clients: ServiceClients
    call_agent: Callable[[str, str, int], Awaitable[str]]
    http_allowlist: Sequence[str]
    max_depth: int = 3
    timeout_s: float = 10.0
    max_response_bytes: int = 256 * 1024


class ToolError(Exception):
    """A tool failed in a way the model should hear about (fed back as the tool result)."""


class Tool(Protocol):
    name: str
    description: str
    parameters: dict[str, Any]

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> Any: ...


def openai_tool_spec(tool: Tool) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": tool.name,
            "description": tool.description,
            "parameters": tool.parameters,
        },
    }


def _validator(schema: dict[str, Any]) -> Any:
    cls = validator_for(schema, default=Draft202012Validator)
    return cls(schema)


async def call_tool(tool: Tool, arguments_json: str, ctx: ToolContext) -> tuple[Any, str | None]:
    """(result, None) or (None, message for the model). Raises only for platform failures
    (5xx, 401, 429 from services) and bugs."""
    if len(arguments_json) > MAX_ARGUMENTS_CHARS:
        return None, f"arguments longer than {MAX_ARGUMENTS_CHARS} characters"
    try:
        args = json.loads(arguments_json) if arguments_json.strip() else {}
    except json.JSONDecodeError as exc:
        return None, f"arguments are not valid JSON: {exc}"
    if not isinstance(args, dict):
        return None, "arguments must be a JSON object"
    error = jsonschema_exceptions.best_match(_validator(tool.parameters).iter_errors(args))
    if error is not None:
        return None, f"invalid arguments at {error.json_path}: {error.message}"
    try:
        async with asyncio.timeout(ctx.timeout_s):
            result = await tool.run(args, ctx)
    except ToolError as exc:
        return None, str(exc) or type(exc).__name__
    except TimeoutError:
        return None, f"{tool.name} timed out after {ctx.timeout_s:g} s"
    except FaaSError as exc:
        if exc.status_code in TOOL_ERROR_STATUSES:
            return None, exc.message
        raise
    return result, None


@contextmanager
def acting_as(identity: Identity) -> Iterator[None]:
    """Service calls forward the request context's identity: make it the tool's."""
    current = current_context()
    if current is not None and current.identity == identity:
        yield
        return
    if current is not None:
        replaced = current.with_identity(identity)
    else:
        replaced = RequestContext(correlation_id=new_id(), request_id=new_id(), identity=identity)
    token = set_context(replaced)
    try:
        yield
    finally:
        reset_context(token)
