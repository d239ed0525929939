"""What every call flow shares: admission against the tenant's limits, routing with fallback,
and the usage record — including the settlement of a call that no deployment answered."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from faas.backends.limits import Reservation
from faas.services.gateway_service.accounting import CallRecord, UsageRecorder
from faas.services.gateway_service.admission import Admission
from faas.services.gateway_service.fallback import first_success
from faas.services.gateway_service.provider_keys import ProviderKeys
from faas.services.gateway_service.providers.base import ChatRequest
from faas.services.gateway_service.providers.pool import Providers
from faas.services.gateway_service.routing import Attempt, ModelRouter
from faas.services.gateway_service.routing_table import Deployment, ModelConfig
from faas.shared.context import Identity
from faas.shared.exceptions import FaaSError

T = TypeVar("T")

# Request fields the gateway consumes itself; the rest goes upstream as given.
GATEWAY_FIELDS = frozenset({"model", "messages", "stream", "stream_options", "cache"})


def chat_request(body: dict[str, Any]) -> ChatRequest:
    """The request as a provider receives it."""
    return ChatRequest(
        messages=body["messages"],
        params={k: v for k, v in body.items() if k not in GATEWAY_FIELDS},
    )


class Dispatcher:
    def __init__(
        self,
        *,
        router: ModelRouter,
        providers: Providers,
        admission: Admission,
        recorder: UsageRecorder,
        provider_keys: ProviderKeys | None = None,
    ) -> None:
        self.router = router
        self.providers = providers
        self.admission = admission
        self.recorder = recorder
        self.provider_keys = provider_keys

    async def route(
        self,
        identity: Identity,
        model: ModelConfig,
        tokens: int,
        call: CallRecord,
        reservation: Reservation,
        invoke: Callable[[Deployment], Awaitable[T]],
    ) -> tuple[T, Attempt]:
        """`invoke` on the first deployment that answers; when none does, the reservation is
        released and the failed call recorded before the error is raised."""
        try:
            own_key = None
            if self.provider_keys is not None and self.provider_keys.box is not None:
                keys = await self.provider_keys.for_tenant(identity.tenant_id)
                own_key = functools.partial(keys.deployment, model) if keys.keys else None
            return await first_success(self.router, model, tokens, call, invoke, own_key)
        except FaaSError as exc:
            await self.admission.release(reservation)
            call.status, call.error_code = "error", exc.code
            await self.recorder.record(identity, call)
            raise
