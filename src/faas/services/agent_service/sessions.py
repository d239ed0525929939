"""Chat sessions: one turn at a time per session (a lock in the key/value store, shared by
every replica with Redis), the recent history fitted to the agent's context budget by the
prompt service, and the turn's messages appended for the next one."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import func, select

from faas.backends.kv import KeyValueStore
from faas.services.agent_service.agents import AgentCatalog, agent_row
from faas.services.agent_service.execution import AgentExecution
from faas.services.agent_service.models import AgentSpec, RunView
from faas.services.agent_service.runner import EventSink
from faas.services.agent_service.tables import MessageRow, SessionRow
from faas.services.prompt_service.client import PromptClient
from faas.services.prompt_service.models import ContextRequest
from faas.shared.clock import utcnow
from faas.shared.context import Identity, new_id
from faas.shared.database import Database, TenantRepository
from faas.shared.exceptions import Conflict, NotFound
from faas.shared.input_rules import validated

LOCK_TTL_S = 300
LOCK_WAIT_S = 120


class ChatSessions:
    def __init__(
        self,
        *,
        db: Database,
        kv: KeyValueStore,
        agents: AgentCatalog,
        execution: AgentExecution,
        prompt: PromptClient,
        lock_wait_s: float = LOCK_WAIT_S,
    ) -> None:
        self.db = db
        self.kv = kv
        self.agents = agents
        self.execution = execution
        self.prompt = prompt
        self.lock_wait_s = lock_wait_s

    async def chat(
        self,
        identity: Identity,
        agent_id: str,
        message: str,
        session_id: str | None,
        sink: EventSink | None = None,
    ) -> tuple[str, RunView]:
        """One turn, in a new session when `session_id` is None. A second message to a busy
        session waits for the first (409 after `lock_wait_s`)."""
        tenant = identity.tenant_id
        prepared = await self.execution.prepare(identity, agent_id)
        session_id = await self._open(tenant, agent_id, session_id)
        lock = f"faas:{tenant}:agent-session-lock:{session_id}"
        owner = new_id().encode()
        await self._acquire(lock, owner)
        try:
            history = await self._history(tenant, session_id, prepared.spec)
            view, outcome = await self.execution.execute(
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

    async def turn_events(
        self, identity: Identity, agent_id: str, message: str, session_id: str | None
    ) -> AsyncIterator[dict[str, Any]]:
        """One turn as events: `token`, `tool_call` and `tool_result` as they happen, then
        `done`. A failure is raised after the events that preceded it; a consumer that stops
        listening cancels the turn."""
        queue: asyncio.Queue[dict[str, Any] | Exception | None] = asyncio.Queue()

        async def turn() -> None:
            try:
                sid, view = await self.chat(identity, agent_id, message, session_id, queue.put)
                done = {"session_id": sid, "run_id": view.id, "reply": view.output}
                await queue.put({"type": "done", **done, "status": view.status})
            except Exception as exc:
                await queue.put(exc)
            finally:
                await queue.put(None)

        task = asyncio.create_task(turn())
        try:
            while (event := await queue.get()) is not None:
                if isinstance(event, Exception):
                    raise event
                yield event
        finally:
            if not task.done():
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def messages(
        self, identity: Identity, agent_id: str, session_id: str
    ) -> list[dict[str, Any]]:
        await self.agents.load(identity, agent_id, "read")
        async with self.db.session() as session:
            row = await TenantRepository(session, SessionRow, identity.tenant_id).get(session_id)
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

    async def _open(self, tenant: str, agent_id: str, session_id: str | None) -> str:
        """The session of this turn, created when None; the agent must still exist."""
        async with self.db.session() as session:
            await agent_row(session, tenant, agent_id)
            if session_id is None:
                session_id = new_id()
                TenantRepository(session, SessionRow, tenant).add(
                    id=session_id, agent_id=agent_id, created_at=utcnow(), updated_at=utcnow()
                )
                return session_id
            row = await TenantRepository(session, SessionRow, tenant).get(session_id)
            if row is None or row.agent_id != agent_id:
                raise NotFound(f"session {session_id} not found")
            return session_id

    async def _acquire(self, lock: str, owner: bytes) -> None:
        deadline = asyncio.get_running_loop().time() + self.lock_wait_s
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
        request = validated(
            ContextRequest,
            {
                "messages": messages,
                "max_tokens": spec.memory.max_context_tokens,
                "strategy": "summarize",
                "model": spec.model,
            },
        )
        return (await self.prompt.build_context(request)).messages

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
                    created_at=utcnow(),
                )
            row = await repo.session.get(SessionRow, session_id)
            if row is not None:
                row.updated_at = utcnow()
