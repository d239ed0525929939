"""Authentication through the real app: every failure is the right status and an ErrorResponse."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from faas.shared.config import ConfigError, Settings
from tests.cache_app import build_cache_app
from tests.conftest import TEST_SECRET, auth, open_client


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async for c in open_client(build_cache_app(settings)):
        yield c


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False
    assert body["error"]["code"] == code
    assert body["request_id"] == response.headers["x-request-id"]
    assert body["correlation_id"] == response.headers["x-correlation-id"]
    return body


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    values: dict[str, Any] = {"tenant_id": "acme", "sub": "u1", "iat": now, "exp": now + 60}
    values.update(overrides)
    return values


async def test_missing_token_is_401(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/cache/k1")
    assert_error(response, 401, "unauthenticated")
    assert response.headers["www-authenticate"] == "Bearer"


async def test_non_bearer_scheme_is_401(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/cache/k1", headers={"Authorization": "Basic abc"})
    assert_error(response, 401, "unauthenticated")


async def test_expired_token_is_401(client: httpx.AsyncClient) -> None:
    token = jwt.encode(claims(exp=int(time.time()) - 3600), TEST_SECRET, algorithm="HS256")
    response = await client.get("/api/v1/cache/k1", headers={"Authorization": f"Bearer {token}"})
    body = assert_error(response, 401, "unauthenticated")
    assert "expired" in body["error"]["message"]


async def test_not_yet_valid_token_is_401(client: httpx.AsyncClient) -> None:
    token = jwt.encode(claims(nbf=int(time.time()) + 3600), TEST_SECRET, algorithm="HS256")
    response = await client.get("/api/v1/cache/k1", headers={"Authorization": f"Bearer {token}"})
    assert_error(response, 401, "unauthenticated")


async def test_token_without_exp_is_401(client: httpx.AsyncClient) -> None:
    values = claims()
    del values["exp"]
    token = jwt.encode(values, TEST_SECRET, algorithm="HS256")
    response = await client.get("/api/v1/cache/k1", headers={"Authorization": f"Bearer {token}"})
    assert_error(response, 401, "unauthenticated")


async def test_wrong_signature_is_401(client: httpx.AsyncClient) -> None:
    token = jwt.encode(claims(), "another-secret-" + "y" * 40, algorithm="HS256")
    response = await client.get("/api/v1/cache/k1", headers={"Authorization": f"Bearer {token}"})
    assert_error(response, 401, "unauthenticated")


async def test_alg_none_is_401(client: httpx.AsyncClient) -> None:
    token = jwt.encode(claims(), None, algorithm="none")
    response = await client.get("/api/v1/cache/k1", headers={"Authorization": f"Bearer {token}"})
    body = assert_error(response, 401, "unauthenticated")
    assert "'none'" in body["error"]["message"]


async def test_garbage_token_is_401(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/cache/k1", headers={"Authorization": "Bearer not.a.jwt"})
    assert_error(response, 401, "unauthenticated")


async def test_token_without_tenant_is_401(client: httpx.AsyncClient) -> None:
    token = jwt.encode(claims(tenant_id=None), TEST_SECRET, algorithm="HS256")
    response = await client.get("/api/v1/cache/k1", headers={"Authorization": f"Bearer {token}"})
    assert_error(response, 401, "unauthenticated")


async def test_tid_claim_is_accepted_as_tenant(client: httpx.AsyncClient) -> None:
    values = claims(tid="acme")
    del values["tenant_id"]
    token = jwt.encode(values, TEST_SECRET, algorithm="HS256")
    response = await client.get("/api/v1/cache/k1", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200


async def test_tenant_header_mismatch_is_403(client: httpx.AsyncClient) -> None:
    headers = auth("acme") | {"X-Tenant-ID": "globex"}
    response = await client.get("/api/v1/cache/k1", headers=headers)
    assert_error(response, 403, "forbidden")


async def test_matching_tenant_header_is_accepted(client: httpx.AsyncClient) -> None:
    headers = auth("acme") | {"X-Tenant-ID": "acme"}
    response = await client.get("/api/v1/cache/k1", headers=headers)
    assert response.status_code == 200


async def test_public_paths_need_no_token(client: httpx.AsyncClient) -> None:
    for path in ("/livez", "/readyz", "/metrics", "/openapi.json", "/docs"):
        response = await client.get(path)
        assert response.status_code == 200, path


async def test_correlation_id_is_kept_and_request_id_is_new(client: httpx.AsyncClient) -> None:
    response = await client.get(
        "/api/v1/cache/k1", headers=auth("acme") | {"X-Correlation-ID": "corr-1"}
    )
    assert response.headers["x-correlation-id"] == "corr-1"
    assert response.json()["correlation_id"] == "corr-1"
    other = await client.get(
        "/api/v1/cache/k1", headers=auth("acme") | {"X-Correlation-ID": "corr-1"}
    )
    assert other.headers["x-request-id"] != response.headers["x-request-id"]


def rsa_keys() -> tuple[bytes, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public.decode()


@pytest.fixture
async def rsa_client(
    make_settings: Callable[..., Settings],
) -> AsyncIterator[tuple[httpx.AsyncClient, bytes, str]]:
    private, public = rsa_keys()
    settings = make_settings(jwt_secret=None, jwt_public_key=public, env="production")
    async for c in open_client(build_cache_app(settings)):
        yield c, private, public


async def test_rs256_token_is_accepted_with_public_key(rsa_client: Any) -> None:
    client, private, _ = rsa_client
    token = jwt.encode(claims(), private, algorithm="RS256")
    response = await client.get("/api/v1/cache/k1", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    assert response.json()["data"]["found"] is False


async def test_hs256_signed_with_the_public_key_is_rejected(rsa_client: Any) -> None:
    # Algorithm confusion: the attacker signs HS256 using the (public) RSA key as the secret.
    client, _, public = rsa_client
    import base64
    import hashlib
    import hmac
    import json

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = b64(json.dumps(claims()).encode())
    signature = hmac.new(public.encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    token = f"{header}.{payload}.{b64(signature)}"
    response = await client.get("/api/v1/cache/k1", headers={"Authorization": f"Bearer {token}"})
    body = assert_error(response, 401, "unauthenticated")
    assert "HS256" in body["error"]["message"]


async def test_trusted_headers_mode_takes_tenant_from_headers(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(auth="trusted-headers")
    async for client in open_client(build_cache_app(settings)):
        missing = await client.get("/api/v1/cache/k1")
        assert_error(missing, 401, "unauthenticated")
        await client.post(
            "/api/v1/cache", json={"key": "k1", "value": 1}, headers={"X-Tenant-ID": "acme"}
        )
        mine = await client.get("/api/v1/cache/k1", headers={"X-Tenant-ID": "acme"})
        theirs = await client.get("/api/v1/cache/k1", headers={"X-Tenant-ID": "globex"})
        assert mine.json()["data"]["found"] is True
        assert theirs.json()["data"]["found"] is False


def test_auth_none_is_refused_in_production(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(ConfigError, match="FAAS_AUTH=none"):
        make_settings(auth="none", env="production").check_runnable()


@pytest.mark.parametrize("secret", [None, "secret", "short-but-not-default"])
def test_production_refuses_weak_secrets(
    make_settings: Callable[..., Settings], secret: str | None
) -> None:
    with pytest.raises(ConfigError, match="FAAS_JWT_SECRET"):
        make_settings(jwt_secret=secret, env="production").check_runnable()


def test_production_accepts_a_strong_secret(make_settings: Callable[..., Settings]) -> None:
    make_settings(env="production").check_runnable()
