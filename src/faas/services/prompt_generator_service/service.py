"""Prompt generator use cases: a natural-language prompt → a validated agent spec, or a tool
spec (a declarative HTTP call or an arithmetic expression), through the gateway (JSON mode, one
repair round), created through the Agent service API and marked as generated there; ratings
and feedback per generated resource; per-resource permissions, which the Agent service enforces
by asking the check endpoints here."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import orjson
from fastapi import APIRouter
from jsonschema.validators import Draft202012Validator
from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from faas.services.agent_service.calculator import CONSTANTS, FUNCTIONS
from faas.services.agent_service.models import AgentSpec
from faas.services.agent_service.tenant_tools import TOOL_SPECS, ExpressionToolSpec
from faas.services.agent_service.tools import HttpToolSpec
from faas.services.prompt_generator_service.models import (
    AGENT_SPEC_SCHEMA,
    EXPRESSION_TOOL_SCHEMA,
    HTTP_TOOL_SCHEMA,
    LEVELS,
    TOOL_SCHEMAS,
    Accessible,
    BulkCheck,
    CheckItem,
    CheckResult,
    FeedbackItem,
    FeedbackStats,
    GeneratedAgent,
    GeneratedTool,
    Kind,
    Permission,
    PermissionChange,
    PermissionCheck,
    PermissionList,
    PermissionView,
    RateRequest,
)
from faas.services.prompt_generator_service.tables import (
    FeedbackRow,
    GenerationRow,
    PermissionRow,
)
from faas.shared.context import Identity, new_id
from faas.shared.database import Database, TenantRepository
from faas.shared.exceptions import Forbidden, NotFound, ValidationFailed
from faas.shared.http_client import raise_for_error

if TYPE_CHECKING:
    from faas.runtime import ServiceClients

log = logging.getLogger("faas.prompt_generator")

DEFAULT_MODEL = "chat-default"
MAX_TOKENS = 2048
MAX_ERRORS = 20
RECENT_FEEDBACK = 10
# Marks what the Agent service creates for us: its access then follows our permissions.
GENERATED = {"origin": "prompt_generator"}

AGENT_INSTRUCTIONS = """You design AI agents for a platform. Answer with ONE JSON object only \
(no prose, no code fences) that is valid against this JSON Schema:
{schema}
Rules: `tools` may only name tools from this list of registered tools (name: description):
{tools}
Choose only the tools the agent really needs. `system_prompt` tells the agent its role, \
how to use its tools and how to answer."""

TOOL_INSTRUCTIONS = """You design tools for AI agents. Answer with ONE JSON object only (no \
prose, no code fences), of one of two kinds.

"kind": "http" when the tool calls one HTTP API. Valid against this JSON Schema:
{http_schema}
Rules: `url_template` is an absolute http(s) URL; `{{param}}` placeholders may appear in the \
path, query and header values (never in the host) and each must be a required property of \
`parameters`, which is a JSON Schema of "type": "object". For POST and PUT the other arguments \
are the JSON body. Never put secrets or credentials in the URL.

"kind": "expression" when the tool computes a number from numbers with one formula. Valid \
against this JSON Schema:
{expression_schema}
Rules: `expression` is arithmetic only: numbers, the parameter names, + - * / // % ** and \
parentheses, the functions {functions} and the constants {constants}. No other names, no \
attribute access, no strings, no code. Every name it uses is a required property of \
`parameters` with "type": "number" or "integer".

Do not use the name of an existing tool: {existing}."""

REPAIR_INSTRUCTIONS = """Your answer was not valid. Problems:
{errors}
Answer again with ONE corrected JSON object only."""


def _now() -> datetime:
    return datetime.now(UTC)


def _schema_errors(schema: dict[str, Any], value: Any) -> list[str]:
    validator = Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
    return [f"{e.json_path}: {e.message}" for e in errors][:MAX_ERRORS]


def _pydantic_errors(exc: ValidationError) -> list[str]:
    out = []
    for error in exc.errors()[:MAX_ERRORS]:
        where = ".".join(str(p) for p in error["loc"])
        out.append(f"$.{where}: {error['msg']}" if where else f"$: {error['msg']}")
    return out


class PromptGeneratorService:
    name = "prompt_generator"

    def __init__(
        self, *, db: Database, clients: ServiceClients, default_model: str = DEFAULT_MODEL
    ) -> None:
        self.db = db
        self.clients = clients
        self.default_model = default_model

    def router(self) -> APIRouter:
        from faas.services.prompt_generator_service.routes import build_router

        return build_router(self)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    # -- calls to other services ---------------------------------------------------------------

    async def _chat(self, model: str, messages: list[dict[str, Any]]) -> str:
        body = {
            "model": model,
            "messages": messages,
            "temperature": 0,
            "max_tokens": MAX_TOKENS,
            "response_format": {"type": "json_object"},
            # a regeneration must not replay a cached (possibly rejected) answer
            "cache": {"exact": False, "semantic": False},
        }
        response = await self.clients.get("gateway").post("/v1/chat/completions", json=body)
        raise_for_error(response, "gateway")
        data = response.json()
        content = data["choices"][0]["message"].get("content") or ""
        return str(content)

    async def registered_tools(self) -> list[dict[str, Any]]:
        response = await self.clients.get("agent").get("/api/v1/agents/tools")
        raise_for_error(response, "agent")
        return list(response.json().get("data") or [])

    async def _agent_exists(self, agent_id: str) -> bool:
        response = await self.clients.get("agent").get(f"/api/v1/agents/{quote(agent_id, safe='')}")
        if response.status_code == 404:
            return False
        raise_for_error(response, "agent")
        return True

    # -- generation ----------------------------------------------------------------------------

    async def _generate(
        self,
        model: str,
        system: str,
        prompt: str,
        check: Any,
        what: str,
    ) -> tuple[dict[str, Any], Any, bool]:
        """(spec, checked value, repaired) after at most one repair round, else a 422."""
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": system},
            {"role": "user", "content": prompt},
        ]
        attempts: list[list[str]] = []
        for attempt in range(2):
            content = await self._chat(model, messages)
            spec, errors = self._parse(content)
            checked = None
            if spec is not None and not errors:
                checked, errors = check(spec)
            if not errors and spec is not None:
                return spec, checked, attempt > 0
            attempts.append(errors)
            messages += [
                {"role": "assistant", "content": content},
                {
                    "role": "user",
                    "content": REPAIR_INSTRUCTIONS.format(
                        errors="\n".join(f"- {e}" for e in errors)
                    ),
                },
            ]
        reasons = attempts[-1]
        raise ValidationFailed(
            f"the model did not produce a valid {what} after one repair round: "
            + "; ".join(reasons),
            details={"errors": reasons, "first_attempt_errors": attempts[0]},
        )

    @staticmethod
    def _parse(content: str) -> tuple[dict[str, Any] | None, list[str]]:
        text = content.strip()
        if text.startswith("```"):  # tolerate a fenced answer
            text = text.strip("`")
            text = text.removeprefix("json").strip()
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            return None, [f"the answer is not valid JSON: {exc}"]
        if not isinstance(value, dict):
            return None, ["the answer must be a JSON object"]
        return value, []

    async def generate_agent(
        self, identity: Identity, prompt: str, model: str | None
    ) -> GeneratedAgent:
        model = model or self.default_model
        tools = await self.registered_tools()
        known = sorted(str(t["name"]) for t in tools)
        listing = "\n".join(f"- {t['name']}: {t.get('description', '')}" for t in tools)
        system = AGENT_INSTRUCTIONS.format(
            schema=orjson.dumps(AGENT_SPEC_SCHEMA).decode(), tools=listing or "(none)"
        )

        def check(spec: dict[str, Any]) -> tuple[AgentSpec | None, list[str]]:
            errors = _schema_errors(AGENT_SPEC_SCHEMA, spec)
            if errors:
                return None, errors
            unknown = [t for t in spec["tools"] if t not in known]
            if unknown:
                return None, [f"$.tools: {unknown} are not registered tools; known tools: {known}"]
            try:
                return AgentSpec.model_validate({**spec, "model": model}), []
            except ValidationError as exc:
                return None, _pydantic_errors(exc)

        try:
            spec, agent_spec, repaired = await self._generate(
                model, system, prompt, check, "agent spec"
            )
        except ValidationFailed as exc:
            exc.details["known_tools"] = known
            raise
        assert isinstance(agent_spec, AgentSpec)
        response = await self.clients.get("agent").post(
            "/api/v1/agents",
            json=agent_spec.model_dump(mode="json", exclude_none=True),
            params=GENERATED,
        )
        raise_for_error(response, "agent")
        agent = dict(response.json()["data"])
        generation_id = await self._record(identity, "agent", prompt, spec, str(agent["id"]))
        return GeneratedAgent(
            generation_id=generation_id, agent=agent, generated_spec=spec, repaired=repaired
        )

    async def generate_tool(
        self, identity: Identity, prompt: str, model: str | None
    ) -> GeneratedTool:
        model = model or self.default_model
        existing = sorted(str(t["name"]) for t in await self.registered_tools())
        system = TOOL_INSTRUCTIONS.format(
            http_schema=orjson.dumps(HTTP_TOOL_SCHEMA).decode(),
            expression_schema=orjson.dumps(EXPRESSION_TOOL_SCHEMA).decode(),
            functions=", ".join(FUNCTIONS),
            constants=" and ".join(CONSTANTS),
            existing=", ".join(existing) or "(none)",
        )

        def check(
            spec: dict[str, Any],
        ) -> tuple[HttpToolSpec | ExpressionToolSpec | None, list[str]]:
            kind = spec.get("kind", "http")
            if not isinstance(kind, str) or kind not in TOOL_SCHEMAS:
                return None, [f'$.kind: must be "http" or "expression", not {kind!r}']
            errors = _schema_errors(TOOL_SCHEMAS[kind], spec)
            if errors:
                return None, errors
            if spec["name"] in existing:
                return None, [f"$.name: a tool named {spec['name']!r} already exists"]
            try:
                # The Agent service's own models: for an expression, the calculator's
                # whitelist parses it (never eval).
                return TOOL_SPECS[kind].model_validate(spec), []
            except ValidationError as exc:
                return None, _pydantic_errors(exc)

        spec, tool_spec, repaired = await self._generate(model, system, prompt, check, "tool spec")
        assert isinstance(tool_spec, HttpToolSpec | ExpressionToolSpec)
        response = await self.clients.get("agent").post(
            "/api/v1/agents/tools", json=tool_spec.model_dump(mode="json"), params=GENERATED
        )
        raise_for_error(response, "agent")
        tool = dict(response.json()["data"])
        generation_id = await self._record(identity, "tool", prompt, spec, tool_spec.name)
        return GeneratedTool(
            generation_id=generation_id, tool=tool, generated_spec=spec, repaired=repaired
        )

    async def _record(
        self, identity: Identity, kind: Kind, prompt: str, spec: dict[str, Any], resource_id: str
    ) -> str:
        generation_id = new_id()
        async with self.db.session() as session:
            TenantRepository(session, GenerationRow, identity.tenant_id).add(
                id=generation_id,
                kind=kind,
                prompt=prompt,
                spec=spec,
                resource_id=resource_id,
                owner_user_id=identity.user_id,
                created_at=_now(),
            )
        return generation_id

    async def _generation(
        self, session: AsyncSession, tenant: str, kind: Kind, resource_id: str
    ) -> GenerationRow | None:
        repo = TenantRepository(session, GenerationRow, tenant)
        query = repo.select(
            GenerationRow.kind == kind, GenerationRow.resource_id == resource_id
        ).order_by(GenerationRow.created_at.desc())
        row = (await session.scalars(query)).first()
        return row

    # -- feedback ------------------------------------------------------------------------------

    async def rate(
        self, identity: Identity, kind: Kind, resource_id: str, body: RateRequest
    ) -> FeedbackItem:
        async with self.db.session() as session:
            generation = await self._generation(session, identity.tenant_id, kind, resource_id)
            if generation is None:
                raise NotFound(f"no generated {kind} {resource_id!r}")
            row = TenantRepository(session, FeedbackRow, identity.tenant_id).add(
                id=new_id(),
                generation_id=generation.id,
                kind=kind,
                resource_id=resource_id,
                user_id=identity.user_id,
                rating=body.rating,
                feedback=body.feedback,
                created_at=_now(),
            )
            return _feedback_item(row)

    async def feedback(self, tenant: str, kind: Kind, resource_id: str) -> FeedbackStats:
        async with self.db.session() as session:
            if await self._generation(session, tenant, kind, resource_id) is None:
                raise NotFound(f"no generated {kind} {resource_id!r}")
            repo = TenantRepository(session, FeedbackRow, tenant)
            rows = list(
                await session.scalars(
                    repo.select(
                        FeedbackRow.kind == kind, FeedbackRow.resource_id == resource_id
                    ).order_by(FeedbackRow.created_at.desc())
                )
            )
        counts = Counter(r.rating for r in rows)
        return FeedbackStats(
            count=len(rows),
            average=round(sum(r.rating for r in rows) / len(rows), 3) if rows else None,
            distribution={str(n): counts.get(n, 0) for n in range(1, 6)},
            recent=[_feedback_item(r) for r in rows[:RECENT_FEEDBACK]],
        )

    # -- permissions ---------------------------------------------------------------------------

    async def _owner(self, tenant: str, kind: Kind, resource_id: str) -> tuple[bool, str | None]:
        """(the resource exists in this tenant, its owner when it was generated here)."""
        async with self.db.session() as session:
            generation = await self._generation(session, tenant, kind, resource_id)
        if generation is not None:
            return True, generation.owner_user_id
        if kind == "agent":
            return await self._agent_exists(resource_id), None
        names = {str(t["name"]) for t in await self.registered_tools()}
        return resource_id in names, None

    async def _grants(
        self, session: AsyncSession, tenant: str, kind: Kind, resource_id: str
    ) -> list[PermissionRow]:
        repo = TenantRepository(session, PermissionRow, tenant)
        query = repo.select(
            PermissionRow.resource_type == kind, PermissionRow.resource_id == resource_id
        ).order_by(PermissionRow.created_at)
        return list(await session.scalars(query))

    async def change_permission(self, identity: Identity, body: PermissionChange) -> PermissionList:
        tenant = identity.tenant_id
        exists, owner = await self._owner(tenant, body.resource_type, body.resource_id)
        if not exists:
            raise NotFound(f"{body.resource_type} {body.resource_id!r} not found")
        may_grant = identity.has_scope("admin") or (
            identity.user_id is not None and identity.user_id == owner
        )
        if not may_grant:
            raise Forbidden(
                "only the owner of the resource or an admin-scoped caller may change permissions"
            )
        try:
            await self._apply(identity, body)
        except IntegrityError:  # a concurrent identical grant: the grant exists either way
            log.info("concurrent grant of %s on %s", body.permission, body.resource_id)
        return await self.permissions(tenant, body.resource_type, body.resource_id, owner)

    async def _apply(self, identity: Identity, body: PermissionChange) -> None:
        tenant = identity.tenant_id
        async with self.db.session() as session:
            repo = TenantRepository(session, PermissionRow, tenant)
            existing = await session.scalar(
                repo.select(
                    PermissionRow.resource_type == body.resource_type,
                    PermissionRow.resource_id == body.resource_id,
                    PermissionRow.user_id == body.user_id,
                    PermissionRow.permission == body.permission,
                )
            )
            if body.action == "grant" and existing is None:
                repo.add(
                    id=new_id(),
                    resource_type=body.resource_type,
                    resource_id=body.resource_id,
                    user_id=body.user_id,
                    permission=body.permission,
                    granted_by=identity.user_id,
                    created_at=_now(),
                )
            elif body.action == "revoke" and existing is not None:
                await session.delete(existing)

    async def permissions(
        self, tenant: str, kind: Kind, resource_id: str, owner: str | None = None
    ) -> PermissionList:
        async with self.db.session() as session:
            if owner is None:
                generation = await self._generation(session, tenant, kind, resource_id)
                owner = generation.owner_user_id if generation else None
            rows = await self._grants(session, tenant, kind, resource_id)
        return PermissionList(
            resource_type=kind,
            resource_id=resource_id,
            owner_user_id=owner,
            grants=[
                PermissionView(
                    resource_type=kind,
                    resource_id=r.resource_id,
                    user_id=r.user_id,
                    permission=r.permission,
                    granted_by=r.granted_by,
                    created_at=r.created_at,
                )
                for r in rows
            ],
        )

    async def check(
        self, tenant: str, kind: Kind, resource_id: str, user_id: str, permission: Permission
    ) -> PermissionCheck:
        item = CheckItem(resource_type=kind, resource_id=resource_id, permission=permission)
        (result,) = await self.check_many(tenant, user_id, [item])
        return PermissionCheck(allowed=result.allowed, reason=result.reason)

    async def check_many(
        self, tenant: str, user_id: str, items: list[CheckItem]
    ) -> list[CheckResult]:
        """The owner (of the latest generation of a resource) is always allowed; anyone else
        needs a grant at least as strong. Two queries whatever the number of items."""
        ids = sorted({i.resource_id for i in items})
        async with self.db.session() as session:
            generations = TenantRepository(session, GenerationRow, tenant).select(
                GenerationRow.resource_id.in_(ids)
            )
            owners = _latest_owners(await session.scalars(generations))
            grants = TenantRepository(session, PermissionRow, tenant).select(
                PermissionRow.user_id == user_id, PermissionRow.resource_id.in_(ids)
            )
            best: dict[tuple[str, str], int] = {}
            for row in await session.scalars(grants):
                key = (row.resource_type, row.resource_id)
                best[key] = max(best.get(key, 0), LEVELS.get(row.permission, 0))
        results = []
        for item in items:
            key = (item.resource_type, item.resource_id)
            level = best.get(key, 0)
            if owners.get(key) == user_id:
                allowed, reason = True, "owner"
            elif level >= LEVELS[item.permission]:
                allowed, reason = True, f"granted {_permission_at(level)}"
            else:
                allowed, reason = False, f"no {item.permission} permission"
            results.append(CheckResult(**item.model_dump(), allowed=allowed, reason=reason))
        return results

    async def bulk_check(self, tenant: str, user_id: str, items: list[CheckItem]) -> BulkCheck:
        return BulkCheck(user_id=user_id, results=await self.check_many(tenant, user_id, items))

    async def accessible(
        self, tenant: str, kind: Kind, user_id: str, permission: Permission
    ) -> Accessible:
        """Every resource of `kind` the user owns or holds `permission` on (used by the Agent
        service to filter lists in one call)."""
        async with self.db.session() as session:
            grants = TenantRepository(session, PermissionRow, tenant).select(
                PermissionRow.resource_type == kind,
                PermissionRow.user_id == user_id,
                PermissionRow.permission.in_(
                    [p for p, level in LEVELS.items() if level >= LEVELS[permission]]
                ),
            )
            ids = {row.resource_id for row in await session.scalars(grants)}
            repo = TenantRepository(session, GenerationRow, tenant)
            owned = repo.select(GenerationRow.kind == kind, GenerationRow.owner_user_id == user_id)
            candidates = {row.resource_id for row in await session.scalars(owned)}
            if candidates:
                # Owned means owner of the latest generation of that resource id.
                latest = repo.select(
                    GenerationRow.kind == kind, GenerationRow.resource_id.in_(sorted(candidates))
                )
                owners = _latest_owners(await session.scalars(latest))
                ids |= {rid for (_, rid), owner in owners.items() if owner == user_id}
        return Accessible(
            resource_type=kind, user_id=user_id, permission=permission, resource_ids=sorted(ids)
        )


def _latest_owners(rows: Iterable[GenerationRow]) -> dict[tuple[str, str], str | None]:
    owners: dict[tuple[str, str], tuple[datetime, str | None]] = {}
    for row in rows:
        key = (row.kind, row.resource_id)
        if key not in owners or row.created_at >= owners[key][0]:
            owners[key] = (row.created_at, row.owner_user_id)
    return {key: owner for key, (_, owner) in owners.items()}


def _permission_at(level: int) -> str:
    return next(p for p, value in LEVELS.items() if value == level)


def _feedback_item(row: FeedbackRow) -> FeedbackItem:
    return FeedbackItem(
        id=row.id,
        rating=row.rating,
        feedback=row.feedback,
        user_id=row.user_id,
        created_at=row.created_at,
    )
