"""HTTP routes of the agent service: parse, call the use case, answer. One router per use
case, combined under /api/v1/agents (fixed paths before `/{agent_id}`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Query
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from faas.jobs.routes import accepted
from faas.services.agent_service.models import (
    AgentSpec,
    AgentUpdate,
    AgentView,
    ChatRequest,
    ChatResponse,
    ExecuteRequest,
    McpServerCreate,
    McpServerView,
    MemoryCreate,
    MemoryView,
    Origin,
    RunView,
    TenantToolSpec,
    ToolView,
    WorkflowRequest,
    WorkflowResponse,
)
from faas.shared.api import PageDep, caller, respond, stream_error
from faas.shared.contracts import Page, ServiceResponse
from faas.shared.direct_routes import body_as, body_doc, direct, path_parameter
from faas.shared.sse import DONE, sse_event

if TYPE_CHECKING:
    from faas.services.agent_service.service import AgentService

PREFIX = "/api/v1/agents"
EXECUTE_EXAMPLE = {"task": "What is 17 * 23?"}
OriginQuery = Annotated[
    Origin | None,
    Query(
        description="prompt_generator marks a generated resource: others then need its "
        "permissions (only narrows access; set by the Prompt Generator)"
    ),
]


def build_router(service: AgentService) -> APIRouter:
    router = APIRouter()
    parts = (
        tools_router,
        mcp_servers_router,
        workflows_router,
        agents_router,
        runs_router,
        chat_router,
        memory_router,
    )
    for part in parts:
        router.include_router(part(service))
    return router


def tools_router(service: AgentService) -> APIRouter:
    router = APIRouter(prefix=f"{PREFIX}/tools", tags=["agents"])

    @router.post("", status_code=201, response_model=ServiceResponse[ToolView])
    async def create_tool(body: TenantToolSpec, origin: OriginQuery = None) -> Response:
        """A tenant tool: `kind: http` (hosts limited by FAAS_AGENT_HTTP_ALLOWLIST) or
        `kind: expression` (an arithmetic formula over numeric parameters)."""
        return respond(await service.tools.create(caller(), body, origin), status_code=201)

    @router.get("", response_model=ServiceResponse[list[ToolView]])
    async def list_tools() -> Response:
        tools = await service.tools.list_all(caller().tenant_id)
        return respond([t.model_dump(mode="json") for t in tools])

    @router.delete("/{name}", status_code=204)
    async def delete_tool(name: str) -> Response:
        await service.tools.delete(caller(), name)
        return Response(status_code=204)

    return router


def mcp_servers_router(service: AgentService) -> APIRouter:
    router = APIRouter(prefix=f"{PREFIX}/mcp-servers", tags=["agents"])

    @router.post("", status_code=201, response_model=ServiceResponse[McpServerView])
    async def register_mcp_server(body: McpServerCreate) -> Response:
        """An MCP server (streamable HTTP) whose tools agents get by listing `mcp:<name>`
        (needs `admin`; hosts limited by FAAS_AGENT_HTTP_ALLOWLIST). `headers` are stored
        sealed and never returned."""
        return respond(await service.mcp_servers.register(caller(), body), status_code=201)

    @router.get("", response_model=ServiceResponse[list[McpServerView]])
    async def list_mcp_servers() -> Response:
        """The tenant's MCP servers, header values masked."""
        servers = await service.mcp_servers.list_all(caller().tenant_id)
        return respond([s.model_dump(mode="json") for s in servers])

    @router.delete("/{name}", status_code=204)
    async def delete_mcp_server(name: str) -> Response:
        await service.mcp_servers.delete(caller(), name)
        return Response(status_code=204)

    return router


def workflows_router(service: AgentService) -> APIRouter:
    router = APIRouter(prefix=PREFIX, tags=["agents"])

    @router.post("/workflows", response_model=ServiceResponse[WorkflowResponse])
    async def workflow(body: WorkflowRequest) -> Response:
        """Run agents in sequence, each step's output becoming the next step's input."""
        return respond(await service.workflows.run(caller(), body))

    return router


def agents_router(service: AgentService) -> APIRouter:
    router = APIRouter(prefix=PREFIX, tags=["agents"])

    @router.post("", status_code=201, response_model=ServiceResponse[AgentView])
    async def create_agent(body: AgentSpec, origin: OriginQuery = None) -> Response:
        return respond(await service.agents.create(caller(), body, origin), status_code=201)

    @router.get("", response_model=ServiceResponse[Page[AgentView]])
    async def list_agents(page: PageDep) -> Response:
        """Generated agents the caller may not read are left out."""
        return respond(await service.agents.list_visible(caller(), page.limit, page.offset))

    @router.get("/{agent_id}", response_model=ServiceResponse[AgentView])
    async def get_agent(agent_id: str) -> Response:
        return respond(await service.agents.get(caller(), agent_id))

    @router.put("/{agent_id}", response_model=ServiceResponse[AgentView])
    async def update_agent(agent_id: str, body: AgentUpdate) -> Response:
        return respond(await service.agents.update(caller(), agent_id, body))

    @router.delete("/{agent_id}", status_code=204)
    async def delete_agent(agent_id: str) -> Response:
        await service.agents.delete(caller(), agent_id)
        return Response(status_code=204)

    return router


def runs_router(service: AgentService) -> APIRouter:
    router = APIRouter(prefix=f"{PREFIX}/{{agent_id}}", tags=["agents"])

    @router.post(
        "/execute",
        response_model=ServiceResponse[RunView],
        openapi_extra=body_doc(ExecuteRequest, EXECUTE_EXAMPLE, [path_parameter("agent_id")]),
    )
    @direct  # every agent run starts here
    async def execute(request: Request) -> Response:
        """Run a task now, or with `"async": true` as a job (202 + Location)."""
        agent_id = request.path_params["agent_id"]
        body = await body_as(request, ExecuteRequest)
        if body.run_async:
            submitted = service.execution.submit(caller(), agent_id, body.task, body.budget_usd)
            return accepted(await submitted)
        view, _ = await service.execution.execute(
            caller(), agent_id, body.task, budget_usd=body.budget_usd
        )
        return respond(view)

    @router.get("/runs", response_model=ServiceResponse[Page[RunView]])
    async def list_runs(agent_id: str, page: PageDep) -> Response:
        return respond(await service.runs.history(caller(), agent_id, page.limit, page.offset))

    @router.get("/runs/{run_id}", response_model=ServiceResponse[RunView])
    async def get_run(agent_id: str, run_id: str) -> Response:
        return respond(await service.runs.get(caller(), agent_id, run_id))

    return router


async def _sse(events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    """The turn's events, then `error` if it failed after the 200 was sent, then [DONE]."""
    try:
        async for event in events:
            yield sse_event(event)
    except Exception as exc:
        yield sse_event({"type": "error", "error": stream_error(exc)})
    yield DONE


def chat_router(service: AgentService) -> APIRouter:
    router = APIRouter(prefix=f"{PREFIX}/{{agent_id}}", tags=["agents"])

    @router.post("/chat", response_model=ServiceResponse[ChatResponse])
    async def chat(agent_id: str, body: ChatRequest) -> Response:
        """One chat turn in a session (created when `session_id` is omitted). With `stream`,
        server-sent events: `token`, `tool_call`, `tool_result`, then `done`."""
        identity = caller()
        if body.stream:
            events = service.sessions.turn_events(identity, agent_id, body.message, body.session_id)
            return StreamingResponse(
                _sse(events), media_type="text/event-stream", headers={"cache-control": "no-cache"}
            )
        session_id, view = await service.sessions.chat(
            identity, agent_id, body.message, body.session_id
        )
        return respond(
            ChatResponse(
                session_id=session_id, run_id=view.id, reply=view.output, status=view.status
            )
        )

    @router.get("/sessions/{session_id}", response_model=ServiceResponse[list[dict[str, Any]]])
    async def session_messages(agent_id: str, session_id: str) -> Response:
        return respond(await service.sessions.messages(caller(), agent_id, session_id))

    return router


def memory_router(service: AgentService) -> APIRouter:
    router = APIRouter(prefix=f"{PREFIX}/{{agent_id}}/memory", tags=["agents"])

    @router.get("", response_model=ServiceResponse[list[MemoryView]])
    async def list_memory(agent_id: str) -> Response:
        memories = await service.memory.memories(caller(), agent_id)
        return respond([m.model_dump(mode="json") for m in memories])

    @router.post("", status_code=201, response_model=ServiceResponse[MemoryView])
    async def add_memory(agent_id: str, body: MemoryCreate) -> Response:
        return respond(await service.memory.remember(caller(), agent_id, body), status_code=201)

    @router.delete("/{memory_id}", status_code=204)
    async def delete_memory(agent_id: str, memory_id: str) -> Response:
        await service.memory.forget(caller(), agent_id, memory_id)
        return Response(status_code=204)

    return router
