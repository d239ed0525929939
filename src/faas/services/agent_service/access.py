"""Who may use the agents and tools the Prompt Generator made.

A resource created with `origin=prompt_generator` has per-resource permissions (`admin ⊃ execute
⊃ read`) that the Prompt Generator service holds. The rules, after tenant scoping (another
tenant's resource is a 404 before any of this):

1. No origin: every caller of the tenant, as always.
2. Its creator (`created_by` is the caller's user id) or a caller with the `admin` scope:
   allowed, without asking anyone.
3. Anyone else: the generator is asked, one HTTP call for everything a request needs (an agent
   and its generated tools together). Denied → 403. Generator not deployed, unreachable or
   failing → 503 naming it: never allowed by default. Nothing is cached, so a revocation holds
   from the next request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from pydantic import ValidationError

from faas.kernel.clients import ServiceClients
from faas.services.agent_service.tools.base import Tool, ToolContext, ToolError
from faas.services.prompt_generator_service.client import PromptGeneratorClient
from faas.services.prompt_generator_service.models import (
    BulkCheckRequest,
    CheckItem,
    Kind,
    Permission,
)
from faas.shared.context import Identity
from faas.shared.exceptions import DependencyUnavailable, FaaSError, Forbidden

GENERATED = "prompt_generator"
GENERATOR = "prompt_generator"
T = TypeVar("T")


class Owned(Protocol):
    """What a row must say about itself for the rules: where it came from and who made it."""

    origin: str | None
    created_by: str | None


@dataclass(frozen=True)
class Use:
    kind: Kind
    resource_id: str
    permission: Permission


def sees_everything(identity: Identity) -> bool:
    return identity.has_scope("admin")


def needs_check(identity: Identity, resource: Owned) -> bool:
    return (
        resource.origin == GENERATED
        and not sees_everything(identity)
        and (identity.user_id is None or identity.user_id != resource.created_by)
    )


def forbidden(identity: Identity, use: Use) -> Forbidden:
    who = f"user {identity.user_id!r}" if identity.user_id else "a caller without a user id"
    return Forbidden(
        f"{who} has no {use.permission} permission on the generated {use.kind} "
        f"{use.resource_id!r}; its owner or an admin can grant it with "
        "POST /api/v1/prompt-generator/permissions",
        details={
            "resource_type": use.kind,
            "resource_id": use.resource_id,
            "permission": use.permission,
        },
    )


class RefusedTool:
    """A generated tool the running user may not execute: the model still sees it, but every
    call answers why (recorded in the run's steps) instead of running it."""

    def __init__(self, tool: Tool, reason: str) -> None:
        self.name = tool.name
        self.description = tool.description
        self.parameters = tool.parameters
        self.reason = reason

    async def run(self, args: dict[str, Any], ctx: ToolContext) -> Any:
        raise ToolError(self.reason)


class GeneratorPermissions:
    """Asks the Prompt Generator (through its client, so in-process under `faas up` and over
    HTTP with `--split`) as the caller, whose identity the client forwards."""

    def __init__(self, clients: ServiceClients) -> None:
        self._generator = PromptGeneratorClient(clients)

    async def denied(self, identity: Identity, uses: Sequence[tuple[Use, Owned]]) -> set[Use]:
        """The uses refused to this caller, with at most one call to the generator."""
        pending = [use for use, resource in uses if needs_check(identity, resource)]
        if not pending:
            return set()
        if identity.user_id is None:  # no user, no grants
            return set(pending)
        user_id = identity.user_id
        checks = [
            CheckItem(resource_type=u.kind, resource_id=u.resource_id, permission=u.permission)
            for u in pending
        ]
        answer = await _ask(
            lambda: self._generator.check_permissions(
                BulkCheckRequest(user_id=user_id, checks=checks)
            )
        )
        if len(answer.results) != len(pending):
            raise _unavailable("its permission check answered in an unexpected shape")
        return {u for u, r in zip(pending, answer.results, strict=True) if not r.allowed}

    async def require(self, identity: Identity, use: Use, resource: Owned) -> None:
        if await self.denied(identity, [(use, resource)]):
            raise forbidden(identity, use)

    async def accessible(self, identity: Identity, kind: Kind, permission: Permission) -> set[str]:
        """Ids of the generated resources of `kind` this caller holds `permission` on."""
        if identity.user_id is None:
            return set()
        user_id = identity.user_id
        answer = await _ask(lambda: self._generator.accessible(user_id, kind, permission))
        return set(answer.resource_ids)


async def _ask(question: Callable[[], Awaitable[T]]) -> T:
    """The generator's answer; any failure to get a readable one refuses access (503)."""
    try:
        return await question()
    except FaaSError as exc:
        raise _unavailable(exc.message) from exc
    except ValidationError as exc:
        raise _unavailable("it answered with an unreadable body") from exc


def _unavailable(reason: str) -> DependencyUnavailable:
    return DependencyUnavailable(
        "the permissions of generated agents and tools are held by the prompt_generator "
        f"service, which is unavailable ({reason}); access is refused until it answers",
        details={"service": GENERATOR},
    )
