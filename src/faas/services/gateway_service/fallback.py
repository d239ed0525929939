"""Routing with fallback: a model's deployments are tried in routing order until one answers.
Retryable failures move on to the next deployment; the rest become the caller's error."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from faas.services.gateway_service.accounting import CallRecord
from faas.services.gateway_service.providers.base import MissingExtra, ProviderError
from faas.services.gateway_service.routing import Attempt, DeploymentState, ModelRouter
from faas.services.gateway_service.routing_table import Deployment, ModelConfig
from faas.shared.exceptions import (
    BadRequest,
    DependencyUnavailable,
    FaaSError,
    RateLimited,
    UpstreamError,
    UpstreamTimeout,
)

log = logging.getLogger("faas.gateway")
T = TypeVar("T")


async def first_success(
    router: ModelRouter,
    model: ModelConfig,
    tokens: int,
    call: CallRecord,
    invoke: Callable[[Deployment], Awaitable[T]],
    own_key: Callable[[Deployment], Deployment] | None = None,
) -> tuple[T, Attempt]:
    """The first deployment's answer to `invoke`, with the attempt to settle; raises the
    caller's error when no deployment answers. `own_key` swaps in the tenant's provider key."""
    failures: list[dict[str, Any]] = []
    for state in router.order(model):
        deployment = own_key(state.deployment) if own_key else state.deployment
        attempt = _attempt(router, state, deployment, tokens, failures)
        if attempt is None:
            continue
        started = time.perf_counter()
        try:
            result = await invoke(deployment)
        except ProviderError as exc:
            call.upstream_s += time.perf_counter() - started
            if exc.kind == "auth" and deployment is not state.deployment:
                # The tenant's own key was refused: its error, not the deployment's health.
                attempt.failed(count_against_breaker=False)
                raise UpstreamError(
                    f"deployment {deployment.id} rejected this tenant's provider key",
                    details={"deployment": deployment.id, "status": exc.status},
                ) from None
            _failed(attempt, exc, failures)
            continue
        except MissingExtra as exc:
            attempt.failed(count_against_breaker=False)
            failures.append(
                {"deployment": deployment.id, "kind": "unavailable", "message": str(exc)}
            )
            continue
        call.upstream_s += time.perf_counter() - started
        call.timings["upstream"] = call.upstream_s
        call.deployment = deployment
        call.failures = failures or None
        return result, attempt
    call.failures = failures
    raise exhausted(model, failures)


def _attempt(
    router: ModelRouter,
    state: DeploymentState,
    deployment: Deployment,
    tokens: int,
    failures: list[dict[str, Any]],
) -> Attempt | None:
    if deployment.unavailable:
        failures.append(
            {"deployment": deployment.id, "kind": "unavailable", "message": deployment.unavailable}
        )
        return None
    attempt = router.admit(state, tokens)
    if attempt is None:
        failures.append(
            {
                "deployment": state.deployment.id,
                "kind": "skipped",
                "message": "breaker open or deployment rpm/tpm reached",
            }
        )
    return attempt


def _failed(attempt: Attempt, exc: ProviderError, failures: list[dict[str, Any]]) -> None:
    deployment = attempt.deployment
    if not exc.retryable:
        attempt.failed(count_against_breaker=exc.kind == "auth")
        raise client_error(exc, deployment)
    attempt.failed(count_against_breaker=True)
    failures.append(
        {
            "deployment": deployment.id,
            "kind": exc.kind,
            "status": exc.status,
            "message": exc.message,
            "retry_after_s": exc.retry_after_s,
        }
    )
    log.info(
        "deployment failed; trying the next",
        extra={"deployment": deployment.id, "kind": exc.kind},
    )


def client_error(exc: ProviderError, deployment: Deployment) -> FaaSError:
    """A non-retryable upstream answer, as the caller should see it (never leaking keys)."""
    if exc.kind == "auth":
        return UpstreamError(
            f"deployment {deployment.id} rejected the gateway's credentials",
            details={"deployment": deployment.id, "status": exc.status},
        )
    details: dict[str, Any] = {"deployment": deployment.id, "status": exc.status}
    if exc.body:
        details["upstream"] = exc.body
    return BadRequest(f"upstream rejected the request: {exc.message}", details=details)


def exhausted(model: ModelConfig, failures: list[dict[str, Any]]) -> FaaSError:
    """The error for a call no deployment answered, chosen by how the attempts failed."""
    details = {"model": model.name, "attempts": failures}
    kinds = {f["kind"] for f in failures}
    if "unavailable" in kinds and kinds <= {"unavailable", "skipped"}:
        reasons = sorted({f["message"] for f in failures if f["kind"] == "unavailable"})
        return DependencyUnavailable(
            f"no deployment of {model.name!r} is available: {'; '.join(reasons)}",
            details=details,
        )
    if failures and kinds <= {"skipped"}:
        return DependencyUnavailable(
            f"no deployment of {model.name!r} can take requests now (breakers open or "
            "deployment limits reached)",
            details=details,
            headers={"Retry-After": "5"},
        )
    if kinds and kinds <= {"rate_limited", "skipped"}:
        retry = max((f.get("retry_after_s") or 1.0) for f in failures)
        return RateLimited(
            f"every deployment of {model.name!r} is rate limited upstream",
            retry_after_s=retry,
            details=details,
        )
    if kinds and kinds <= {"timeout", "skipped"}:
        return UpstreamTimeout(f"every deployment of {model.name!r} timed out", details=details)
    return UpstreamError(f"every deployment of {model.name!r} failed", details=details)
