"""The `ingestion.process_files` job: many files in one job, the bulk ingestion path.

Where `ingestion.process_file` writes its file row and job progress at every stage (about a
dozen transactions per file) and sends one document per RAG call, this job extracts every
file, sends the texts to RAG in one `documents:batch` call (its chunks embedded together and
stored in one transaction there), and writes the file rows in one transaction at the start
and one at the end, with one progress write per stage of the whole batch. A file that fails
(unreadable, no text) is recorded as failed and the others are indexed. Callers may submit
it themselves through `POST /api/v1/jobs:batch` (`ProcessFiles`): it reads only the job
tenant's own files."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field
from sqlalchemy import select

from faas.jobs import JobContext, PermanentJobError
from faas.services.ingestion_service.processing import FileProcessor, document_for
from faas.services.ingestion_service.tables import IngestionFileRow
from faas.services.rag_service.models import MAX_BATCH_DOCUMENTS, DocumentBatch, DocumentCreate
from faas.shared.clock import utcnow
from faas.shared.database import Database
from faas.shared.exceptions import FaaSError

if TYPE_CHECKING:
    from faas.documents import ParsedDocument

BATCH_JOB_KIND = "ingestion.process_files"
FILES_PER_JOB = 64


class ProcessFiles(BaseModel):
    """Index files already uploaded by the job's tenant, many in one job."""

    file_ids: list[str] = Field(min_length=1, max_length=FILES_PER_JOB)
    redact_pii: bool = False
    auto_ingest: bool | None = Field(
        None, description="index the files into RAG (None: as each file was uploaded)"
    )


@dataclass
class _File:
    row: IngestionFileRow
    values: dict[str, Any] = field(default_factory=dict)
    document: DocumentCreate | None = None

    def result(self) -> dict[str, Any]:
        return {
            "file_id": self.row.id,
            "status": self.values.get("status", self.row.status),
            "document_id": self.values.get("document_id", self.row.document_id),
            "chunks": self.values.get("chunks", self.row.chunks),
            "error": self.values.get("error"),
        }


class BatchProcessor:
    def __init__(self, db: Database, files: FileProcessor) -> None:
        self.db = db
        self.files = files

    async def process(self, ctx: JobContext) -> dict[str, Any]:
        payload = ProcessFiles.model_validate(ctx.payload)
        found = await self._rows(ctx.tenant_id, payload.file_ids)
        missing = [i for i in payload.file_ids if i not in found]
        # A redelivered job leaves files it already indexed as they are.
        work = [_File(found[i]) for i in payload.file_ids if i in found]
        todo = [f for f in work if f.row.status != "indexed"]
        if payload.auto_ingest is not None:
            for f in todo:
                f.values["auto_ingest"] = payload.auto_ingest
        await self._write(ctx, todo, status="processing", stage="extracting", job_id=ctx.job_id)
        await ctx.progress(0.1, "extracting")
        for f in todo:
            await self._extract(f, payload.redact_pii)
        await ctx.progress(0.6, "indexing")
        try:
            await self._index(ctx, [f for f in todo if f.document is not None])
        except FaaSError as exc:
            # RAG or the gateway failed for the whole batch: retried as a whole.
            status = "failed" if ctx.last_attempt else "retrying"
            for f in todo:
                if "error" not in f.values:
                    f.values.update(status=status, error=exc.message)
            await self._write(ctx, todo)
            raise
        await self._write(ctx, todo)
        results = [f.result() for f in work]
        results += [
            {
                "file_id": i,
                "status": "failed",
                "document_id": None,
                "chunks": None,
                "error": f"ingestion file {i} not found",
            }
            for i in missing
        ]
        if all(r["status"] == "failed" for r in results):
            reason = results[0]["error"]
            raise PermanentJobError(f"no file of the batch could be processed ({reason})")
        return {"files": results}

    async def _extract(self, f: _File, redact_pii: bool) -> None:
        """Fetch (URLs) and read the file; a file the platform cannot read is failed here,
        a dependency that failed (5xx) fails the job, to be retried."""
        row = f.row
        path = self.files.root / row.tenant_id / row.id
        try:
            if row.source_url and not path.exists():
                fetched = await self.files.fetch(row, path)
                f.values.update(fetched)
                for key, value in fetched.items():
                    setattr(row, key, value)
            cleaned = await self.files.read_text(row, path, redact_pii=redact_pii)
        except FaaSError as exc:
            if exc.status_code >= 500:
                raise
            f.values.update(status="failed", stage="extracting", error=exc.message)
            return
        f.values.update(pages=len(cleaned.pages) or None, chars=len(cleaned.text))
        if f.values.get("auto_ingest", row.auto_ingest):
            f.document = self._document(f, cleaned)
        else:
            f.values.update(status="extracted", stage="extracted", error=None)

    def _document(self, f: _File, cleaned: ParsedDocument) -> DocumentCreate | None:
        try:
            return document_for(f.row, cleaned)
        except FaaSError as exc:
            f.values.update(status="failed", stage="extracting", error=exc.message)
            return None

    async def _index(self, ctx: JobContext, todo: list[_File]) -> None:
        for start in range(0, len(todo), MAX_BATCH_DOCUMENTS):
            part = todo[start : start + MAX_BATCH_DOCUMENTS]
            batch = DocumentBatch(documents=[f.document for f in part if f.document is not None])
            with self.files.as_owner(ctx):
                answer = await self.files.rag.add_documents(batch)
            for f, outcome in zip(part, answer.documents, strict=True):
                if outcome.indexed is not None:
                    f.values.update(
                        status="indexed",
                        stage="indexed",
                        error=None,
                        chunks=outcome.indexed.chunks,
                        document_id=outcome.indexed.document_id,
                    )
                else:
                    assert outcome.error is not None
                    f.values.update(status="failed", stage="indexing", error=outcome.error.message)

    async def _rows(self, tenant: str, file_ids: list[str]) -> dict[str, IngestionFileRow]:
        async with self.db.session() as session:
            rows = (
                await session.scalars(
                    select(IngestionFileRow).where(
                        IngestionFileRow.tenant_id == tenant,
                        IngestionFileRow.id.in_(file_ids),
                    )
                )
            ).all()
            for row in rows:
                session.expunge(row)
        return {r.id: r for r in rows}

    async def _write(self, ctx: JobContext, files: list[_File], **values: Any) -> None:
        """Every file row of the batch in one transaction: `values` for all, then each
        file's own."""
        if not files:
            return
        now = utcnow()
        async with self.db.session() as session:
            rows = (
                await session.scalars(
                    select(IngestionFileRow).where(
                        IngestionFileRow.tenant_id == ctx.tenant_id,
                        IngestionFileRow.id.in_([f.row.id for f in files]),
                    )
                )
            ).all()
            by_id = {r.id: r for r in rows}
            for f in files:
                current = by_id.get(f.row.id)
                if current is None:
                    continue
                for key, value in {**values, **f.values, "updated_at": now}.items():
                    setattr(current, key, value)
