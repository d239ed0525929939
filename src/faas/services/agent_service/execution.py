"""Running an agent: its spec and tools for this caller (permissions checked once), the
system prompt (rendered by the prompt service, with recalled memories), the agent loop, and
the run's record. Also as a background job, and as a tool of another agent (`call_agent`)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry.trace import Span

from faas.integrations.genai import agent_attributes, is_tracing, mark_error, operation_span
from faas.jobs import JobContext, JobQueue, JobView
from faas.kernel.clients import ServiceClients
from faas.services.agent_service.access import (
    GeneratorPermissions,
    Owned,
    RefusedTool,
    Use,
    forbidden,
)
from faas.services.agent_service.agents import AgentCatalog
from faas.services.agent_service.memory import LongTermMemory
from faas.services.agent_service.models import AgentSpec, RunView, parse_tool_spec
from faas.services.agent_service.runner import AgentRunner, EventSink, Outcome
from faas.services.agent_service.runs import RunLog, StartedRun, Writes
from faas.services.agent_service.tool_catalog import ToolCatalog
from faas.services.agent_service.tools.base import Tool, ToolContext
from faas.services.agent_service.tools.builtin import BUILTIN_TOOLS
from faas.services.agent_service.tools.tenant import build_tool
from faas.services.gateway_service.client import run_budget
from faas.services.prompt_service.client import PromptClient
from faas.services.prompt_service.models import RenderRequest
from faas.shared.context import Identity, RequestContext, new_id, reset_context, set_context
from faas.shared.input_rules import validated

JOB_KIND = "agent.execute"
DEFAULT_TEMPLATE = "agent.system"


@dataclass(frozen=True)
class Prepared:
    """An agent's spec and its tools, as the caller may use them."""

    spec: AgentSpec
    tools: dict[str, Tool]


class AgentExecution:
    def __init__(
        self,
        *,
        agents: AgentCatalog,
        tools: ToolCatalog,
        access: GeneratorPermissions,
        memory: LongTermMemory,
        runs: RunLog,
        runner: AgentRunner,
        prompt: PromptClient,
        jobs: JobQueue,
        clients: ServiceClients,
        http_allowlist: Sequence[str],
        service_identity: Callable[[str, str | None], Identity],
    ) -> None:
        self.agents = agents
        self.tools = tools
        self.access = access
        self.memory = memory
        self.runs = runs
        self.runner = runner
        self.prompt = prompt
        self.jobs = jobs
        self.clients = clients
        self.http_allowlist = http_allowlist
        self.service_identity = service_identity

    async def prepare(self, identity: Identity, agent_id: str) -> Prepared:
        """The agent's spec and tools for a run by this caller, who needs execute on the agent
        (else 403) and on each generated tool it uses (else that tool refuses its calls). One
        question to the generator covers both."""
        row = await self.agents.row(identity.tenant_id, agent_id)
        spec = AgentSpec.model_validate(row.spec)
        declared = [name for name in spec.tools if name not in BUILTIN_TOOLS]
        rows = await self.tools.rows(identity.tenant_id, declared) if declared else []
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
        tools = {**await self.tools.remote(identity, spec.tools), **tools}  # `mcp:<server>`
        return Prepared(spec, tools)

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
        prepared: Prepared | None = None,
        on_start: Writes | None = None,
        on_finish: Callable[[Outcome], Writes] | None = None,
        budget_usd: float | None = None,
    ) -> tuple[RunView, Outcome]:
        """One run as `identity`. `prepared` is what `prepare` gave a caller that already
        checked this run's permissions (a chat turn), so they are not asked for twice.
        `on_start` and `on_finish(outcome)` add writes to the transactions that record the
        run's start and its end (not called when the run raises). `budget_usd` caps what the
        run's model calls may cost together (the gateway's `agent` level)."""
        prepared = prepared or await self.prepare(identity, agent_id)
        spec, tools = prepared.spec, prepared.tools
        messages = [
            await self._system(identity, agent_id, spec, task, tools),
            *(history or []),
            {"role": "user", "content": task},
        ]
        run = self.runs.begin(agent_id, session_id, task)
        # The run's record is written while its first model call is on its way: the runner
        # waits for it before any tool acts, and the run's end waits for it.
        recorded = asyncio.ensure_future(self.runs.record_start(identity, run, also=on_start))
        ctx = ToolContext(
            identity=identity,
            agent_id=agent_id,
            depth=depth,
            clients=self.clients,
            call_agent=self._delegate(identity),
            http_allowlist=self.http_allowlist,
        )
        try:
            outcome = await self._loop(run, prepared, messages, ctx, sink, budget_usd, recorded)
        except Exception as exc:
            await recorded  # a start that failed raises here: there is no run to mark failed
            failed = Outcome(status="failed", output=None, error=str(exc))
            await self.runs.finished(identity, run, failed)
            raise
        except BaseException:
            recorded.cancel()  # the request is cancelled: so is a start still being written
            raise
        await recorded
        also = on_finish(outcome) if on_finish is not None else None
        return await self.runs.finished(identity, run, outcome, also=also), outcome

    async def _loop(
        self,
        run: StartedRun,
        prepared: Prepared,
        messages: list[dict[str, Any]],
        ctx: ToolContext,
        sink: EventSink | None,
        budget_usd: float | None,
        recorded: Awaitable[None],
    ) -> Outcome:
        """The agent loop in its `invoke_agent` span, under the run's budget."""
        spec, tracer = prepared.spec, self.runner.tracer
        attributes = (
            agent_attributes(run.agent_id, spec.name, spec.model, run.session_id)
            if is_tracing(tracer)
            else None
        )
        with operation_span(tracer, f"invoke_agent {spec.name}", attributes) as span:
            with run_budget(run.id, budget_usd):
                outcome = await self.runner.run(
                    spec, messages, prepared.tools, ctx, sink=sink, recorded=recorded
                )
            if span.is_recording():
                finish_agent_span(span, run.id, outcome)
        return outcome

    async def submit(
        self, identity: Identity, agent_id: str, task: str, budget_usd: float | None = None
    ) -> JobView:
        """Checked now, and again when the job runs (a grant may be revoked meanwhile)."""
        await self.agents.load(identity, agent_id, "execute")
        payload = {"agent_id": agent_id, "task": task, "budget_usd": budget_usd}
        return await self.jobs.submit(identity, JOB_KIND, payload)

    async def run_job(self, job: JobContext) -> dict[str, Any]:
        identity = self.service_identity(job.tenant_id, job.user_id)
        token = set_context(
            RequestContext(correlation_id=job.job_id, request_id=new_id(), identity=identity)
        )
        try:
            await job.progress(0.1, "running")
            budget = job.payload.get("budget_usd")
            view, _ = await self.execute(
                identity,
                str(job.payload["agent_id"]),
                str(job.payload["task"]),
                budget_usd=float(budget) if budget is not None else None,
            )
        finally:
            reset_context(token)
        return {"run_id": view.id, "status": view.status, "output": view.output}

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
    ) -> dict[str, Any]:
        text = spec.system_prompt
        if text is None:
            variables: dict[str, Any] = {
                "agent_name": spec.name,
                "tools": [{"name": t.name, "description": t.description} for t in tools.values()],
            }
            if spec.description:
                variables["instructions"] = spec.description
            request = validated(
                RenderRequest,
                {"name": spec.prompt_template or DEFAULT_TEMPLATE, "variables": variables},
            )
            text = (await self.prompt.render(request)).rendered
        if spec.memory.long_term:
            recalled = await self.memory.recall(identity, agent_id, task)
            if recalled:
                text += "\n\nRelevant memories:\n" + "\n".join(f"- {m.text}" for m in recalled)
        return {"role": "system", "content": text}


def finish_agent_span(span: Span, run_id: str, outcome: Outcome) -> None:
    usage = outcome.usage
    span.set_attributes(
        {
            "faas.run_id": run_id,
            "faas.run_status": outcome.status,
            "gen_ai.usage.input_tokens": usage.get("prompt_tokens", 0),
            "gen_ai.usage.output_tokens": usage.get("completion_tokens", 0),
        }
    )
    if outcome.status == "failed":
        mark_error(span, outcome.error or "failed")
