"""The gateway's usage event is built as a plain dict (validating and dumping the model cost ~7 %
of the gateway's CPU per request): it must be exactly what `UsageEvent(...).model_dump()` gives,
field for field and in order, for every kind of call, odd figures included."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from faas.services.gateway_service import request_tags
from faas.services.gateway_service.accounting import CallRecord, usage_event
from faas.services.gateway_service.models import UsageEvent
from faas.services.gateway_service.providers.base import Usage
from faas.services.gateway_service.routing_table import Deployment, Price
from faas.shared.context import Identity, RequestContext, reset_context, set_context

PRICED = Deployment(
    provider="openai", model="gpt-x", price=Price(input_per_1k=0.5, output_per_1k=1.5)
)


def answered() -> CallRecord:
    call = CallRecord("chat", model="chat-default", deployment=PRICED, upstream_s=0.0123)
    call.usage = Usage(prompt_tokens=12, completion_tokens=7, cached_tokens=2, reasoning_tokens=1)
    return call


def cached() -> CallRecord:
    call = answered()
    call.cached = "semantic"
    return call


def failed() -> CallRecord:
    call = CallRecord("embeddings", model="embed-default", status="error", error_code="upstream")
    call.stream = True
    return call


def odd_figures() -> CallRecord:
    """A provider that reports negative tokens, and a price that makes the cost infinite: the
    model's coercions read both as 0 rather than losing the record of a call that was made."""
    price = Price(input_per_1k=math.inf)
    call = CallRecord("completions", model="m", deployment=Deployment(provider="mock", price=price))
    call.usage = Usage(prompt_tokens=-5, completion_tokens=3, source="estimated")
    return call


@pytest.mark.parametrize("make", [answered, cached, failed, odd_figures])
def test_the_event_is_what_the_model_would_dump(make: Callable[[], CallRecord]) -> None:
    identity = Identity("acme", user_id="u1", key_id="k1", team="search")
    token = set_context(RequestContext(correlation_id="c1", request_id="r1", identity=identity))
    request_tags.begin("team=search,nightly")
    try:
        data = usage_event(identity, make())
    finally:
        reset_context(token)
        request_tags.begin(None)
    assert list(data) == list(UsageEvent.model_fields)
    assert data == UsageEvent.model_validate(data).model_dump()
    assert data["tags"] == {"team": "search", "nightly": ""}
    assert (data["correlation_id"], data["request_id"]) == ("c1", "r1")


def test_figures_are_coerced_as_the_model_does() -> None:
    data = usage_event(Identity("acme"), odd_figures())
    assert (data["prompt_tokens"], data["completion_tokens"], data["total_tokens"]) == (0, 3, 0)
    assert data["cost_usd"] == 0.0
    assert data["correlation_id"] is None  # no request context
    answer = usage_event(Identity("acme"), answered())
    assert answer["cost_usd"] == pytest.approx((12 * 0.5 + 7 * 1.5) / 1000)
    assert answer["upstream_ms"] == 12.3
