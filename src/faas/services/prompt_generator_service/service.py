"""The prompt generator: a natural-language prompt → a validated agent or tool spec written by
the model through the gateway (writer.py), created through the Agent service and marked as
generated there (agent_generator.py, tool_generator.py); ratings and feedback per generated
resource (feedback.py); per-resource permissions, which the Agent service enforces by asking
the checks here (permissions.py). This class builds them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from faas.services.agent_service.client import AgentClient
from faas.services.gateway_service.client import GatewayClient
from faas.services.prompt_generator_service.agent_generator import AgentGenerator
from faas.services.prompt_generator_service.feedback import GenerationFeedback
from faas.services.prompt_generator_service.models import (
    Accessible,
    BulkCheck,
    CheckItem,
    FeedbackItem,
    FeedbackStats,
    GeneratedAgent,
    GeneratedTool,
    Kind,
    Permission,
    PermissionChange,
    PermissionCheck,
    PermissionList,
    RateRequest,
)
from faas.services.prompt_generator_service.permissions import ResourcePermissions
from faas.services.prompt_generator_service.tool_generator import ToolGenerator
from faas.services.prompt_generator_service.writer import SpecWriter
from faas.shared.context import Identity
from faas.shared.database import Database

if TYPE_CHECKING:
    from faas.kernel.clients import ServiceClients

DEFAULT_MODEL = "chat-default"


class PromptGeneratorService:
    name = "prompt_generator"

    def __init__(
        self, *, db: Database, clients: ServiceClients, default_model: str = DEFAULT_MODEL
    ) -> None:
        self.default_model = default_model
        writer = SpecWriter(GatewayClient(clients))
        agents = AgentClient(clients)
        self.agents = AgentGenerator(db, writer, agents)
        self.tools = ToolGenerator(db, writer, agents)
        self.ratings = GenerationFeedback(db)
        self.permissions = ResourcePermissions(db, agents)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def generate_agent(
        self, identity: Identity, prompt: str, model: str | None
    ) -> GeneratedAgent:
        return await self.agents.generate(identity, prompt, model or self.default_model)

    async def generate_tool(
        self, identity: Identity, prompt: str, model: str | None
    ) -> GeneratedTool:
        return await self.tools.generate(identity, prompt, model or self.default_model)

    async def rate(
        self, identity: Identity, kind: Kind, resource_id: str, body: RateRequest
    ) -> FeedbackItem:
        return await self.ratings.rate(identity, kind, resource_id, body)

    async def feedback(self, tenant: str, kind: Kind, resource_id: str) -> FeedbackStats:
        return await self.ratings.stats(tenant, kind, resource_id)

    async def change_permission(self, identity: Identity, body: PermissionChange) -> PermissionList:
        return await self.permissions.change(identity, body)

    async def list_permissions(self, tenant: str, kind: Kind, resource_id: str) -> PermissionList:
        return await self.permissions.of_resource(tenant, kind, resource_id)

    async def check(
        self, tenant: str, kind: Kind, resource_id: str, user_id: str, permission: Permission
    ) -> PermissionCheck:
        return await self.permissions.check(tenant, kind, resource_id, user_id, permission)

    async def bulk_check(self, tenant: str, user_id: str, items: list[CheckItem]) -> BulkCheck:
        return await self.permissions.bulk_check(tenant, user_id, items)

    async def accessible(
        self, tenant: str, kind: Kind, user_id: str, permission: Permission
    ) -> Accessible:
        return await self.permissions.accessible(tenant, kind, user_id, permission)
