"""Which deployment serves a request: priority groups in order, weighted shuffle inside a
group, skipping deployments whose breaker is open or whose own rpm/tpm is spent."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from faas.services.gateway_service.routing_table import Deployment, ModelConfig, RoutingTable
from faas.shared.breaker import BreakerState, CircuitBreaker
from faas.shared.exceptions import NotFound, ValidationFailed


@dataclass
class DeploymentState:
    deployment: Deployment
    breaker: CircuitBreaker
    minute: int = 0
    requests: int = 0
    tokens: int = 0

    def has_capacity(self, tokens: int, now: float) -> bool:
        minute = int(now // 60)
        if minute != self.minute:
            self.minute, self.requests, self.tokens = minute, 0, 0
        d = self.deployment
        if d.rpm is not None and self.requests + 1 > d.rpm:
            return False
        return d.tpm is None or self.tokens + tokens <= d.tpm


@dataclass
class Attempt:
    state: DeploymentState
    ticket: int

    @property
    def deployment(self) -> Deployment:
        return self.state.deployment

    def succeeded(self, tokens: int) -> None:
        self.state.breaker.record(self.ticket, ok=True)
        self.state.tokens += tokens

    def failed(self, *, count_against_breaker: bool) -> None:
        if count_against_breaker:
            self.state.breaker.record(self.ticket, ok=False)
        else:
            self.state.breaker.release(self.ticket)


@dataclass
class ModelRouter:
    table: RoutingTable
    breaker_failures: int = 3
    breaker_cooldown_s: float = 30.0
    rng: random.Random = field(default_factory=random.Random)
    clock: Callable[[], float] = time.monotonic
    _states: dict[tuple[str, int], DeploymentState] = field(default_factory=dict)

    def resolve(self, name: str | None, kind: str) -> ModelConfig:
        if name is None:
            return self.table.default_for("chat" if kind == "chat" else "embedding")
        model = self.table.get(name)
        if model is None:
            # In the message too: OpenAI's error shape (the /v1 routes) carries no details.
            known = [m.name for m in self.table.models]
            raise NotFound(
                f"unknown model {name!r}; known models: {', '.join(known)}",
                details={"known_models": known, "param": "model"},
            )
        if model.kind != kind:
            raise ValidationFailed(f"model {name!r} is a {model.kind} model, not {kind}")
        return model

    def state(self, model: ModelConfig, index: int) -> DeploymentState:
        key = (model.name, index)
        state = self._states.get(key)
        if state is None or state.deployment is not model.deployments[index]:
            breaker = CircuitBreaker(
                failure_threshold=self.breaker_failures,
                cooldown_s=self.breaker_cooldown_s,
                clock=self.clock,
            )
            state = DeploymentState(model.deployments[index], breaker)
            self._states[key] = state
        return state

    def order(self, model: ModelConfig) -> list[DeploymentState]:
        """Every deployment of the model in the order to try them."""
        groups: dict[int, list[DeploymentState]] = {}
        for index, deployment in enumerate(model.deployments):
            priority = deployment.priority if deployment.priority is not None else index
            groups.setdefault(priority, []).append(self.state(model, index))
        ordered: list[DeploymentState] = []
        for priority in sorted(groups):
            group = groups[priority]
            if len(group) > 1:
                # Weighted shuffle (Efraimidis-Spirakis): one draw per member.
                group = sorted(
                    group,
                    key=lambda s: self.rng.random() ** (1.0 / s.deployment.weight),
                    reverse=True,
                )
            ordered.extend(group)
        return ordered

    def admit(self, state: DeploymentState, tokens: int) -> Attempt | None:
        """An attempt on this deployment, or None when its breaker or own limits say skip."""
        if not state.has_capacity(tokens, time.time()):
            return None
        ticket = state.breaker.acquire()
        if ticket is None:
            return None
        state.requests += 1
        return Attempt(state, ticket)

    def breaker_state(self, model: ModelConfig, index: int) -> BreakerState:
        return self.state(model, index).breaker.state
