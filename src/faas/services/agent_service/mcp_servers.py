"""The MCP servers a tenant registers for its agents: register, list (headers masked), delete,
and the connection details a run reads (headers unsealed).

Headers usually carry credentials, so they are sealed at rest: AES-GCM under a key derived
(HKDF-SHA256) from the deployment's signing secret, with the tenant and server name as
associated data (a sealed value copied to another row or tenant does not open). Registering
and deleting need the `admin` scope: a server receives what agents send it, and its
credentials are the tenant's."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import delete

from faas.services.agent_service.models import McpServerCreate, McpServerView
from faas.services.agent_service.tables import McpServerRow
from faas.services.agent_service.tools.http import SETTING, check_declared_url
from faas.shared.clock import utcnow
from faas.shared.context import Identity, new_id
from faas.shared.database import Database, TenantRepository
from faas.shared.exceptions import Conflict, DependencyUnavailable, Forbidden, NotFound

MCP_PREFIX = "mcp:"
MASK = "********"
_NONCE = 12
_INFO = b"faas agent mcp-server headers v1"


@dataclass(frozen=True)
class McpConnection:
    """Where a run reaches a registered server, with its headers in the clear."""

    name: str
    url: str
    headers: dict[str, str]


class HeaderSeal:
    """Seals and opens header maps under a key derived from `secret()`, the deployment's
    signing secret (read when first needed; None when it has none, and then only servers
    without headers can be registered)."""

    def __init__(self, secret: Callable[[], str | None]) -> None:
        self._secret = secret
        self._aead: AESGCM | None = None

    def seal(self, headers: dict[str, str], context: bytes) -> bytes | None:
        if not headers:
            return None
        nonce = os.urandom(_NONCE)
        return nonce + self._require().encrypt(nonce, orjson.dumps(headers), context)

    def open(self, sealed: bytes | None, context: bytes) -> dict[str, str]:
        if sealed is None:
            return {}
        try:
            plain = self._require().decrypt(sealed[:_NONCE], sealed[_NONCE:], context)
        except InvalidTag as exc:
            raise DependencyUnavailable(
                "the stored headers of this MCP server cannot be opened (was FAAS_JWT_SECRET "
                "changed?): delete the server and register it again"
            ) from exc
        value = orjson.loads(plain)
        return {str(k): str(v) for k, v in value.items()}

    def _require(self) -> AESGCM:
        if self._aead is not None:
            return self._aead
        secret = self._secret()
        if not secret:
            raise DependencyUnavailable(
                "MCP server headers are stored sealed with a key derived from FAAS_JWT_SECRET, "
                "which this deployment does not have"
            )
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(
            secret.encode()
        )
        self._aead = AESGCM(key)
        return self._aead


def _context(tenant: str, name: str) -> bytes:
    return f"{tenant}\x00{name}".encode()


def server_ref(name: str) -> str:
    """How an agent lists a server's tools among its own."""
    return f"{MCP_PREFIX}{name}"


class McpServers:
    def __init__(self, db: Database, seal: HeaderSeal, http_allowlist: Sequence[str]) -> None:
        self.db = db
        self.seal = seal
        self.http_allowlist = http_allowlist

    async def register(self, identity: Identity, spec: McpServerCreate) -> McpServerView:
        _require_admin(identity)
        await check_declared_url(spec.url, self.http_allowlist)
        tenant = identity.tenant_id
        sealed = self.seal.seal(spec.headers, _context(tenant, spec.name))
        async with self.db.session() as session:
            repo = TenantRepository(session, McpServerRow, tenant)
            if await session.scalar(repo.select(McpServerRow.name == spec.name)) is not None:
                raise Conflict(f"MCP server {spec.name!r} already exists")
            row = repo.add(
                id=new_id(),
                name=spec.name,
                url=spec.url,
                sealed_headers=sealed,
                header_names=sorted(spec.headers),
                created_by=identity.user_id,
                created_at=utcnow(),
            )
            return _view(row)

    async def list_all(self, tenant: str) -> list[McpServerView]:
        return [_view(row) for row in await self._rows(tenant)]

    async def names(self, tenant: str) -> set[str]:
        """The `mcp:<name>` references an agent of the tenant may list."""
        return {server_ref(row.name) for row in await self._rows(tenant)}

    async def delete(self, identity: Identity, name: str) -> None:
        _require_admin(identity)
        async with self.db.session() as session:
            result = await session.execute(
                delete(McpServerRow).where(
                    McpServerRow.tenant_id == identity.tenant_id, McpServerRow.name == name
                )
            )
            if not getattr(result, "rowcount", 0):
                raise NotFound(f"MCP server {name!r} not found")

    async def connection(self, tenant: str, name: str) -> McpConnection:
        """The server as a run reaches it; 404 when the tenant has none by that name."""
        async with self.db.session() as session:
            repo = TenantRepository(session, McpServerRow, tenant)
            row = await session.scalar(repo.select(McpServerRow.name == name))
        if row is None:
            raise NotFound(f"MCP server {name!r} not found")
        headers = self.seal.open(row.sealed_headers, _context(tenant, name))
        return McpConnection(name=name, url=row.url, headers=headers)

    async def _rows(self, tenant: str) -> list[McpServerRow]:
        async with self.db.session() as session:
            repo = TenantRepository(session, McpServerRow, tenant)
            query = repo.select().order_by(McpServerRow.created_at)
            return list((await session.scalars(query)).all())


def _require_admin(identity: Identity) -> None:
    if not identity.has_scope("admin"):
        raise Forbidden(
            "registering or removing an MCP server needs the 'admin' scope: its credentials "
            f"are the tenant's and agents send it their data (hosts limited by {SETTING})"
        )


def _view(row: McpServerRow) -> McpServerView:
    return McpServerView(
        name=row.name,
        url=row.url,
        headers=dict.fromkeys(row.header_names, MASK),
        created_by=row.created_by,
        created_at=row.created_at,
    )
