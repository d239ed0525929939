"""How other services call the Prompt Generator: the permissions it holds on the agents and
tools it generated (the Agent service asks before letting anyone but their creator use them).
Requests and answers are the generator's own models; errors arrive as the shared exceptions."""

from __future__ import annotations

from faas.kernel.clients import ApiClient
from faas.services.prompt_generator_service.models import (
    Accessible,
    BulkCheck,
    BulkCheckRequest,
    Kind,
    Permission,
)
from faas.shared.context import new_id

CHECK_PATH = "/api/v1/prompt-generator/permissions/check"
ACCESSIBLE_PATH = "/api/v1/prompt-generator/permissions/accessible"


class PromptGeneratorClient(ApiClient):
    service = "prompt_generator"

    async def check_permissions(self, request: BulkCheckRequest) -> BulkCheck:
        """Whether the user holds each permission asked, in the order asked: one call for an
        agent and its generated tools together."""
        # A read-only question: the key makes the client retry it like a GET.
        return await self.model(
            BulkCheck,
            "POST",
            CHECK_PATH,
            json=request.model_dump(mode="json"),
            idempotency_key=new_id(),
        )

    async def accessible(self, user_id: str, kind: Kind, permission: Permission) -> Accessible:
        """The ids of the generated resources of `kind` the user owns or holds `permission`
        on (to filter a listing)."""
        return await self.model(
            Accessible,
            "GET",
            ACCESSIBLE_PATH,
            params={"user_id": user_id, "resource_type": kind, "permission": permission},
        )
