"""Reading the record of ingested files, with the progress of each one's job."""

from __future__ import annotations

from faas.jobs import JobQueue, JobView
from faas.services.ingestion_service.models import FileView
from faas.services.ingestion_service.tables import IngestionFileRow
from faas.shared.contracts import Page
from faas.shared.database import Database, TenantRepository
from faas.shared.exceptions import NotFound


class Files:
    def __init__(self, db: Database, jobs: JobQueue) -> None:
        self.db = db
        self.jobs = jobs

    async def get(self, tenant: str, file_id: str) -> FileView:
        async with self.db.session() as session:
            row = await TenantRepository(session, IngestionFileRow, tenant).get(file_id)
            if row is None:
                raise NotFound(f"file {file_id} not found")
        job = await self.jobs.get(tenant, row.job_id) if row.job_id else None
        return _view(row, job)

    async def page(self, tenant: str, limit: int, offset: int) -> Page[FileView]:
        async with self.db.session() as session:
            rows, total = await TenantRepository(session, IngestionFileRow, tenant).page(
                order_by=IngestionFileRow.created_at.desc(), limit=limit, offset=offset
            )
        return Page[FileView](
            items=[_view(r, None) for r in rows], total=total, limit=limit, offset=offset
        )


def _view(row: IngestionFileRow, job: JobView | None) -> FileView:
    progress = job.progress if job is not None else (1.0 if row.status == "indexed" else 0.0)
    return FileView(
        id=row.id,
        filename=row.filename,
        source_url=row.source_url,
        content_type=row.content_type,
        format=row.format,
        size_bytes=row.size_bytes,
        collection=row.collection,
        metadata=row.meta,
        auto_ingest=row.auto_ingest,
        status=row.status,
        stage=row.stage,
        progress=progress,
        pages=row.pages,
        chars=row.chars,
        chunks=row.chunks,
        document_id=row.document_id,
        job_id=row.job_id,
        error=row.error,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )
