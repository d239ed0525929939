"""Workflows: agents run in sequence, each step's output the next step's input."""

from __future__ import annotations

from faas.services.agent_service.execution import AgentExecution
from faas.services.agent_service.models import RunView, WorkflowRequest, WorkflowResponse
from faas.shared.context import Identity


class Workflows:
    def __init__(self, execution: AgentExecution) -> None:
        self.execution = execution

    async def run(self, identity: Identity, body: WorkflowRequest) -> WorkflowResponse:
        """Stops at the first step that does not complete (its run says why)."""
        runs: list[RunView] = []
        current = body.input
        for step in body.steps:
            task = step.task.replace("{input}", current) if step.task else current
            view, _ = await self.execution.execute(identity, step.agent_id, task)
            runs.append(view)
            if view.status != "completed":
                return WorkflowResponse(output=None, runs=runs)
            current = view.output or ""
        return WorkflowResponse(output=current, runs=runs)
