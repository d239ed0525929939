"""The `ingestion.process_file` job: a file moves through (fetching →) extracting → cleaning →
chunking → indexed, and its cleaned text (not a file path) goes to the RAG service through
its client. A redelivered job re-sends identical content, which RAG recognises by hash, so a
file is indexed once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from faas.jobs import JobContext, PermanentJobError
from faas.services.ingestion_service.fetch import fetch_to_file
from faas.services.ingestion_service.tables import IngestionFileRow
from faas.services.rag_service.client import RagClient
from faas.services.rag_service.models import DocumentCreate, DocumentIndexed
from faas.shared.clock import utcnow
from faas.shared.config import Settings
from faas.shared.context import Identity, RequestContext, new_id, reset_context, set_context
from faas.shared.cpu import CpuPool
from faas.shared.database import Database, TenantRepository
from faas.shared.exceptions import FaaSError
from faas.shared.input_rules import validated

if TYPE_CHECKING:
    from faas.documents import ParsedDocument


class FileProcessor:
    def __init__(
        self,
        settings: Settings,
        *,
        db: Database,
        root: Path,
        cpu: CpuPool,
        rag: RagClient,
        service_identity: Callable[[str, str | None], Identity],
    ) -> None:
        self.settings = settings
        self.db = db
        self.root = root
        self.cpu = cpu
        self.rag = rag
        # Who the job is, towards RAG: a short-lived service token for the file's owner.
        self.service_identity = service_identity

    async def process(self, ctx: JobContext) -> dict[str, Any]:
        file_id = str(ctx.payload["file_id"])
        row = await self._row(ctx.tenant_id, file_id)
        path = self.root / ctx.tenant_id / file_id
        try:
            if row.source_url and not path.exists():
                await self._fetch(ctx, row, path)
            cleaned = await self._extract(ctx, row, path)
            if not row.auto_ingest:
                await self._update(row, status="extracted", stage="extracted", error=None)
                return {"file_id": file_id, "chars": len(cleaned.text)}
            # The RAG service chunks, embeds and indexes in one call.
            await self._stage(ctx, row, "chunking", 0.6)
            indexed = await self._send_to_rag(ctx, row, cleaned)
        except FaaSError as exc:
            if exc.status_code < 500:  # the file is the problem: a retry would fail the same way
                await self._update(row, status="failed", error=exc.message)
                raise PermanentJobError(exc.message) from exc
            # A dependency failed: the job is retried, and fails for good after its last attempt
            # (the jobs' one retry policy decides which attempt that is).
            status = "failed" if ctx.last_attempt else "retrying"
            await self._update(row, status=status, error=exc.message)
            raise
        await self._update(
            row,
            chunks=indexed.chunks,
            document_id=indexed.document_id,
            status="indexed",
            stage="indexed",
            error=None,
        )
        return {
            "file_id": file_id,
            "document_id": indexed.document_id,
            "chunks": indexed.chunks,
            "duplicate": indexed.duplicate,
        }

    async def _fetch(self, ctx: JobContext, row: IngestionFileRow, path: Path) -> None:
        await self._stage(ctx, row, "fetching", 0.05)
        await self._update(row, **await self.fetch(row, path))

    async def fetch(self, row: IngestionFileRow, path: Path) -> dict[str, Any]:
        """Download the row's URL to `path`; the row's values that the download decides."""
        from faas.documents import detect_format

        assert row.source_url is not None
        fetched = await fetch_to_file(
            row.source_url,
            path,
            allowlist=self.settings.ingestion_url_allowlist,
            max_bytes=self.settings.max_upload_bytes,
            timeout_s=self.settings.ingestion_fetch_timeout_s,
        )
        fmt = await asyncio.to_thread(
            detect_format, path, filename=row.filename, content_type=fetched.content_type
        )
        return {"format": fmt, "size_bytes": fetched.size, "content_type": fetched.content_type}

    async def _extract(self, ctx: JobContext, row: IngestionFileRow, path: Path) -> ParsedDocument:
        """The file's text, cleaned (and redacted when asked)."""
        await self._stage(ctx, row, "extracting", 0.1)
        cleaned = await self.read_text(row, path, redact_pii=bool(ctx.payload.get("redact_pii")))
        await self._update(row, pages=len(cleaned.pages) or None, chars=len(cleaned.text))
        return cleaned

    async def read_text(
        self, row: IngestionFileRow, path: Path, *, redact_pii: bool
    ) -> ParsedDocument:
        """Parse and clean the stored file, off the event loop; no record is written."""
        from faas.documents import clean, parse

        size = (await asyncio.to_thread(path.stat)).st_size
        parsed = await self.cpu.run(size, parse, path, row.format or "text")
        return await self.cpu.run(len(parsed.text), clean, parsed, redact_pii=redact_pii)

    async def _send_to_rag(
        self, ctx: JobContext, row: IngestionFileRow, doc: ParsedDocument
    ) -> DocumentIndexed:
        with self.as_owner(ctx):
            return await self.rag.add_document(document_for(row, doc))

    @contextmanager
    def as_owner(self, ctx: JobContext) -> Iterator[None]:
        """Calls to RAG in this block are made as the job's owner (a service identity)."""
        identity = self.service_identity(ctx.tenant_id, ctx.user_id)
        token = set_context(
            RequestContext(correlation_id=ctx.job_id, request_id=new_id(), identity=identity)
        )
        try:
            yield
        finally:
            reset_context(token)

    async def _row(self, tenant: str, file_id: str) -> IngestionFileRow:
        async with self.db.session() as session:
            row = await TenantRepository(session, IngestionFileRow, tenant).get(file_id)
            if row is None:
                raise PermanentJobError(f"ingestion file {file_id} no longer exists")
            session.expunge(row)
            return row

    async def _stage(
        self, ctx: JobContext, row: IngestionFileRow, stage: str, progress: float
    ) -> None:
        await self._update(row, status="processing", stage=stage)
        await ctx.progress(progress, stage)

    async def _update(self, row: IngestionFileRow, **values: Any) -> None:
        """Both the stored row and `row` (detached) take `values`."""
        async with self.db.session() as session:
            current = await session.get(IngestionFileRow, row.id)
            if current is None:
                return
            for key, value in {**values, "updated_at": utcnow()}.items():
                setattr(current, key, value)
                setattr(row, key, value)


def document_for(row: IngestionFileRow, doc: ParsedDocument) -> DocumentCreate:
    """The RAG document of a file's cleaned text."""
    return validated(
        DocumentCreate,
        {
            "title": (doc.title or row.filename)[:512],
            "content": doc.text,
            "source": row.source_url or row.filename,
            "metadata": {
                **row.meta,
                "file_id": row.id,
                "filename": row.filename,
                "format": row.format,
            },
            "collection": row.collection,
            "pages": [{"page": p.page, "start": p.start, "end": p.end} for p in doc.pages],
        },
    )
