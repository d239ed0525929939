"""The record of an agent's runs: one row per run, written when it starts and when it ends
(with its steps, tokens and timings), the `agent.run_completed` / `agent.run_failed` event,
and the run history."""

from __future__ import annotations

from faas.integrations.events import EventPublisher
from faas.services.agent_service.agents import AgentCatalog
from faas.services.agent_service.models import RunFinished, RunView, Step
from faas.services.agent_service.runner import Outcome
from faas.services.agent_service.tables import RunRow
from faas.shared.clock import utcnow
from faas.shared.context import Identity
from faas.shared.contracts import Page
from faas.shared.database import Database, TenantRepository
from faas.shared.exceptions import NotFound


class RunLog:
    def __init__(self, db: Database, events: EventPublisher, agents: AgentCatalog) -> None:
        self.db = db
        self.events = events
        self.agents = agents

    async def started(
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
                created_at=utcnow(),
            )

    async def finished(self, identity: Identity, run_id: str, outcome: Outcome) -> RunView:
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
            row.finished_at = utcnow()
            view = _run_view(row)
        event = "run_completed" if outcome.status == "completed" else "run_failed"
        finished = RunFinished(
            agent_id=view.agent_id, run_id=run_id, status=view.status, usage=view.usage
        )
        await self.events.publish("agent", event, identity.tenant_id, finished.model_dump())
        return view

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
