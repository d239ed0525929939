"""HTTP routes of the agent service."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated, Any

import orjson
from fastapi import APIRouter, Query
from starlette.responses import Response, StreamingResponse

from faas.jobs.routes import accepted
from faas.services.agent_service.access import Origin
from faas.services.agent_service.models import (
    AgentSpec,
    AgentUpdate,
    AgentView,
    ChatRequest,
    ChatResponse,
    ExecuteRequest,
    MemoryCreate,
    MemoryView,
    RunView,
    ToolView,
    WorkflowRequest,
    WorkflowResponse,
)
from faas.services.agent_service.tenant_tools import TenantToolSpec
from faas.shared.api import PageDep, caller, respond, stream_error
from faas.shared.contracts import Page, ServiceResponse

if TYPE_CHECKING:
    from faas.services.agent_service.service import AgentService


def _sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload, default=str) + b"\n\n"


OriginQuery = Annotated[
    Origin | None,
    Query(
        description="prompt_generator marks a generated resource: others then need its "
        "permissions (only narrows access; set by the Prompt Generator)"
    ),
]


def build_router(service: AgentService) -> APIRouter:
    router = APIRouter(prefix="/api/v1/agents", tags=["agents"])

    @router.post("/tools", status_code=201, response_model=ServiceResponse[ToolView])
    async def create_tool(body: TenantToolSpec, origin: OriginQuery = None) -> Response:
        """A tenant tool: `kind: http` (hosts limited by FAAS_AGENT_HTTP_ALLOWLIST) or
        `kind: expression` (an arithmetic formula over numeric parameters)."""
        return respond(await service.create_tool(caller(), body, origin), status_code=201)

    @router.get("/tools", response_model=ServiceResponse[list[ToolView]])
    async def list_tools() -> Response:
        return respond(
            [t.model_dump(mode="json") for t in await service.list_tools(caller().tenant_id)]
        )

    @router.delete("/tools/{name}", status_code=204)
    async def delete_tool(name: str) -> Response:
        await service.delete_tool(caller(), name)
        return Response(status_code=204)

    @router.post("/workflows", response_model=ServiceResponse[WorkflowResponse])
    async def workflow(body: WorkflowRequest) -> Response:
        """Run agents in sequence, each step's output becoming the next step's input."""
        return respond(await service.workflow(caller(), body))

    @router.post("", status_code=201, response_model=ServiceResponse[AgentView])
    async def create_agent(body: AgentSpec, origin: OriginQuery = None) -> Response:
        return respond(await service.create(caller(), body, origin), status_code=201)

    @router.get("", response_model=ServiceResponse[Page[AgentView]])
    async def list_agents(page: PageDep) -> Response:
        """Generated agents the caller may not read are left out."""
        return respond(await service.list_agents(caller(), page.limit, page.offset))

    @router.get("/{agent_id}", response_model=ServiceResponse[AgentView])
    async def get_agent(agent_id: str) -> Response:
        return respond(await service.get(caller(), agent_id))

    @router.put("/{agent_id}", response_model=ServiceResponse[AgentView])
    async def update_agent(agent_id: str, body: AgentUpdate) -> Response:
        return respond(await service.update(caller(), agent_id, body))

    @router.delete("/{agent_id}", status_code=204)
    async def delete_agent(agent_id: str) -> Response:
        await service.delete(caller(), agent_id)
        return Response(status_code=204)

    @router.post("/{agent_id}/execute", response_model=ServiceResponse[RunView])
    async def execute(agent_id: str, body: ExecuteRequest) -> Response:
        """Run a task now, or with `"async": true` as a job (202 + Location)."""
        identity = caller()
        if body.run_async:
            return accepted(await service.submit(identity, agent_id, body.task))
        view, _ = await service.execute(identity, agent_id, body.task)
        return respond(view)

    @router.post("/{agent_id}/chat", response_model=ServiceResponse[ChatResponse])
    async def chat(agent_id: str, body: ChatRequest) -> Response:
        """One chat turn in a session (created when `session_id` is omitted). With `stream`,
        server-sent events: `session`, `token`, `tool_call`, `tool_result`, then `done`."""
        identity = caller()
        if not body.stream:
            session_id, view = await service.chat(identity, agent_id, body.message, body.session_id)
            return respond(
                ChatResponse(
                    session_id=session_id, run_id=view.id, reply=view.output, status=view.status
                )
            )
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

        async def sink(event: dict[str, Any]) -> None:
            await queue.put(event)

        async def turn() -> None:
            try:
                session_id, view = await service.chat(
                    identity, agent_id, body.message, body.session_id, sink=sink
                )
                await queue.put(
                    {
                        "type": "done",
                        "session_id": session_id,
                        "run_id": view.id,
                        "reply": view.output,
                        "status": view.status,
                    }
                )
            except Exception as exc:
                await queue.put({"type": "error", "error": stream_error(exc)})
            finally:
                await queue.put(None)

        async def events() -> AsyncIterator[bytes]:
            task = asyncio.create_task(turn())
            try:
                while (event := await queue.get()) is not None:
                    yield _sse(event)
                yield b"data: [DONE]\n\n"
            finally:
                if not task.done():
                    task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={"cache-control": "no-cache"}
        )

    @router.get(
        "/{agent_id}/sessions/{session_id}", response_model=ServiceResponse[list[dict[str, Any]]]
    )
    async def session_messages(agent_id: str, session_id: str) -> Response:
        return respond(await service.session_messages(caller(), agent_id, session_id))

    @router.get("/{agent_id}/runs", response_model=ServiceResponse[Page[RunView]])
    async def list_runs(agent_id: str, page: PageDep) -> Response:
        return respond(await service.list_runs(caller(), agent_id, page.limit, page.offset))

    @router.get("/{agent_id}/runs/{run_id}", response_model=ServiceResponse[RunView])
    async def get_run(agent_id: str, run_id: str) -> Response:
        return respond(await service.get_run(caller(), agent_id, run_id))

    @router.get("/{agent_id}/memory", response_model=ServiceResponse[list[MemoryView]])
    async def list_memory(agent_id: str) -> Response:
        rows = await service.memories(caller(), agent_id)
        return respond(
            [
                MemoryView(
                    id=r.id, text=r.text, metadata=r.meta, created_at=r.created_at
                ).model_dump(mode="json")
                for r in rows
            ]
        )

    @router.post("/{agent_id}/memory", status_code=201, response_model=ServiceResponse[MemoryView])
    async def add_memory(agent_id: str, body: MemoryCreate) -> Response:
        return respond(await service.remember(caller(), agent_id, body), status_code=201)

    @router.delete("/{agent_id}/memory/{memory_id}", status_code=204)
    async def delete_memory(agent_id: str, memory_id: str) -> Response:
        await service.forget(caller(), agent_id, memory_id)
        return Response(status_code=204)

    return router
