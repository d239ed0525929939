"""The record of an agent's runs: one row per run, written when it starts and when it ends
(with its steps, tokens and timings), the `agent.run_completed` / `agent.run_failed` event,
and the run history.

A run costs two writes whatever its number of steps: one INSERT when it starts (so a run cut
off mid-way still shows as `running`) and one UPDATE by key when it ends, with the steps as one
JSON value; each is one statement in one round trip (`Database.write`). A caller that has more
to write with either (a chat turn: its new session, its messages) passes it as `also`, so that
it lands in the same transaction (then the start's commit, provisional, does not wait for the
disk). The start is written while the run's first model call is on its way (`begin` names the
run, `record_start` writes it; the runner waits for it before any tool acts, and the end waits
for it), so a run does not wait for its own INSERT. No transaction waits on the model or a
tool."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, insert, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import Executable

from faas.integrations.events import EventPublisher
from faas.services.agent_service.agents import AgentCatalog
from faas.services.agent_service.models import RunFinished, RunView, Step
from faas.services.agent_service.runner import Outcome
from faas.services.agent_service.tables import RunRow
from faas.shared.clock import utcnow
from faas.shared.context import Identity, new_id
from faas.shared.contracts import Page
from faas.shared.database import Database, TenantRepository
from faas.shared.exceptions import NotFound

# More writes for the transaction that records a run's start or end.
Writes = Callable[[AsyncSession], Awaitable[None]]

# Built once on the table (Core, not the ORM): a run's two writes only bind their values, which
# cost a fifth of an agent run's CPU when the statements were built again for every run.
_RUNS = cast(Table, RunRow.__table__)
_START = insert(_RUNS)
_FINISH = update(_RUNS).where(
    _RUNS.c.tenant_id == bindparam("run_tenant"), _RUNS.c.id == bindparam("run_id")
)  # SET: the columns named by the parameters


@dataclass(frozen=True)
class StartedRun:
    """What the run's row says from its start: enough to answer with the finished view
    without reading the row back."""

    id: str
    agent_id: str
    session_id: str | None
    task: str
    created_at: datetime


class RunLog:
    def __init__(self, db: Database, events: EventPublisher, agents: AgentCatalog) -> None:
        self.db = db
        self.events = events
        self.agents = agents

    def begin(self, agent_id: str, session_id: str | None, task: str) -> StartedRun:
        """A new run's id and start time; `record_start` writes it."""
        return StartedRun(new_id(), agent_id, session_id, task, utcnow())

    async def record_start(
        self, identity: Identity, run: StartedRun, *, also: Writes | None = None
    ) -> None:
        """The run's `running` row (and `also`'s writes, in the same transaction)."""
        values: dict[str, Any] = {
            "tenant_id": identity.tenant_id,
            "id": run.id,
            "agent_id": run.agent_id,
            "session_id": run.session_id,
            "status": "running",
            "input": run.task,
            "output": None,
            "steps": [],
            "usage": {},
            "error": None,
            "created_at": run.created_at,
        }
        await self._write(_START, values, also, durable=False)

    async def finished(
        self, identity: Identity, run: StartedRun, outcome: Outcome, *, also: Writes | None = None
    ) -> RunView:
        usage: dict[str, Any] = {
            **outcome.usage,
            "overhead_ms": round(outcome.overhead_s * 1000, 3),
            "model_ms": round(outcome.model_s * 1000, 3),
            "tools_ms": round(outcome.tools_s * 1000, 3),
        }
        finished_at = utcnow()
        values = {
            "run_tenant": identity.tenant_id,
            "run_id": run.id,
            "status": outcome.status,
            "output": outcome.output,
            "error": outcome.error,
            "steps": [s.model_dump(mode="json") for s in outcome.steps],
            "usage": usage,
            "finished_at": finished_at,
        }
        await self._write(_FINISH, values, also, durable=True)
        view = RunView(
            id=run.id,
            agent_id=run.agent_id,
            session_id=run.session_id,
            status=outcome.status,
            input=run.task,
            output=outcome.output,
            steps=outcome.steps,
            usage=usage,
            error=outcome.error,
            created_at=run.created_at,
            finished_at=finished_at,
        )
        event = "run_completed" if outcome.status == "completed" else "run_failed"
        finished = RunFinished(
            agent_id=run.agent_id, run_id=run.id, status=view.status, usage=usage
        )
        await self.events.publish("agent", event, identity.tenant_id, finished.model_dump())
        return view

    async def _write(
        self, statement: Executable, values: dict[str, Any], also: Writes | None, *, durable: bool
    ) -> None:
        """The run's statement alone is one round trip (`Database.write`, durable); with more
        writes, one transaction (the start's commit then does not wait for the disk)."""
        if also is None:
            await self.db.write(statement, values)
            return
        async with self.db.session(durable=durable, writes=True) as session:
            await session.execute(statement, values)
            await also(session)

    async def get(self, identity: Identity, agent_id: str, run_id: str) -> RunView:
        await self.agents.load(identity, agent_id, "read")
        async with self.db.session() as session:
            row = await TenantRepository(session, RunRow, identity.tenant_id).get(run_id)
            if row is None or row.agent_id != agent_id:
                raise NotFound(f"run {run_id} not found")
            return _run_view(row)

    async def history(
        self, identity: Identity, agent_id: str, limit: int, offset: int
    ) -> Page[RunView]:
        await self.agents.load(identity, agent_id, "read")
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
