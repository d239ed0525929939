"""Agent use cases: agents and tenant tools, runs (sync, async as jobs, in chat sessions),
short- and long-term memory, and sequential workflows. Agents and tools the Prompt Generator
made are guarded by its permissions (access.py): read, execute or admin per use case."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
from fastapi import APIRouter
from sqlalchemy import delete, false, func, or_, select

from faas.backends.kv import KeyValueStore
from faas.integrations.events import EventPublisher
from faas.jobs import JobContext, JobQueue, JobView
from faas.services.agent_service.access import (
    GENERATED,
    GeneratorPermissions,
    Origin,
    Owned,
    Permission,
    RefusedTool,
    Use,
    forbidden,
    sees_everything,
)
from faas.services.agent_service.models import (
    AgentSpec,
    AgentUpdate,
    AgentView,
    MemoryCreate,
    MemoryView,
    RunView,
    Step,
    ToolView,
    WorkflowRequest,
    WorkflowResponse,
)
from faas.services.agent_service.runner import AgentRunner, EventSink, Outcome
from faas.services.agent_service.tables import (
    AgentRow,
    MemoryRow,
    MessageRow,
    RunRow,
    SessionRow,
    ToolRow,
)
from faas.services.agent_service.tenant_tools import (
    ExpressionToolSpec,
    build_tool,
    parse_tool_spec,
)
from faas.services.agent_service.tools import (
    BUILTIN_TOOLS,
    HttpToolSpec,
    Tool,
    ToolContext,
    check_declared_url,
)
from faas.shared.context import Identity, RequestContext, new_id, reset_context, set_context
from faas.shared.contracts import Page
from faas.shared.database import Database, TenantRepository
from faas.shared.exceptions import Conflict, NotFound, ValidationFailed
from faas.shared.http_client import raise_for_error
from faas.shared.input_rules import validated

if TYPE_CHECKING:
    from faas.runtime import Runtime

JOB_KIND = "agent.execute"
LOCK_TTL_S = 300
LOCK_WAIT_S = 120
RECALL_K = 3
RECALL_THRESHOLD = 0.3


def _now() -> datetime:
    return datetime.now(UTC)


class AgentService:
    name = "agent"

    def __init__(
        self,
        *,
        db: Database,
        kv: KeyValueStore,
        events: EventPublisher,
        jobs: JobQueue,
        runtime: Runtime,
        http_allowlist: list[str],
        session_lock_wait_s: float = LOCK_WAIT_S,
    ) -> None:
        self.db = db
        self.session_lock_wait_s = session_lock_wait_s
        self.kv = kv
        self.events = events
        self.jobs = jobs
        self.runtime = runtime
        self.clients = runtime.clients
        self.http_allowlist = http_allowlist
        self.runner = AgentRunner(lambda: self.clients.get("gateway"))
        self.access = GeneratorPermissions(runtime.clients)
        jobs.registry.register(JOB_KIND, self._execute_job)

    def router(self) -> APIRouter:
        from faas.services.agent_service.routes import build_router

        return build_router(self)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    # -- agents ----------------------------------------------------------------------------

    async def create(
        self, identity: Identity, spec: AgentSpec, origin: Origin | None = None
    ) -> AgentView:
        await self._validate(identity, spec)
        now = _now()
        async with self.db.session() as session:
            row = TenantRepository(session, AgentRow, identity.tenant_id).add(
                id=new_id(),
                name=spec.name,
                description=spec.description,
                spec=spec.model_dump(mode="json"),
                created_by=identity.user_id,
                origin=origin,
                created_at=now,
                updated_at=now,
            )
            return _agent_view(row)

    async def get(self, identity: Identity, agent_id: str) -> AgentView:
        return _agent_view(await self._load(identity, agent_id, "read"))

    async def list_agents(self, identity: Identity, limit: int, offset: int) -> Page[AgentView]:
        """The tenant's agents, without the generated ones this caller may not read."""
        visible = await self._visible(identity)
        async with self.db.session() as session:
            rows, total = await TenantRepository(session, AgentRow, identity.tenant_id).page(
                *visible, order_by=AgentRow.created_at.desc(), limit=limit, offset=offset
            )
            return Page[AgentView](
                items=[_agent_view(r) for r in rows], total=total, limit=limit, offset=offset
            )

    async def _visible(self, identity: Identity) -> list[Any]:
        """SQL conditions for the agents this caller may read. The generator is asked for the
        caller's grants only when the tenant has generated agents made by someone else."""
        if sees_everything(identity):
            return []
        user = identity.user_id
        mine = AgentRow.created_by == user if user else false()
        visible = or_(AgentRow.origin.is_(None), mine)
        not_mine = or_(AgentRow.created_by.is_(None), AgentRow.created_by != user)
        async with self.db.session() as session:
            query = TenantRepository(session, AgentRow, identity.tenant_id).select(
                AgentRow.origin == GENERATED, not_mine
            )
            found = await session.scalar(query.with_only_columns(AgentRow.id).limit(1))
        if found is None:
            return [visible]
        granted = await self.access.accessible(identity, "agent", "read")
        return [or_(visible, AgentRow.id.in_(sorted(granted)))] if granted else [visible]

    async def update(self, identity: Identity, agent_id: str, body: AgentUpdate) -> AgentView:
        row = await self._load(identity, agent_id, "admin")
        merged = validated(
            AgentSpec, {**row.spec, **body.model_dump(exclude_unset=True, mode="json")}
        )
        await self._validate(identity, merged)
        async with self.db.session() as session:
            row = await self._agent(session, identity.tenant_id, agent_id)
            row.spec, row.name, row.description = (
                merged.model_dump(mode="json"),
                merged.name,
                merged.description,
            )
            row.updated_at = _now()
            return _agent_view(row)

    async def delete(self, identity: Identity, agent_id: str) -> None:
        await self._load(identity, agent_id, "admin")
        async with self.db.session() as session:
            row = await self._agent(session, identity.tenant_id, agent_id)
            await session.delete(row)

    async def _agent(self, session: Any, tenant: str, agent_id: str) -> AgentRow:
        row = await TenantRepository(session, AgentRow, tenant).get(agent_id)
        if row is None:
            raise NotFound(f"agent {agent_id} not found")
        return row

    async def _load(self, identity: Identity, agent_id: str, permission: Permission) -> AgentRow:
        """The agent (404 outside the caller's tenant), if the caller holds `permission`."""
        async with self.db.session() as session:
            row = await self._agent(session, identity.tenant_id, agent_id)
        await self.access.require(identity, Use("agent", agent_id, permission), row)
        return row

    async def _validate(self, identity: Identity, spec: AgentSpec) -> None:
        known = set(BUILTIN_TOOLS) | {r.name for r in await self._tool_rows(identity.tenant_id)}
        unknown = sorted(set(spec.tools) - known)
        if unknown:
            raise ValidationFailed(
                f"unknown tools: {', '.join(unknown)}", details={"known_tools": sorted(known)}
            )
        response = await self.clients.get("gateway").get("/v1/models")
        raise_for_error(response, "gateway")
        models = {m["id"] for m in response.json()["data"] if m.get("kind", "chat") == "chat"}
        if spec.model not in models:
            raise ValidationFailed(
                f"unknown model {spec.model!r}", details={"known_models": sorted(models)}
            )

    # -- tenant tools ----------------------------------------------------------------------

    async def create_tool(
        self,
        identity: Identity,
        spec: HttpToolSpec | ExpressionToolSpec,
        origin: Origin | None = None,
    ) -> ToolView:
        if spec.name in BUILTIN_TOOLS:
            raise Conflict(f"{spec.name!r} is a built-in tool")
        if isinstance(spec, HttpToolSpec):
            await check_declared_url(spec.url_template, self.http_allowlist)
        async with self.db.session() as session:
            repo = TenantRepository(session, ToolRow, identity.tenant_id)
            if await session.scalar(repo.select(ToolRow.name == spec.name)) is not None:
                raise Conflict(f"tool {spec.name!r} already exists")
            row = repo.add(
                id=new_id(),
                name=spec.name,
                spec=spec.model_dump(mode="json"),
                created_by=identity.user_id,
                origin=origin,
                created_at=_now(),
            )
            return _tool_view(row)

    async def list_tools(self, tenant: str) -> list[ToolView]:
        """Every tool of the tenant, generated ones included: names are unique per tenant and
        the Prompt Generator reads this list to pick new ones. Running a generated tool and
        deleting it are what its permissions guard."""
        builtins = [
            ToolView(
                name=t.name, description=t.description, parameters=t.parameters, kind="built-in"
            )
            for t in BUILTIN_TOOLS.values()
        ]
        return builtins + [_tool_view(r) for r in await self._tool_rows(tenant)]

    async def delete_tool(self, identity: Identity, name: str) -> None:
        async with self.db.session() as session:
            repo = TenantRepository(session, ToolRow, identity.tenant_id)
            row = await session.scalar(repo.select(ToolRow.name == name))
            if row is None:
                raise NotFound(f"tool {name!r} not found")
        await self.access.require(identity, Use("tool", name, "admin"), row)
        async with self.db.session() as session:
            await session.execute(
                delete(ToolRow).where(ToolRow.tenant_id == identity.tenant_id, ToolRow.id == row.id)
            )

    async def _tool_rows(self, tenant: str, names: list[str] | None = None) -> list[ToolRow]:
        async with self.db.session() as session:
            repo = TenantRepository(session, ToolRow, tenant)
            query = repo.select() if names is None else repo.select(ToolRow.name.in_(names))
            return list((await session.scalars(query.order_by(ToolRow.created_at))).all())

    async def _prepare(
        self, identity: Identity, agent_id: str
    ) -> tuple[AgentSpec, dict[str, Tool]]:
        """The agent's spec and tools for a run by this caller, who needs execute on the agent
        (else 403) and on each generated tool it uses (else that tool refuses its calls). One
        question to the generator covers both."""
        async with self.db.session() as session:
            row = await self._agent(session, identity.tenant_id, agent_id)
        spec = AgentSpec.model_validate(row.spec)
        declared = [name for name in spec.tools if name not in BUILTIN_TOOLS]
        rows = await self._tool_rows(identity.tenant_id, declared) if declared else []
        own = {r.name: r for r in rows}
        agent_use = Use("agent", agent_id, "execute")
        uses: list[tuple[Use, Owned]] = [(agent_use, row)]
        uses += [(Use("tool", name, "execute"), tool_row) for name, tool_row in own.items()]
        denied = await self.access.denied(identity, uses)
        if agent_use in denied:
            raise forbidden(identity, agent_use)
        tools: dict[str, Tool] = {}
        for name in spec.tools:
            if name in BUILTIN_TOOLS:
                tools[name] = BUILTIN_TOOLS[name]
            elif name in own:
                tool = build_tool(parse_tool_spec(own[name].spec))
                use = Use("tool", name, "execute")
                tools[name] = (
                    RefusedTool(tool, forbidden(identity, use).message) if use in denied else tool
                )
        return spec, tools

    # -- runs ------------------------------------------------------------------------------

    async def execute(
        self,
        identity: Identity,
        agent_id: str,
        task: str,
        *,
        depth: int = 0,
        session_id: str | None = None,
        history: list[dict[str, Any]] | None = None,
        sink: EventSink | None = None,
        prepared: tuple[AgentSpec, dict[str, Tool]] | None = None,
    ) -> tuple[RunView, Outcome]:
        """One run as `identity`. `prepared` is what `_prepare` gave a caller that already
        checked this run's permissions (a chat turn), so they are not asked for twice."""
        spec, tools = prepared or await self._prepare(identity, agent_id)
        messages = [
            *await self._system(identity, agent_id, spec, task, tools),
            *(history or []),
            {"role": "user", "content": task},
        ]
        run_id = new_id()
        await self._save_run(identity, run_id, agent_id, session_id, task)
        ctx = ToolContext(
            identity=identity,
            agent_id=agent_id,
            depth=depth,
            clients=self.clients,
            call_agent=self._delegate(identity),
            http_allowlist=self.http_allowlist,
        )
        try:
            outcome = await self.runner.run(spec, messages, tools, ctx, sink=sink)
        except Exception as exc:
            await self._finish_run(
                identity, run_id, Outcome(status="failed", output=None, error=str(exc))
            )
            raise
        view = await self._finish_run(identity, run_id, outcome)
        return view, outcome

    def _delegate(self, identity: Identity) -> Callable[[str, str, int], Awaitable[str]]:
        async def call(agent_id: str, task: str, depth: int) -> str:
            view, _ = await self.execute(identity, agent_id, task, depth=depth)
            return view.output or view.error or ""

        return call

    async def _system(
        self,
        identity: Identity,
        agent_id: str,
        spec: AgentSpec,
        task: str,
        tools: dict[str, Tool],
    ) -> list[dict[str, Any]]:
        text = spec.system_prompt
        if text is None:
            template = spec.prompt_template or "agent.system"
            response = await self.clients.get("prompt").post(
                "/api/v1/prompts/render",
                json={
                    "name": template,
                    "variables": {
                        "agent_name": spec.name,
                        "tools": [
                            {"name": t.name, "description": t.description} for t in tools.values()
                        ],
                        **({"instructions": spec.description} if spec.description else {}),
                    },
                },
            )
            raise_for_error(response, "prompt")
            text = str(response.json()["data"]["rendered"])
        if spec.memory.long_term:
            recalled = await self.recall(identity, agent_id, task)
            if recalled:
                text += "\n\nRelevant memories:\n" + "\n".join(f"- {m.text}" for m in recalled)
        return [{"role": "system", "content": text}]

    async def _save_run(
        self, identity: Identity, run_id: str, agent_id: str, session_id: str | None, task: str
    ) -> None:
        async with self.db.session() as session:
            TenantRepository(session, RunRow, identity.tenant_id).add(
                id=run_id,
                agent_id=agent_id,
                session_id=session_id,
                status="running",
                input=task,
                output=None,
                steps=[],
                usage={},
                error=None,
                created_at=_now(),
            )

    async def _finish_run(self, identity: Identity, run_id: str, outcome: Outcome) -> RunView:
        async with self.db.session() as session:
            row = await TenantRepository(session, RunRow, identity.tenant_id).get(run_id)
            assert row is not None
            row.status, row.output, row.error = outcome.status, outcome.output, outcome.error
            row.steps = [s.model_dump(mode="json") for s in outcome.steps]
            row.usage = {
                **outcome.usage,
                "overhead_ms": round(outcome.overhead_s * 1000, 3),
                "model_ms": round(outcome.model_s * 1000, 3),
                "tools_ms": round(outcome.tools_s * 1000, 3),
            }
            row.finished_at = _now()
            view = _run_view(row)
        event = "run_completed" if outcome.status == "completed" else "run_failed"
        await self.events.publish(
            "agent",
            event,
            identity.tenant_id,
            {
                "agent_id": view.agent_id,
                "run_id": run_id,
                "status": view.status,
                "usage": view.usage,
            },
        )
        return view

    async def get_run(self, identity: Identity, agent_id: str, run_id: str) -> RunView:
        await self._load(identity, agent_id, "read")
        async with self.db.session() as session:
            row = await TenantRepository(session, RunRow, identity.tenant_id).get(run_id)
            if row is None or row.agent_id != agent_id:
                raise NotFound(f"run {run_id} not found")
            return _run_view(row)

    async def list_runs(
        self, identity: Identity, agent_id: str, limit: int, offset: int
    ) -> Page[RunView]:
        await self._load(identity, agent_id, "read")
        async with self.db.session() as session:
            rows, total = await TenantRepository(session, RunRow, identity.tenant_id).page(
                RunRow.agent_id == agent_id,
                order_by=RunRow.created_at.desc(),
                limit=limit,
                offset=offset,
            )
            return Page[RunView](
                items=[_run_view(r) for r in rows], total=total, limit=limit, offset=offset
            )

    async def submit(self, identity: Identity, agent_id: str, task: str) -> JobView:
        """Checked now, and again when the job runs (a grant may be revoked meanwhile)."""
        await self._load(identity, agent_id, "execute")
        return await self.jobs.submit(identity, JOB_KIND, {"agent_id": agent_id, "task": task})

    async def _execute_job(self, job: JobContext) -> dict[str, Any]:
        identity = self.runtime.service_identity(job.tenant_id, job.user_id)
        token = set_context(
            RequestContext(correlation_id=job.job_id, request_id=new_id(), identity=identity)
        )
        try:
            await job.progress(0.1, "running")
            view, _ = await self.execute(
                identity, str(job.payload["agent_id"]), str(job.payload["task"])
            )
        finally:
            reset_context(token)
        return {"run_id": view.id, "status": view.status, "output": view.output}

    # -- chat sessions ---------------------------------------------------------------------

    async def chat(
        self,
        identity: Identity,
        agent_id: str,
        message: str,
        session_id: str | None,
        sink: EventSink | None = None,
    ) -> tuple[str, RunView]:
        """One turn. Turns of one session are serialised with a lock in the key/value store
        (shared by every replica with Redis): a second message waits for the first."""
        tenant = identity.tenant_id
        prepared = await self._prepare(identity, agent_id)
        spec = prepared[0]
        async with self.db.session() as session:
            await self._agent(session, tenant, agent_id)  # still there
            if session_id is None:
                session_id = new_id()
                TenantRepository(session, SessionRow, tenant).add(
                    id=session_id, agent_id=agent_id, created_at=_now(), updated_at=_now()
                )
            else:
                row = await TenantRepository(session, SessionRow, tenant).get(session_id)
                if row is None or row.agent_id != agent_id:
                    raise NotFound(f"session {session_id} not found")
        lock = f"faas:{tenant}:agent-session-lock:{session_id}"
        owner = new_id().encode()
        await self._acquire(lock, owner)
        try:
            history = await self._history(tenant, session_id, spec)
            view, outcome = await self.execute(
                identity,
                agent_id,
                message,
                session_id=session_id,
                history=history,
                sink=sink,
                prepared=prepared,
            )
            await self._append(
                tenant, session_id, [{"role": "user", "content": message}, *outcome.messages]
            )
        finally:
            if await self.kv.get(lock) == owner:
                await self.kv.delete(lock)
        return session_id, view

    async def _acquire(self, lock: str, owner: bytes) -> None:
        deadline = asyncio.get_running_loop().time() + self.session_lock_wait_s
        while not await self.kv.set_if_absent(lock, owner, LOCK_TTL_S):
            if asyncio.get_running_loop().time() > deadline:
                raise Conflict(
                    "this session is busy with another message", headers={"Retry-After": "5"}
                )
            await asyncio.sleep(0.05)

    async def _history(self, tenant: str, session_id: str, spec: AgentSpec) -> list[dict[str, Any]]:
        async with self.db.session() as session:
            rows = (
                await session.scalars(
                    TenantRepository(session, MessageRow, tenant)
                    .select(MessageRow.session_id == session_id)
                    .order_by(MessageRow.ordinal.desc())
                    .limit(spec.memory.window)
                )
            ).all()
        messages = [r.message for r in reversed(rows)]
        while messages and messages[0].get("role") == "tool":  # never start mid tool exchange
            messages.pop(0)
        if not messages:
            return []
        response = await self.clients.get("prompt").post(
            "/api/v1/prompts/context",
            json={
                "messages": messages,
                "max_tokens": spec.memory.max_context_tokens,
                "strategy": "summarize",
                "model": spec.model,
            },
        )
        raise_for_error(response, "prompt")
        return list(response.json()["data"]["messages"])

    async def _append(self, tenant: str, session_id: str, messages: list[dict[str, Any]]) -> None:
        async with self.db.session() as session:
            last = await session.scalar(
                select(func.max(MessageRow.ordinal)).where(MessageRow.session_id == session_id)
            )
            start = (last or 0) + 1
            repo = TenantRepository(session, MessageRow, tenant)
            for offset, message in enumerate(messages):
                repo.add(
                    id=new_id(),
                    session_id=session_id,
                    ordinal=start + offset,
                    message=message,
                    created_at=_now(),
                )
            row = await repo.session.get(SessionRow, session_id)
            if row is not None:
                row.updated_at = _now()

    async def session_messages(
        self, identity: Identity, agent_id: str, session_id: str
    ) -> list[dict[str, Any]]:
        tenant = identity.tenant_id
        await self._load(identity, agent_id, "read")
        async with self.db.session() as session:
            row = await TenantRepository(session, SessionRow, tenant).get(session_id)
            if row is None or row.agent_id != agent_id:
                raise NotFound(f"session {session_id} not found")
            rows = (
                await session.scalars(
                    select(MessageRow)
                    .where(MessageRow.session_id == session_id)
                    .order_by(MessageRow.ordinal)
                )
            ).all()
            return [r.message for r in rows]

    # -- long-term memory ------------------------------------------------------------------

    async def _embed(self, texts: list[str]) -> np.ndarray:
        response = await self.clients.get("gateway").post(
            "/api/v1/gateway/embeddings", json={"texts": texts}
        )
        raise_for_error(response, "gateway")
        matrix = np.asarray(response.json()["data"]["vectors"], dtype=np.float32)
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        unit: np.ndarray = matrix / norms
        return unit

    async def remember(self, identity: Identity, agent_id: str, body: MemoryCreate) -> MemoryView:
        """Long-term memory shapes every later run: changing it takes admin."""
        await self._load(identity, agent_id, "admin")
        vector = (await self._embed([body.text]))[0]
        async with self.db.session() as session:
            row = TenantRepository(session, MemoryRow, identity.tenant_id).add(
                id=new_id(),
                agent_id=agent_id,
                text=body.text,
                embedding=vector.tobytes(),
                meta=body.metadata,
                created_at=_now(),
            )
            return MemoryView(
                id=row.id, text=row.text, metadata=row.meta, created_at=row.created_at
            )

    async def memories(self, identity: Identity, agent_id: str) -> list[MemoryRow]:
        await self._load(identity, agent_id, "read")
        return await self._memory_rows(identity.tenant_id, agent_id)

    async def _memory_rows(self, tenant: str, agent_id: str) -> list[MemoryRow]:
        async with self.db.session() as session:
            return list(
                (
                    await session.scalars(
                        TenantRepository(session, MemoryRow, tenant)
                        .select(MemoryRow.agent_id == agent_id)
                        .order_by(MemoryRow.created_at)
                    )
                ).all()
            )

    async def recall(self, identity: Identity, agent_id: str, text: str) -> list[MemoryView]:
        rows = await self._memory_rows(identity.tenant_id, agent_id)
        if not rows:
            return []
        query = (await self._embed([text]))[0]
        usable = [r for r in rows if len(r.embedding) == query.nbytes]
        if not usable:
            return []
        matrix = np.vstack([np.frombuffer(r.embedding, dtype=np.float32) for r in usable])
        scores = matrix @ query
        order = np.argsort(-scores)[:RECALL_K]
        return [
            MemoryView(
                id=usable[i].id,
                text=usable[i].text,
                metadata=usable[i].meta,
                created_at=usable[i].created_at,
                score=round(float(scores[i]), 4),
            )
            for i in order
            if scores[i] >= RECALL_THRESHOLD
        ]

    async def forget(self, identity: Identity, agent_id: str, memory_id: str) -> None:
        await self._load(identity, agent_id, "admin")
        async with self.db.session() as session:
            result = await session.execute(
                delete(MemoryRow).where(
                    MemoryRow.tenant_id == identity.tenant_id,
                    MemoryRow.agent_id == agent_id,
                    MemoryRow.id == memory_id,
                )
            )
            if not getattr(result, "rowcount", 0):
                raise NotFound(f"memory {memory_id} not found")

    # -- workflows -------------------------------------------------------------------------

    async def workflow(self, identity: Identity, body: WorkflowRequest) -> WorkflowResponse:
        runs: list[RunView] = []
        current = body.input
        for step in body.steps:
            task = step.task.replace("{input}", current) if step.task else current
            view, _ = await self.execute(identity, step.agent_id, task)
            runs.append(view)
            if view.status != "completed":
                return WorkflowResponse(output=None, runs=runs)
            current = view.output or ""
        return WorkflowResponse(output=current, runs=runs)


def _agent_view(row: AgentRow) -> AgentView:
    return AgentView.model_validate(
        {
            **row.spec,
            "id": row.id,
            "created_by": row.created_by,
            "origin": row.origin,
            "created_at": row.created_at,
            "updated_at": row.updated_at,
        }
    )


def _tool_view(row: ToolRow) -> ToolView:
    spec = parse_tool_spec(row.spec)
    return ToolView.model_validate(
        {**spec.model_dump(mode="json"), "created_by": row.created_by, "origin": row.origin}
    )


def _run_view(row: RunRow) -> RunView:
    return RunView(
        id=row.id,
        agent_id=row.agent_id,
        session_id=row.session_id,
        status=row.status,
        input=row.input,
        output=row.output,
        steps=[Step.model_validate(s) for s in row.steps],
        usage=row.usage,
        error=row.error,
        created_at=row.created_at,
        finished_at=row.finished_at,
    )
