"""What a caller may do at the gateway, decided in one place: which models it may call (the
tenant's allow and deny lists, its team's, its API key's) and which levels' limits a call of it
counts against (tenant, team, user, key, model, agent run). Both read only cached state: the
tenant's limits and teams (10 s per process), the key's fields carried by the identity, the run
(agent_run.py) — no SQL per request."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from faas.backends.limits import Scope
from faas.services.gateway_service import agent_run
from faas.services.gateway_service.limits import TenantLimits
from faas.services.gateway_service.routing import ModelRouter
from faas.services.gateway_service.routing_table import ModelConfig, ModelKind
from faas.services.gateway_service.teams import Team, Teams
from faas.services.gateway_service.tenant_limits import TenantLimitsStore
from faas.shared.context import Identity
from faas.shared.exceptions import Forbidden


@dataclass(frozen=True, slots=True)
class KeyCaps:
    """An API key's caps; its budget counts in the month window."""

    rpm: int | None
    tpm: int | None
    monthly_budget_usd: float | None
    daily_budget_usd: None = None


def refused_by(
    identity: Identity, limits: TenantLimits, team: Team | None, model: str
) -> tuple[str, dict[str, Any]] | None:
    """The rule that refuses `model` to this caller and its details, or None when it may."""
    if model in limits.denied_models:
        return "tenant deny list", {}
    if limits.allowed_models is not None and model not in limits.allowed_models:
        return "tenant allow list", {}
    if team is not None and model in team.denied_models:
        return "team deny list", {"team": team.name}
    if team is not None and team.allowed_models is not None and model not in team.allowed_models:
        return "team allow list", {"team": team.name}
    if identity.models is not None and model not in identity.models:
        return "API key model list", {"key_id": identity.key_id, "key": identity.key_name}
    return None


def caller_levels(
    identity: Identity, limits: TenantLimits, team: Team | None, model: str
) -> tuple[Scope, ...]:
    """The scopes besides the tenant's that this caller's call of `model` counts against."""
    tenant = identity.tenant_id
    levels: list[Scope] = []
    if team is not None and team.caps.limited:
        levels.append(Scope(tenant, team.caps, "team", team.name))
    if identity.user_id is not None:
        user = limits.user_caps(identity.user_id)
        if user is not None and user.limited:
            levels.append(Scope(tenant, user, "user", identity.user_id))
    if identity.key_id is not None and (
        identity.key_rpm or identity.key_tpm or identity.key_budget_usd is not None
    ):
        caps = KeyCaps(identity.key_rpm, identity.key_tpm, identity.key_budget_usd)
        levels.append(Scope(tenant, caps, "key", identity.key_id))
    by_model = limits.models.get(model)
    if by_model is not None and by_model.limited:
        levels.append(Scope(tenant, by_model, "model", model))
    run = agent_run.current()
    if run is not None:
        levels.append(Scope(tenant, run, "agent", run.run_id))
    return tuple(levels)


class CallerPolicy:
    def __init__(self, router: ModelRouter, limits: TenantLimitsStore, teams: Teams) -> None:
        self.router = router
        self.limits = limits
        self.teams = teams

    async def admit(self, identity: Identity, name: Any, kind: ModelKind) -> TenantLimits:
        """The tenant's limits carrying the caller's other levels, once the model (`name`, else
        the default of `kind`) is allowed to it; else 403 naming the rule that refuses it."""
        limits = await self.limits.get(identity.tenant_id)
        team = (await self.teams.of_tenant(identity.tenant_id)).of(identity)
        model = name if isinstance(name, str) else self.router.table.default_for(kind).name
        refusal = refused_by(identity, limits, team, model)
        if refusal is not None:
            rule, details = refusal
            by = f"for API key {details['key']!r}" if "key" in details else f"by the {rule}"
            raise Forbidden(
                f"model {model!r} is not allowed {by}",
                details={"model": model, "rule": rule, "param": "model", **details},
            )
        return limits.for_caller(caller_levels(identity, limits, team, model))

    async def visible(self, identity: Identity) -> list[ModelConfig]:
        """The models of the routing table the caller may call."""
        limits = await self.limits.get(identity.tenant_id)
        team = (await self.teams.of_tenant(identity.tenant_id)).of(identity)
        return [
            m
            for m in self.router.table.models
            if refused_by(identity, limits, team, m.name) is None
        ]
