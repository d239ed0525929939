"""Datasets: rows stored as JSON lines under `data_dir/ml/{tenant}/datasets/`, their metadata
and inferred schema in the database."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from faas.services.ml_service import data
from faas.services.ml_service.jsonl import read_rows, write_rows
from faas.services.ml_service.models import DatasetView
from faas.services.ml_service.tables import DatasetRow
from faas.shared.clock import utcnow
from faas.shared.context import Identity, new_id
from faas.shared.contracts import Page
from faas.shared.database import Database, TenantRepository
from faas.shared.exceptions import NotFound


class Datasets:
    def __init__(self, db: Database, root: Path) -> None:
        self.db = db
        self.root = root

    def _path(self, tenant: str, dataset_id: str) -> Path:
        return self.root / tenant / "datasets" / f"{dataset_id}.jsonl"

    async def create(
        self, identity: Identity, name: str, rows: list[dict[str, Any]], fmt: str
    ) -> DatasetView:
        schema = await asyncio.to_thread(data.infer_schema, rows)
        dataset_id = new_id()
        path = self._path(identity.tenant_id, dataset_id)
        digest = await asyncio.to_thread(write_rows, path, rows)
        async with self.db.session() as session:
            row = TenantRepository(session, DatasetRow, identity.tenant_id).add(
                id=dataset_id,
                name=name,
                format=fmt,
                row_count=len(rows),
                column_count=len(schema),
                schema=schema,
                sha256=digest,
                created_by=identity.user_id,
                created_at=utcnow(),
            )
            return _view(row)

    async def get(self, tenant: str, dataset_id: str) -> DatasetView:
        return _view(await self.record(tenant, dataset_id))

    async def page(self, tenant: str, limit: int, offset: int) -> Page[DatasetView]:
        async with self.db.session() as session:
            rows, total = await TenantRepository(session, DatasetRow, tenant).page(
                order_by=DatasetRow.created_at.desc(), limit=limit, offset=offset
            )
            items = [_view(r) for r in rows]
        return Page[DatasetView](items=items, total=total, limit=limit, offset=offset)

    async def record(self, tenant: str, dataset_id: str) -> DatasetRow:
        """The dataset's metadata row; 404 when the tenant has no such dataset."""
        async with self.db.session() as session:
            row = await TenantRepository(session, DatasetRow, tenant).get(dataset_id)
            if row is None:
                raise NotFound(f"dataset {dataset_id} not found")
            return row

    async def rows(self, tenant: str, dataset_id: str) -> tuple[DatasetRow, list[dict[str, Any]]]:
        dataset = await self.record(tenant, dataset_id)
        rows = await asyncio.to_thread(read_rows, self._path(tenant, dataset_id))
        return dataset, rows


def _view(row: DatasetRow) -> DatasetView:
    return DatasetView(
        id=row.id,
        name=row.name,
        format=row.format,
        row_count=row.row_count,
        column_count=row.column_count,
        columns=row.schema,
        sha256=row.sha256,
        created_at=row.created_at,
    )
