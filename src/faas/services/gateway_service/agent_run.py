"""The agent run a gateway call belongs to: the `x-faas-agent-run` header (`<run id>;
budget_usd=<USD>`), which the agent service's gateway client sends on every call of a run that
has a budget. Every such call then also reserves against the run's budget (level `agent`).
Held in a context variable that the /v1 routes set at the start of every request.

A caller can only add a cap this way, never lift one: the run's budget is another level, counted
next to the tenant's, team's, user's, key's and model's."""

from __future__ import annotations

import math
import re
from contextvars import ContextVar
from dataclasses import dataclass

from faas.backends.limits import MAX_BUDGET_USD
from faas.services.gateway_service.client import AGENT_RUN_HEADER
from faas.shared.exceptions import BadRequest

HEADER = AGENT_RUN_HEADER
_VALUE = re.compile(r"^\s*([A-Za-z0-9_.:-]{1,64})\s*;\s*budget_usd\s*=\s*([0-9.eE+-]{1,32})\s*$")


@dataclass(frozen=True, slots=True)
class AgentRunBudget:
    """Caps of an agent run (read as the limit store's `Caps`): its budget, for the run's
    lifetime (counted in the month window)."""

    run_id: str
    monthly_budget_usd: float
    rpm: None = None
    tpm: None = None
    daily_budget_usd: None = None


_run: ContextVar[AgentRunBudget | None] = ContextVar("faas_gateway_agent_run", default=None)


def current() -> AgentRunBudget | None:
    return _run.get()


def begin(header: str | None) -> None:
    """Start a request's run (None: the request belongs to no budgeted run)."""
    _run.set(parse(header) if header else None)


def parse(value: str) -> AgentRunBudget:
    match = _VALUE.match(value)
    budget = _number(match.group(2)) if match else None
    if match is None or budget is None or not 0 <= budget <= MAX_BUDGET_USD:
        raise BadRequest(
            f"{HEADER} must be '<run id>;budget_usd=<0 to {MAX_BUDGET_USD}>'",
            details={"header": HEADER},
        )
    return AgentRunBudget(match.group(1), budget)


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None
