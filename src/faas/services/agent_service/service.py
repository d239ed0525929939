"""Agent use cases: agents and tenant tools, runs (sync, async as jobs, in chat sessions),
short- and long-term memory, and sequential workflows."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
from fastapi import APIRouter
from sqlalchemy import delete, func, select

from faas.backends.kv import KeyValueStore
from faas.integrations.events import EventPublisher
from faas.jobs import JobContext, JobQueue, JobView
from faas.services.agent_service.models import (
    AgentSpec,
    AgentUpdate,
    AgentView,
    MemoryCreate,
    MemoryView,
    RunView,
    Step,
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
from faas.services.agent_service.tools import (
    BUILTIN_TOOLS,
    HttpToolSpec,
    Tool,
    ToolContext,
    declarative_http_tool,
)
from faas.shared.context import Identity, RequestContext, new_id, reset_context, set_context
from faas.shared.contracts import Page
from faas.shared.database import Database, TenantRepository
from faas.shared.exceptions import Conflict, NotFound, ValidationFailed
from faas.shared.http_client import raise_for_error

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
    ) -> None:
        self.db = db
        self.kv = kv
        self.events = events
        self.jobs = jobs
        self.runtime = runtime
        self.clients = runtime.clients
        self.http_allowlist = http_allowlist
        self.runner = AgentRunner(lambda: self.clients.get("gateway"))
        jobs.registry.register(JOB_KIND, self._execute_job)

    def router(self) -> APIRouter:
        from faas.services.agent_service.routes import build_router

        return build_router(self)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    # -- agents ----------------------------------------------------------------------------

    async def create(self, identity: Identity, spec: AgentSpec) -> AgentView:
        await self._validate(identity, spec)
        now = _now()
        async with self.db.session() as session:
            row = TenantRepository(session, AgentRow, identity.tenant_id).add(
                id=new_id(),
                name=spec.name,
                description=spec.description,
                spec=spec.model_dump(mode="json"),
                created_by=identity.user_id,
                created_at=now,
                updated_at=now,
            )
            return _agent_view(row)

    async def get(self, tenant: str, agent_id: str) -> AgentView:
        async with self.db.session() as session:
            return _agent_view(await self._agent(session, tenant, agent_id))

    async def list_agents(self, tenant: str, limit: int, offset: int) -> Page[AgentView]:
        async with self.db.session() as session:
            rows, total = await TenantRepository(session, AgentRow, tenant).page(
                order_by=AgentRow.created_at.desc(), limit=limit, offset=offset
            )
            return Page[AgentView](
                items=[_agent_view(r) for r in rows], total=total, limit=limit, offset=offset
            )

    async def update(self, identity: Identity, agent_id: str, body: AgentUpdate) -> AgentView:
        async with self.db.session() as session:
            row = await self._agent(session, identity.tenant_id, agent_id)
            merged = AgentSpec.model_validate(
                {**row.spec, **body.model_dump(exclude_unset=True, mode="json")}
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

    async def delete(self, tenant: str, agent_id: str) -> None:
        async with self.db.session() as session:
            row = await self._agent(session, tenant, agent_id)
            await session.delete(row)

    async def _agent(self, session: Any, tenant: str, agent_id: str) -> AgentRow:
        row = await TenantRepository(session, AgentRow, tenant).get(agent_id)
        if row is None:
            raise NotFound(f"agent {agent_id} not found")
        return row

    async def _validate(self, identity: Identity, spec: AgentSpec) -> None:
        known = set(BUILTIN_TOOLS) | set(await self._tenant_tools(identity.tenant_id))
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

    async def create_tool(self, tenant: str, spec: HttpToolSpec) -> HttpToolSpec:
        if spec.name in BUILTIN_TOOLS:
            raise Conflict(f"{spec.name!r} is a built-in tool")
        async with self.db.session() as session:
            repo = TenantRepository(session, ToolRow, tenant)
            if await session.scalar(repo.select(ToolRow.name == spec.name)) is not None:
                raise Conflict(f"tool {spec.name!r} already exists")
            repo.add(
                id=new_id(), name=spec.name, spec=spec.model_dump(mode="json"), created_at=_now()
            )
        return spec

    async def list_tools(self, tenant: str) -> list[dict[str, Any]]:
        builtins = [
            {
                "name": t.name,
                "description": t.description,
                "parameters": t.parameters,
                "kind": "built-in",
            }
            for t in BUILTIN_TOOLS.values()
        ]
        own = [
            {**spec.model_dump(mode="json"), "kind": "http"}
            for spec in (await self._tenant_tools(tenant)).values()
        ]
        return builtins + own

    async def delete_tool(self, tenant: str, name: str) -> None:
        async with self.db.session() as session:
            repo = TenantRepository(session, ToolRow, tenant)
            row = await session.scalar(repo.select(ToolRow.name == name))
            if row is None:
                raise NotFound(f"tool {name!r} not found")
            await session.delete(row)

    async def _tenant_tools(self, tenant: str) -> dict[str, HttpToolSpec]:
        async with self.db.session() as session:
            rows = (
                await session.scalars(TenantRepository(session, ToolRow, tenant).select())
            ).all()
            return {r.name: HttpToolSpec.model_validate(r.spec) for r in rows}

    async def _tools(self, tenant: str, names: list[str]) -> dict[str, Tool]:
        own = await self._tenant_tools(tenant)
        tools: dict[str, Tool] = {}
        for name in names:
            if name in BUILTIN_TOOLS:
                tools[name] = BUILTIN_TOOLS[name]
            elif name in own:
                tools[name] = declarative_http_tool(own[name])
        return tools

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
    ) -> tuple[RunView, Outcome]:
        async with self.db.session() as session:
            row = await self._agent(session, identity.tenant_id, agent_id)
            spec = AgentSpec.model_validate(row.spec)
        tools = await self._tools(identity.tenant_id, spec.tools)
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

    async def get_run(self, tenant: str, agent_id: str, run_id: str) -> RunView:
        async with self.db.session() as session:
            row = await TenantRepository(session, RunRow, tenant).get(run_id)
            if row is None or row.agent_id != agent_id:
                raise NotFound(f"run {run_id} not found")
            return _run_view(row)

    async def list_runs(self, tenant: str, agent_id: str, limit: int, offset: int) -> Page[RunView]:
        async with self.db.session() as session:
            await self._agent(session, tenant, agent_id)
            rows, total = await TenantRepository(session, RunRow, tenant).page(
                RunRow.agent_id == agent_id,
                order_by=RunRow.created_at.desc(),
                limit=limit,
                offset=offset,
            )
            return Page[RunView](
                items=[_run_view(r) for r in rows], total=total, limit=limit, offset=offset
            )

    async def submit(self, identity: Identity, agent_id: str, task: str) -> JobView:
        await self.get(identity.tenant_id, agent_id)
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
        async with self.db.session() as session:
            agent = await self._agent(session, tenant, agent_id)
            spec = AgentSpec.model_validate(agent.spec)
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
                identity, agent_id, message, session_id=session_id, history=history, sink=sink
            )
            await self._append(
                tenant, session_id, [{"role": "user", "content": message}, *outcome.messages]
            )
        finally:
            if await self.kv.get(lock) == owner:
                await self.kv.delete(lock)
        return session_id, view

    async def _acquire(self, lock: str, owner: bytes) -> None:
        deadline = asyncio.get_running_loop().time() + LOCK_WAIT_S
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
        self, tenant: str, agent_id: str, session_id: str
    ) -> list[dict[str, Any]]:
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
        await self.get(identity.tenant_id, agent_id)
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

    async def memories(self, tenant: str, agent_id: str) -> list[MemoryRow]:
        async with self.db.session() as session:
            await self._agent(session, tenant, agent_id)
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
        rows = await self.memories(identity.tenant_id, agent_id)
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

    async def forget(self, tenant: str, agent_id: str, memory_id: str) -> None:
        async with self.db.session() as session:
            result = await session.execute(
                delete(MemoryRow).where(
                    MemoryRow.tenant_id == tenant,
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
        {**row.spec, "id": row.id, "created_at": row.created_at, "updated_at": row.updated_at}
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
