"""Roles that stop at the tenant: `admin` acts inside its own tenant only; `platform:admin`,
minted only by `faas token --platform-admin`, is the one scope that may name another tenant."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import jwt
import pytest
from typer.testing import CliRunner

from faas.cli import app as cli
from faas.shared.auth import check_tenant_access, mint_token
from faas.shared.config import Settings
from faas.shared.context import Identity
from faas.shared.exceptions import Forbidden
from tests.conftest import TEST_SECRET, auth
from tests.platform_app import Platform, platform
from tests.support.mock_upstream import MockUpstream
from tests.unit.test_prompt_generator_api import AGENT_SPEC, generator_platform, json_answer

A = auth("acme")
A_ADMIN = auth("acme", "root", scopes=["admin"])
B_ADMIN = auth("globex", "root", scopes=["admin"])
PLATFORM = auth("ops", "operator", platform_admin=True)
LIMITS = "/api/v1/gateway/limits"


def test_admin_holds_every_scope_of_its_tenant_but_no_platform_scope() -> None:
    admin = Identity("acme", scopes=frozenset({"admin"}))
    assert admin.has_scope("admin") and admin.has_scope("prompts:write")
    assert not admin.has_scope("platform:admin")
    assert admin.may_act_for("acme") and not admin.may_act_for("globex")
    platform_admin = Identity("ops", scopes=frozenset({"platform:admin"}))
    assert platform_admin.has_scope("admin") and platform_admin.has_scope("platform:admin")
    assert platform_admin.may_act_for("acme")
    user = Identity("acme")
    assert not user.has_scope("admin") and not user.may_act_for("globex")


def test_naming_another_tenant_needs_the_platform_scope() -> None:
    check_tenant_access(Identity("acme", scopes=frozenset({"admin"})), "acme")
    check_tenant_access(Identity("ops", scopes=frozenset({"platform:admin"})), "acme")
    with pytest.raises(Forbidden) as refused:
        check_tenant_access(Identity("globex", scopes=frozenset({"admin"})), "acme")
    assert refused.value.details == {"tenant_id": "acme"}


def scopes_of(token: str) -> list[str]:
    claims = jwt.decode(token, TEST_SECRET, algorithms=["HS256"])
    return list(claims["scopes"])


def test_the_platform_scope_is_never_minted_as_a_plain_scope() -> None:
    for scope in ("platform:admin", "platform:anything"):
        with pytest.raises(ValueError, match="--platform-admin"):
            mint_token(TEST_SECRET, tenant_id="globex", user_id="u", scopes=["admin", scope])
    minted = mint_token(TEST_SECRET, tenant_id="ops", user_id="u", platform_admin=True)
    assert scopes_of(minted) == ["platform:admin"]


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    return {"FAAS_DATA_DIR": str(tmp_path / "data"), "FAAS_JWT_SECRET": TEST_SECRET}


def test_faas_token_refuses_the_platform_scope_and_points_to_the_flag(
    cli_env: dict[str, str],
) -> None:
    result = CliRunner().invoke(
        cli, ["token", "--tenant", "globex", "--scope", "platform:admin"], env=cli_env
    )
    assert result.exit_code == 2
    assert "--platform-admin" in result.output


def test_faas_token_platform_admin_mints_the_platform_scope(cli_env: dict[str, str]) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["token", "--tenant", "ops", "--platform-admin"], env=cli_env)
    assert result.exit_code == 0, result.output
    assert scopes_of(result.stdout.strip()) == ["platform:admin"]
    tenant = runner.invoke(cli, ["token", "--tenant", "acme", "--scope", "admin"], env=cli_env)
    assert scopes_of(tenant.stdout.strip()) == ["admin"]


# -- gateway limits --------------------------------------------------------------------------


@pytest.fixture
async def env(make_settings: Callable[..., Settings]) -> AsyncIterator[Platform]:
    async with platform(make_settings(), ["gateway"]) as env:
        yield env


async def rpm_of(env: Platform, headers: dict[str, str]) -> object:
    response = await env.client.get("/api/v1/gateway/rate-limits", headers=headers)
    return response.json()["data"]["limits"]["rpm"]


async def test_a_tenant_admin_cannot_set_another_tenants_limits(env: Platform) -> None:
    refused = await env.client.put(f"{LIMITS}/acme", json={"rpm": 1}, headers=B_ADMIN)
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"]["details"] == {"tenant_id": "acme"}
    assert await rpm_of(env, A) is None


async def test_a_tenant_admin_sets_its_own_tenants_limits(env: Platform) -> None:
    saved = await env.client.put(f"{LIMITS}/acme", json={"rpm": 7}, headers=A_ADMIN)
    assert saved.status_code == 200, saved.text
    assert await rpm_of(env, A) == 7
    user = await env.client.put(f"{LIMITS}/acme", json={"rpm": 1}, headers=A)
    assert user.status_code == 403


async def test_the_platform_admin_sets_any_tenants_limits(env: Platform) -> None:
    for tenant, rpm in (("acme", 11), ("globex", 12)):
        saved = await env.client.put(f"{LIMITS}/{tenant}", json={"rpm": rpm}, headers=PLATFORM)
        assert saved.status_code == 200, saved.text
    assert await rpm_of(env, A) == 11
    assert await rpm_of(env, B_ADMIN) == 12


async def test_reloading_the_routing_table_is_a_platform_power(env: Platform) -> None:
    for headers in (A, A_ADMIN):
        refused = await env.client.post("/api/v1/gateway/reload", headers=headers)
        assert refused.status_code == 403, refused.text
    reloaded = await env.client.post("/api/v1/gateway/reload", headers=PLATFORM)
    assert reloaded.status_code == 200, reloaded.text


# -- prompt-generator permissions ------------------------------------------------------------


async def test_a_tenant_admin_grants_permissions_only_in_its_own_tenant(
    tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    async with (
        MockUpstream() as up,
        generator_platform(tmp_path, make_settings, up) as env,
    ):
        up.control(script=[json_answer(AGENT_SPEC)])
        created = await env.client.post(
            "/api/v1/prompt/agents", json={"prompt": "an agent for refunds"}, headers=A
        )
        assert created.status_code == 201, created.text
        agent_id = created.json()["data"]["agent"]["id"]
        grant = {
            "resource_type": "agent",
            "resource_id": agent_id,
            "user_id": "mallory",
            "permission": "admin",
            "action": "grant",
        }

        async def change(headers: dict[str, str]) -> int:
            response = await env.client.post(
                "/api/v1/prompt/permissions", json=grant, headers=headers
            )
            return response.status_code

        assert await change(B_ADMIN) == 404  # not in globex
        assert await change(B_ADMIN | {"X-Tenant-ID": "acme"}) == 403
        listed = await env.client.get(
            "/api/v1/prompt/permissions", params={"resource_id": agent_id}, headers=A
        )
        assert listed.json()["data"]["grants"] == []
        assert await change(A_ADMIN) == 200
        assert await change(PLATFORM | {"X-Tenant-ID": "acme"}) == 200
