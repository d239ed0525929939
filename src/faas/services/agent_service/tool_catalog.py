"""The tools a tenant declares (stored as `HttpToolSpec` or `ExpressionToolSpec`) next to the
built-in ones: declare, list, delete, and the rows a run or an agent's validation reads."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlalchemy import delete

from faas.services.agent_service.access import GeneratorPermissions, Use
from faas.services.agent_service.models import (
    ExpressionToolSpec,
    HttpToolSpec,
    Origin,
    ToolView,
    parse_tool_spec,
)
from faas.services.agent_service.tables import ToolRow
from faas.services.agent_service.tools.builtin import BUILTIN_TOOLS
from faas.services.agent_service.tools.http import check_declared_url
from faas.shared.clock import utcnow
from faas.shared.context import Identity, new_id
from faas.shared.database import Database, TenantRepository
from faas.shared.exceptions import Conflict, NotFound

if TYPE_CHECKING:
    from faas.services.agent_service.mcp_tools import McpToolSource
    from faas.services.agent_service.tools.base import Tool


class ToolCatalog:
    def __init__(
        self,
        db: Database,
        access: GeneratorPermissions,
        http_allowlist: Sequence[str],
        mcp: McpToolSource | None = None,
    ) -> None:
        self.db = db
        self.access = access
        self.http_allowlist = http_allowlist
        self.mcp = mcp

    async def create(
        self,
        identity: Identity,
        spec: HttpToolSpec | ExpressionToolSpec,
        origin: Origin | None = None,
    ) -> ToolView:
        if spec.name in BUILTIN_TOOLS:
            raise Conflict(f"{spec.name!r} is a built-in tool")
        if isinstance(spec, HttpToolSpec):
            await check_declared_url(spec.url_template, self.http_allowlist)
        async with self.db.session() as session:
            repo = TenantRepository(session, ToolRow, identity.tenant_id)
            if await session.scalar(repo.select(ToolRow.name == spec.name)) is not None:
                raise Conflict(f"tool {spec.name!r} already exists")
            row = repo.add(
                id=new_id(),
                name=spec.name,
                spec=spec.model_dump(mode="json"),
                created_by=identity.user_id,
                origin=origin,
                created_at=utcnow(),
            )
            return _tool_view(row)

    async def list_all(self, tenant: str) -> list[ToolView]:
        """Every tool of the tenant, generated ones included: names are unique per tenant and
        the Prompt Generator reads this list to pick new ones. Running a generated tool and
        deleting it are what its permissions guard."""
        builtins = [
            ToolView(
                name=t.name, description=t.description, parameters=t.parameters, kind="built-in"
            )
            for t in BUILTIN_TOOLS.values()
        ]
        return builtins + [_tool_view(r) for r in await self.rows(tenant)]

    async def delete(self, identity: Identity, name: str) -> None:
        async with self.db.session() as session:
            repo = TenantRepository(session, ToolRow, identity.tenant_id)
            row = await session.scalar(repo.select(ToolRow.name == name))
            if row is None:
                raise NotFound(f"tool {name!r} not found")
        await self.access.require(identity, Use("tool", name, "admin"), row)
        async with self.db.session() as session:
            await session.execute(
                delete(ToolRow).where(ToolRow.tenant_id == identity.tenant_id, ToolRow.id == row.id)
            )

    async def rows(self, tenant: str, names: list[str] | None = None) -> list[ToolRow]:
        """The tenant's declared tools (those named, when `names` is given), oldest first."""
        async with self.db.session() as session:
            repo = TenantRepository(session, ToolRow, tenant)
            query = repo.select() if names is None else repo.select(ToolRow.name.in_(names))
            return list((await session.scalars(query.order_by(ToolRow.created_at))).all())

    async def names(self, tenant: str) -> set[str]:
        """Every tool name an agent of the tenant may list (`mcp:<server>` for each MCP server
        it registered)."""
        servers = await self.mcp.servers.names(tenant) if self.mcp is not None else set()
        return set(BUILTIN_TOOLS) | {r.name for r in await self.rows(tenant)} | servers

    async def remote(self, identity: Identity, names: Sequence[str]) -> dict[str, Tool]:
        """The tools of the MCP servers among `names` (`mcp:<server>`), as `<server>__<tool>`."""
        if self.mcp is None:
            return {}
        return await self.mcp.tools(identity, names)


def _tool_view(row: ToolRow) -> ToolView:
    spec = parse_tool_spec(row.spec)
    return ToolView.model_validate(
        {**spec.model_dump(mode="json"), "created_by": row.created_by, "origin": row.origin}
    )
