"""Admission before any upstream call: the prompt must fit the model's context window, and the
limits of every level the call counts at (tenant, team, user, key, model, agent run) must hold the
most the call can bill — reserved atomically in all of them up front and reconciled against the
real usage afterwards."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from faas.backends.limits import LimitStore, Reservation
from faas.services.gateway_service.accounting import CallRecord, estimate_prompt_tokens
from faas.services.gateway_service.limits import TenantLimits
from faas.services.gateway_service.routing_table import ModelConfig
from faas.shared.cpu import run_cpu
from faas.shared.exceptions import PayloadTooLarge
from faas.shared.tokens import count_chat_tokens


def context_limit(model: ModelConfig) -> int | None:
    windows = [d.context_window for d in model.deployments if d.context_window]
    return max(windows) if windows else None


def worst_case(
    model: ModelConfig, prompt_tokens: int, body: dict[str, Any], fallback_output: int
) -> tuple[int, float]:
    """Tokens and USD to reserve at admission: the most any deployment of the model can bill
    for this request (its max_tokens, else the deployment's max output), at its own price."""
    asked = body.get("max_tokens") or body.get("max_completion_tokens")
    tokens, cost = 0, 0.0
    for d in model.deployments:
        output = d.output_bound(prompt_tokens, int(asked) if asked else None, fallback_output)
        tokens = max(tokens, prompt_tokens + output)
        cost = max(cost, d.price.cost(prompt_tokens, output))
    return tokens, cost


def exact_prompt_tokens(body: dict[str, Any]) -> int:
    return count_chat_tokens(body["messages"], body.get("tools"))


async def check_context(model: ModelConfig, body: dict[str, Any]) -> int:
    """The prompt's token count for admission; refuses a prompt over the model's window."""
    estimate = estimate_prompt_tokens(body["messages"])
    window = context_limit(model)
    # Count exactly only when the cheap estimate comes near the window.
    if window is not None and estimate * 4 // 3 > window:
        exact = await run_cpu(estimate * 4, exact_prompt_tokens, body)
        if exact > window:
            raise PayloadTooLarge(
                f"the prompt is {exact} tokens; model {model.name!r} accepts {window}",
                details={"prompt_tokens": exact, "context_window": window},
            )
        return max(estimate, exact)
    return estimate


class Admission:
    """Reserves against every level's limits before a call and reconciles after it. `limits` are
    the tenant's, carrying the caller's other levels (`TenantLimits.for_caller`)."""

    def __init__(self, limits: LimitStore, completion_estimate_tokens: int) -> None:
        self.limits = limits
        self.completion_estimate = completion_estimate_tokens
        # Told each reconciled cost (alerts.py): an in-memory add, checked later off the path.
        self.on_spend: Callable[[str, float], None] | None = None

    async def reserve_chat(
        self,
        tenant: str,
        limits: TenantLimits,
        model: ModelConfig,
        body: dict[str, Any],
        prompt_tokens: int,
        call: CallRecord,
    ) -> tuple[Reservation, int]:
        """The reservation for a chat call and the token estimate it was made for."""
        estimate, worst_cost = worst_case(model, prompt_tokens, body, self.completion_estimate)
        return await self.reserve(tenant, limits, estimate, worst_cost, call), estimate

    async def reserve(
        self, tenant: str, limits: TenantLimits, tokens: int, cost_usd: float, call: CallRecord
    ) -> Reservation:
        mark = time.perf_counter()
        reservation = await self.limits.reserve_scopes(limits.scopes(tenant), tokens, cost_usd)
        call.mark("limits", mark)
        return reservation

    async def count_request(self, tenant: str, limits: TenantLimits) -> None:
        """A cache hit still counts as a request against the rate limit, but costs no tokens."""
        await self.limits.reserve_scopes(limits.scopes(tenant), 0, 0.0)

    async def reconcile(self, reservation: Reservation, call: CallRecord) -> None:
        """Replaces the reservation with what the call used and cost."""
        tokens = call.usage.total_tokens if call.usage is not None else 0
        cost = call.cost_usd
        await self.limits.reconcile(reservation, tokens, cost)
        if self.on_spend is not None and cost > 0:
            self.on_spend(reservation.tenant_id, cost)

    async def release(self, reservation: Reservation) -> None:
        """Gives the whole reservation back: the call billed nothing."""
        await self.limits.reconcile(reservation, 0, 0.0)
