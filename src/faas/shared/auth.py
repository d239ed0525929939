"""Bearer-token verification (HS256 secret, RS256/ES256 public key or JWKS) and token minting."""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

import jwt

from faas.shared.config import Settings
from faas.shared.context import PLATFORM_ADMIN, PLATFORM_PREFIX, Identity
from faas.shared.exceptions import Forbidden, Unauthenticated

TENANT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
ASYMMETRIC_ALGORITHMS = ["RS256", "RS384", "RS512", "ES256", "ES384", "PS256"]
SECRET_FILE = "jwt_secret"
# Bearer tokens with this prefix are API keys (`faas.keys`), never JWTs.
API_KEY_PREFIX = "fk-"


class KeyResolver(Protocol):
    """Turns an API key (`fk-…`) into the identity it stands for. Implemented above this layer
    (`faas.keys`) and handed to `TokenVerifier` by the composition root."""

    async def resolve(self, key: str) -> Identity:
        """The key's identity; `Unauthenticated` when it is unknown, revoked or expired."""
        ...


def valid_tenant(tenant_id: str) -> bool:
    return bool(TENANT_RE.match(tenant_id))


def dev_secret(data_dir: Path) -> str:
    """The development signing secret, created once in the data dir and reused."""
    path = data_dir / SECRET_FILE
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(48)
    path.write_text(value)
    path.chmod(0o600)
    return value


def signing_secret(settings: Settings, *, create: bool = True) -> str | None:
    """FAAS_JWT_SECRET, else in development the data dir's secret (made if `create`)."""
    if settings.jwt_secret is not None and settings.jwt_secret.get_secret_value():
        return settings.jwt_secret.get_secret_value()
    if settings.env == "development" and not (settings.jwt_public_key or settings.jwks_url):
        if not create and not (settings.data_dir / SECRET_FILE).exists():
            return None
        return dev_secret(settings.data_dir)
    return None


def mint_token(
    secret: str,
    *,
    tenant_id: str,
    user_id: str,
    ttl_s: float = 3600.0,
    scopes: Iterable[str] = (),
    issuer: str | None = None,
    audience: str | None = None,
    platform_admin: bool = False,
) -> str:
    """An HS256 token. Platform scopes are granted only through `platform_admin`, never in
    `scopes`, so no path that mints a tenant's token can grant them by passing a string."""
    if not valid_tenant(tenant_id):
        raise ValueError(f"invalid tenant id {tenant_id!r}: use letters, digits, '_', '.', '-'")
    granted = set(scopes)
    platform = sorted(s for s in granted if s.startswith(PLATFORM_PREFIX))
    if platform:
        raise ValueError(
            f"{', '.join(platform)} cannot be granted as a scope: a platform admin token is "
            "minted with `faas token --platform-admin`"
        )
    if platform_admin:
        granted.add(PLATFORM_ADMIN)
    now = int(time.time())
    claims: dict[str, Any] = {
        "tenant_id": tenant_id,
        "sub": user_id,
        "iat": now,
        "nbf": now,
        "exp": now + int(ttl_s),
        "scopes": sorted(granted),
    }
    if issuer:
        claims["iss"] = issuer
    if audience:
        claims["aud"] = audience
    return jwt.encode(claims, secret, algorithm="HS256")


def identity_from_claims(claims: dict[str, Any], token: str | None = None) -> Identity:
    tenant = claims.get("tenant_id") or claims.get("tid")
    if not isinstance(tenant, str) or not valid_tenant(tenant):
        raise Unauthenticated("token has no valid tenant_id claim")
    user = claims.get("user_id") or claims.get("sub")
    raw_scopes = claims.get("scopes", claims.get("scope", []))
    if isinstance(raw_scopes, str):
        raw_scopes = raw_scopes.split()
    scopes = frozenset(str(s) for s in raw_scopes) if isinstance(raw_scopes, list) else frozenset()
    team = claims.get("team")
    return Identity(
        tenant_id=tenant,
        user_id=str(user) if user else None,
        scopes=scopes,
        token=token,
        team=team if isinstance(team, str) and 0 < len(team) <= 128 else None,
    )


class TokenVerifier:
    """Verifies bearer tokens; caches verified claims by token so the hot path skips crypto."""

    def __init__(
        self, settings: Settings, *, cache_size: int = 4096, keys: KeyResolver | None = None
    ) -> None:
        self._settings = settings
        self.keys = keys
        self._secret = signing_secret(settings)
        self._public_key = settings.jwt_public_key
        self._jwks: jwt.PyJWKClient | None = (
            jwt.PyJWKClient(settings.jwks_url, cache_keys=True, lifespan=300)
            if settings.jwks_url
            else None
        )
        self._cache: OrderedDict[str, tuple[Identity, float, float]] = OrderedDict()
        self._cache_size = cache_size

    @property
    def secret(self) -> str | None:
        return self._secret

    async def verify(self, token: str) -> Identity:
        if token.startswith(API_KEY_PREFIX):
            if self.keys is None:
                raise Unauthenticated("API keys are not accepted by this process")
            return await self.keys.resolve(token)
        cached = self._cache.get(token)
        now = time.time()
        leeway = self._settings.jwt_leeway_s
        if cached is not None:
            identity, nbf, exp = cached
            if nbf - leeway <= now <= exp + leeway:
                return identity
            del self._cache[token]
            raise Unauthenticated("token expired or not yet valid")
        claims = await self._decode(token)
        identity = identity_from_claims(claims, token)
        exp = float(claims["exp"])
        self._cache[token] = (identity, float(claims.get("nbf", 0)), exp)
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return identity

    async def _decode(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthenticated("malformed bearer token") from exc
        alg = header.get("alg")
        options: dict[str, Any] = {
            "require": ["exp"],
            "verify_aud": bool(self._settings.jwt_audience),
        }
        common: dict[str, Any] = {
            "options": options,
            "leeway": self._settings.jwt_leeway_s,
            "audience": self._settings.jwt_audience,
            "issuer": self._settings.jwt_issuer,
        }
        try:
            if self._public_key or self._jwks is not None:
                # Only asymmetric algorithms: an HS256 token signed with the public key as the
                # secret (algorithm confusion) is refused before any verification is attempted.
                if alg not in ASYMMETRIC_ALGORITHMS:
                    raise Unauthenticated(f"token algorithm {alg!r} is not accepted")
                key: Any = self._public_key
                if self._jwks is not None:
                    signing_key = await asyncio.to_thread(
                        self._jwks.get_signing_key_from_jwt, token
                    )
                    key = signing_key.key
                return dict(jwt.decode(token, key, algorithms=ASYMMETRIC_ALGORITHMS, **common))
            if self._secret is None:
                raise Unauthenticated("no token verification key is configured")
            if alg != "HS256":
                raise Unauthenticated(f"token algorithm {alg!r} is not accepted")
            return dict(jwt.decode(token, self._secret, algorithms=["HS256"], **common))
        except jwt.ExpiredSignatureError as exc:
            raise Unauthenticated("token expired") from exc
        except jwt.ImmatureSignatureError as exc:
            raise Unauthenticated("token not yet valid") from exc
        except jwt.PyJWKClientError as exc:
            raise Unauthenticated("token signing key not found in JWKS") from exc
        except jwt.InvalidSignatureError as exc:
            if self._public_key or self._jwks is not None:
                raise Unauthenticated(f"invalid token: {exc}") from exc
            raise Unauthenticated(
                f"invalid token: {exc}: it was signed with another secret; `faas token` signs "
                "with FAAS_JWT_SECRET or else the secret in its data dir (FAAS_DATA_DIR), which "
                "must be the server's"
            ) from exc
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"invalid token: {exc}") from exc


def tenant_from_header(identity: Identity, header_tenant: str | None) -> Identity:
    """The identity in the tenant X-Tenant-ID names: the token's own, or, for a platform admin
    only, any other (the request then acts in that tenant)."""
    if not header_tenant or header_tenant == identity.tenant_id:
        return identity
    if not identity.has_scope(PLATFORM_ADMIN):
        raise Forbidden("X-Tenant-ID does not match the tenant of the token")
    if not valid_tenant(header_tenant):
        raise Forbidden("X-Tenant-ID is not a valid tenant id")
    return replace(identity, tenant_id=header_tenant)


def check_tenant_access(identity: Identity, tenant_id: str) -> None:
    """Naming a tenant other than the caller's own needs the platform:admin scope."""
    if not identity.may_act_for(tenant_id):
        raise Forbidden(
            f"only the '{PLATFORM_ADMIN}' scope may act on another tenant",
            details={"tenant_id": tenant_id},
        )
