"""Chat sessions: one turn at a time per session (a lock in the key/value store, shared by
every replica with Redis), the recent history fitted to the agent's context budget by the
prompt service, and the turn's messages appended for the next one.

A turn touches the database in at most four transactions, none open while the model runs: the
agent (read), the session and its history window (one read, none for a new session), the
run's start (with the new session's row) and the run's end (with the turn's messages in one
INSERT and the session's `updated_at`). A turn that fails before its end stores no messages."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from faas.backends.kv import KeyValueStore
from faas.services.agent_service.agents import AgentCatalog
from faas.services.agent_service.execution import AgentExecution
from faas.services.agent_service.models import AgentSpec, RunView
from faas.services.agent_service.runner import EventSink, Outcome
from faas.services.agent_service.runs import Writes
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
        new = session_id is None
        sid = new_id() if session_id is None else session_id
        lock = f"faas:{tenant}:agent-session-lock:{sid}"
        owner = new_id().encode()
        await self._acquire(lock, owner)
        try:
            history, last = (
                ([], 0)
                if new
                else await self._history(tenant, agent_id, sid, prepared.spec.memory.window)
            )
            if history:
                history = await self._fit(history, prepared.spec)
            user = {"role": "user", "content": message}

            def on_finish(outcome: Outcome) -> Writes:
                turn = [user, *outcome.messages]
                return lambda session: _append(session, tenant, sid, last, turn)

            view, _ = await self.execution.execute(
                identity,
                agent_id,
                message,
                session_id=sid,
                history=history,
                sink=sink,
                prepared=prepared,
                on_start=(lambda session: _create(session, tenant, agent_id, sid)) if new else None,
                on_finish=on_finish,
            )
        finally:
            if await self.kv.get(lock) == owner:
                await self.kv.delete(lock)
        return sid, view

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

    async def _acquire(self, lock: str, owner: bytes) -> None:
        deadline = asyncio.get_running_loop().time() + self.lock_wait_s
        while not await self.kv.set_if_absent(lock, owner, LOCK_TTL_S):
            if asyncio.get_running_loop().time() > deadline:
                raise Conflict(
                    "this session is busy with another message", headers={"Retry-After": "5"}
                )
            await asyncio.sleep(0.05)

    async def _history(
        self, tenant: str, agent_id: str, session_id: str, window: int
    ) -> tuple[list[dict[str, Any]], int]:
        """The session's recent messages (at most the agent's window) and the ordinal of its
        last one, in one statement; 404 for a session of another agent or tenant."""
        query = (
            select(SessionRow.agent_id, MessageRow.ordinal, MessageRow.message)
            .outerjoin(
                MessageRow,
                (MessageRow.session_id == SessionRow.id) & (MessageRow.tenant_id == tenant),
            )
            .where(SessionRow.tenant_id == tenant, SessionRow.id == session_id)
            .order_by(MessageRow.ordinal.desc())
            .limit(window)
        )
        async with self.db.session() as session:
            found = (await session.execute(query)).all()
        if not found or found[0].agent_id != agent_id:
            raise NotFound(f"session {session_id} not found")
        rows = [r for r in found if r.ordinal is not None]  # none: a session without messages
        last = int(rows[0].ordinal) if rows else 0
        messages = [r.message for r in reversed(rows)]
        while messages and messages[0].get("role") == "tool":  # never start mid tool exchange
            messages.pop(0)
        return messages, last

    async def _fit(self, messages: list[dict[str, Any]], spec: AgentSpec) -> list[dict[str, Any]]:
        """The history fitted to the agent's context budget by the prompt service."""
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


async def _create(session: AsyncSession, tenant: str, agent_id: str, session_id: str) -> None:
    now = utcnow()
    await session.execute(
        insert(SessionRow).values(
            tenant_id=tenant, id=session_id, agent_id=agent_id, created_at=now, updated_at=now
        )
    )


async def _append(
    session: AsyncSession,
    tenant: str,
    session_id: str,
    last: int,
    messages: list[dict[str, Any]],
) -> None:
    """The turn's messages after the session's last one (the session lock is held, so `last`
    is still the last), in one INSERT, and the session's `updated_at`."""
    now = utcnow()
    rows = [
        {
            "id": new_id(),
            "tenant_id": tenant,
            "session_id": session_id,
            "ordinal": last + offset,
            "message": message,
            "created_at": now,
        }
        for offset, message in enumerate(messages, start=1)
    ]
    await session.execute(insert(MessageRow), rows)
    await session.execute(
        update(SessionRow)
        .where(SessionRow.tenant_id == tenant, SessionRow.id == session_id)
        .values(updated_at=now)
        .execution_options(synchronize_session=False)
    )
