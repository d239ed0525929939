"""How other services call the agent service: the tools an agent may use, and agents and
tenant tools to read or create (the Prompt Generator makes them from a description). Answers
are the agent service's own models; errors arrive as the shared exceptions (an agent that does
not exist, or that the caller may not see, stays a 404)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from pydantic import BaseModel, TypeAdapter

from faas.kernel.clients import ApiClient
from faas.services.agent_service.models import AgentSpec, AgentView, Origin, ToolView

TOOLS = TypeAdapter(list[ToolView])


def _origin(origin: Origin | None) -> dict[str, Any] | None:
    return {"origin": origin} if origin else None


class AgentClient(ApiClient):
    service = "agent"

    async def list_tools(self) -> list[ToolView]:
        """The built-in tools and the caller's tenant tools, e.g. to tell a model which names
        already exist."""
        return TOOLS.validate_python(await self.data("GET", "/api/v1/agents/tools"))

    async def get_agent(self, agent_id: str) -> AgentView:
        """One agent of the caller's tenant; `NotFound` when there is none by that id."""
        return await self.model(AgentView, "GET", f"/api/v1/agents/{quote(agent_id, safe='')}")

    async def create_agent(self, spec: AgentSpec, *, origin: Origin | None = None) -> AgentView:
        """A new agent; `origin` marks it as made by that service, whose permissions then
        govern who else may use it."""
        return await self.model(
            AgentView,
            "POST",
            "/api/v1/agents",
            json=spec.model_dump(mode="json"),
            params=_origin(origin),
        )

    async def create_tool(self, spec: BaseModel, *, origin: Origin | None = None) -> ToolView:
        """A new tenant tool from an `HttpToolSpec` or `ExpressionToolSpec` (the agent
        service checks which); `origin` as for `create_agent`."""
        return await self.model(
            ToolView,
            "POST",
            "/api/v1/agents/tools",
            json=spec.model_dump(mode="json"),
            params=_origin(origin),
        )
