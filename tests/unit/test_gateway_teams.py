"""Teams and the levels a gateway call counts at, through the real app: teams are an admin's,
inside one tenant; a team's, user's, key's and model's caps refuse with 429 naming the level; a
model refused by a tenant or team list is 403 naming the rule, and /v1/models hides it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from faas.shared.auth import identity_from_claims
from faas.shared.config import Settings
from tests.conftest import auth
from tests.gateway_app import GatewayEnv, gateway_env, routing

TEAMS = "/api/v1/teams"
CHAT = "/v1/chat/completions"
GENERATE = "/api/v1/gateway/generate"
ADMIN = auth("acme", "root", scopes=["admin"])
ANN = auth("acme", "ann")
BOB = auth("acme", "bob")
OTHER_ADMIN = auth("globex", "root", scopes=["admin"])


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def ask(model: str = "chat") -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def env(make_settings: Callable[..., Settings]) -> AsyncIterator[GatewayEnv]:
    mock = {"provider": "mock", "model": "faas-mock"}
    table = routing(
        {"name": "chat", "deployments": [mock]},
        {"name": "other", "deployments": [mock]},
        {"name": "priced", "deployments": [mock | {"price": {"input_per_1k": 1.0}}]},
    )
    async with gateway_env(make_settings(), table) as gateway:
        yield gateway


async def new_team(env: GatewayEnv, **body: Any) -> dict[str, Any]:
    response = await env.client.post(TEAMS, json={"name": "ml", **body}, headers=ADMIN)
    assert response.status_code == 201, response.text
    return dict(response.json()["data"])


async def new_key(env: GatewayEnv, **body: Any) -> dict[str, str]:
    response = await env.client.post("/api/v1/keys", json={"name": "k", **body}, headers=ADMIN)
    assert response.status_code == 201, response.text
    return bearer(response.json()["data"]["key"])


async def set_limits(env: GatewayEnv, **limits: Any) -> None:
    response = await env.client.put("/api/v1/gateway/limits/acme", json=limits, headers=ADMIN)
    assert response.status_code == 200, response.text


async def refusal(env: GatewayEnv, headers: dict[str, str], model: str = "chat") -> Any:
    """The native error of a call that must be refused with 429."""
    response = await env.client.post(GENERATE, json=ask(model), headers=headers)
    assert response.status_code == 429, response.text
    return response.json()["error"]


async def test_an_admin_creates_reads_changes_and_deletes_a_team(env: GatewayEnv) -> None:
    team = await new_team(env, members=["ann"], limits={"rpm": 5}, metadata={"cost": "r&d"})
    assert (team["name"], team["members"], team["limits"]["rpm"]) == ("ml", ["ann"], 5)
    url = f"{TEAMS}/{team['id']}"
    assert (await env.client.get(url, headers=ADMIN)).json()["data"]["metadata"] == {"cost": "r&d"}
    listed = (await env.client.get(TEAMS, headers=ADMIN)).json()["data"]
    assert (listed["total"], [t["id"] for t in listed["items"]]) == (1, [team["id"]])

    patched = await env.client.patch(
        url, json={"members": ["ann", "bob"], "denied_models": ["other"]}, headers=ADMIN
    )
    assert patched.status_code == 200, patched.text
    data = patched.json()["data"]
    assert (data["members"], data["denied_models"], data["limits"]["rpm"]) == (
        ["ann", "bob"],
        ["other"],
        5,
    )
    assert (await env.client.delete(url, headers=ADMIN)).status_code == 200
    assert (await env.client.get(url, headers=ADMIN)).status_code == 404


async def test_teams_belong_to_one_tenant_and_need_an_admin(env: GatewayEnv) -> None:
    team = await new_team(env)
    url = f"{TEAMS}/{team['id']}"
    assert (await env.client.get(url, headers=OTHER_ADMIN)).status_code == 404
    assert (await env.client.delete(url, headers=OTHER_ADMIN)).status_code == 404
    assert (await env.client.get(TEAMS, headers=OTHER_ADMIN)).json()["data"]["total"] == 0
    assert (await env.client.get(TEAMS, headers=ANN)).status_code == 403
    assert (await env.client.post(TEAMS, json={"name": "x"}, headers=ANN)).status_code == 403
    # The same name in another tenant is another team.
    other = await env.client.post(TEAMS, json={"name": "ml"}, headers=OTHER_ADMIN)
    assert other.status_code == 201


async def test_a_name_or_a_member_taken_in_the_tenant_is_a_conflict(env: GatewayEnv) -> None:
    first = await new_team(env, members=["ann"])
    again = await env.client.post(TEAMS, json={"name": "ml"}, headers=ADMIN)
    assert again.status_code == 409
    taken = await env.client.post(TEAMS, json={"name": "ops", "members": ["ann"]}, headers=ADMIN)
    assert taken.status_code == 409
    assert taken.json()["error"]["details"]["team_id"] == first["id"]
    bad = await env.client.post(TEAMS, json={"name": "x", "limits": {"rpm": 0}}, headers=ADMIN)
    assert bad.status_code == 422


async def test_a_teams_keys_share_its_cap_and_are_refused_naming_the_team(
    env: GatewayEnv,
) -> None:
    await new_team(env, limits={"rpm": 2})
    first, second = await new_key(env, team="ml"), await new_key(env, team="ml")
    assert (await env.client.post(CHAT, json=ask(), headers=first)).status_code == 200
    assert (await env.client.post(CHAT, json=ask(), headers=second)).status_code == 200
    error = await refusal(env, first)
    assert error["details"] == {"level": "team", "limit": "rpm"}
    assert "team 'ml'" in error["message"]
    # Outside the team, the tenant still serves.
    assert (await env.client.post(CHAT, json=ask(), headers=ANN)).status_code == 200


async def test_a_member_is_counted_in_the_team_and_a_change_applies_at_once(
    env: GatewayEnv,
) -> None:
    team = await new_team(env, members=["ann"], limits={"rpm": 1})
    assert (await env.client.post(CHAT, json=ask(), headers=ANN)).status_code == 200
    assert (await refusal(env, ANN))["details"]["level"] == "team"
    assert (await env.client.post(CHAT, json=ask(), headers=BOB)).status_code == 200
    raised = await env.client.patch(
        f"{TEAMS}/{team['id']}", json={"limits": {"rpm": 10}}, headers=ADMIN
    )
    assert raised.status_code == 200
    assert (await env.client.post(CHAT, json=ask(), headers=ANN)).status_code == 200


async def test_every_user_gets_the_per_user_cap_unless_named(env: GatewayEnv) -> None:
    await set_limits(env, rpm=100, per_user={"rpm": 1}, users={"bob": {"rpm": 2}})
    assert (await env.client.post(CHAT, json=ask(), headers=ANN)).status_code == 200
    error = await refusal(env, ANN)
    assert error["details"] == {"level": "user", "limit": "rpm"}
    for _ in range(2):
        assert (await env.client.post(CHAT, json=ask(), headers=BOB)).status_code == 200
    assert (await refusal(env, BOB))["details"]["level"] == "user"


async def test_a_keys_own_rpm_is_enforced(env: GatewayEnv) -> None:
    key = await new_key(env, rpm=1)
    assert (await env.client.post(CHAT, json=ask(), headers=key)).status_code == 200
    assert (await refusal(env, key))["details"] == {"level": "key", "limit": "rpm"}
    # The key's user (none) and the tenant are not exhausted.
    assert (await env.client.post(CHAT, json=ask(), headers=ANN)).status_code == 200


async def test_a_keys_budget_caps_what_its_calls_may_cost(env: GatewayEnv) -> None:
    spent = await new_key(env, budget_usd=0.0)
    error = await refusal(env, spent, "priced")
    assert error["details"] == {"level": "key", "limit": "monthly_budget"}
    # A free model costs nothing against it.
    assert (await env.client.post(CHAT, json=ask(), headers=spent)).status_code == 200
    roomy = await new_key(env, budget_usd=100.0)
    assert (await env.client.post(CHAT, json=ask("priced"), headers=roomy)).status_code == 200


async def test_limits_of_every_level_are_bounded(env: GatewayEnv) -> None:
    url = "/api/v1/gateway/limits/acme"
    for bad in (
        {"per_user": {"rpm": 0}},
        {"users": {"ann": {"monthly_budget_usd": -1}}},
        {"models": {"chat": {"tpm": 10**12}}},
        {"users": {"ann": {"rpm": 1, "extra": 2}}},
        {"denied_models": [""]},
    ):
        response = await env.client.put(url, json=bad, headers=ADMIN)
        assert response.status_code == 422, (bad, response.text)


async def test_a_models_cap_counts_every_call_of_it_in_the_tenant(env: GatewayEnv) -> None:
    await set_limits(env, models={"chat": {"rpm": 1}})
    assert (await env.client.post(CHAT, json=ask(), headers=ANN)).status_code == 200
    error = await refusal(env, BOB)
    assert error["details"] == {"level": "model", "limit": "rpm"}
    assert (await env.client.post(CHAT, json=ask("other"), headers=BOB)).status_code == 200


async def test_the_openai_surface_names_the_level_in_its_message(env: GatewayEnv) -> None:
    await set_limits(env, per_user={"rpm": 1})
    await env.client.post(CHAT, json=ask(), headers=ANN)
    refused = await env.client.post(CHAT, json=ask(), headers=ANN)
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert error["type"] == "rate_limit_error"
    assert error["message"] == "user 'ann' rpm exceeded"


async def model_ids(env: GatewayEnv, headers: dict[str, str]) -> list[str]:
    response = await env.client.get("/v1/models", headers=headers)
    return [m["id"] for m in response.json()["data"]]


async def forbidden(env: GatewayEnv, headers: dict[str, str], model: str) -> dict[str, Any]:
    response = await env.client.post(GENERATE, json=ask(model), headers=headers)
    assert response.status_code == 403, response.text
    return dict(response.json()["error"])


async def test_a_tenant_deny_list_refuses_naming_the_rule_and_hides_the_model(
    env: GatewayEnv,
) -> None:
    await set_limits(env, denied_models=["other"])
    error = await forbidden(env, ANN, "other")
    assert error["details"]["rule"] == "tenant deny list"
    assert error["message"] == "model 'other' is not allowed by the tenant deny list"
    assert await model_ids(env, ANN) == ["chat", "priced"]
    openai = await env.client.post(CHAT, json=ask("other"), headers=ANN)
    assert (openai.status_code, openai.json()["error"]["type"]) == (403, "permission_error")


async def test_tenant_and_team_allow_lists_narrow_what_a_caller_may_use(env: GatewayEnv) -> None:
    await set_limits(env, allowed_models=["chat"])
    assert (await forbidden(env, ANN, "other"))["details"]["rule"] == "tenant allow list"
    await set_limits(env)
    await new_team(env, members=["ann"], allowed_models=["other"])
    error = await forbidden(env, ANN, "chat")
    assert (error["details"]["rule"], error["details"]["team"]) == ("team allow list", "ml")
    assert await model_ids(env, ANN) == ["other"]
    assert await model_ids(env, BOB) == ["chat", "other", "priced"]
    key = await new_key(env, team="ml", models=["chat", "other"])
    assert (await forbidden(env, key, "chat"))["details"]["rule"] == "team allow list"


async def test_a_team_deny_list_applies_to_the_teams_keys(env: GatewayEnv) -> None:
    await new_team(env, denied_models=["other"])
    key = await new_key(env, team="ml")
    assert (await forbidden(env, key, "other"))["details"]["rule"] == "team deny list"
    assert await model_ids(env, key) == ["chat", "priced"]


def test_a_jwt_team_claim_puts_the_caller_in_the_team() -> None:
    identity = identity_from_claims({"tenant_id": "acme", "sub": "ann", "team": "ml"})
    assert identity.team == "ml"
    assert identity_from_claims({"tenant_id": "acme", "team": 7}).team is None
    assert identity_from_claims({"tenant_id": "acme", "team": "x" * 129}).team is None
