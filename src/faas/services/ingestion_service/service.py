"""Ingestion use cases. An upload is stored in the data dir and becomes a job; the job moves
through extracting → cleaning → chunking → embedding → indexed, and sends the cleaned text (not
a file path) to the RAG service over its API. A redelivered job re-sends identical content, which
RAG recognises by hash, so a file is indexed once."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import urlsplit

from fastapi import APIRouter

from faas.jobs import JobContext, JobQueue, JobView, PermanentJobError
from faas.services.ingestion_service.fetch import fetch_to_file, resolve_public
from faas.services.ingestion_service.models import FileAccepted, FileView, UrlIngest
from faas.services.ingestion_service.tables import IngestionFileRow
from faas.shared.config import Settings
from faas.shared.context import Identity, RequestContext, new_id, reset_context, set_context
from faas.shared.contracts import Page
from faas.shared.database import Database, TenantRepository
from faas.shared.exceptions import FaaSError, NotFound, PayloadTooLarge, ValidationFailed
from faas.shared.http_client import raise_for_error

if TYPE_CHECKING:
    from faas.runtime import Runtime

JOB_KIND = "ingestion.process_file"


def _now() -> datetime:
    return datetime.now(UTC)


class Upload:
    """One file of a multipart request, already spooled by the server."""

    def __init__(self, filename: str, content_type: str | None, file: IO[bytes]) -> None:
        self.filename = Path(filename or "upload").name[:512] or "upload"
        self.content_type = content_type
        self.file = file


class IngestionService:
    name = "ingestion"

    def __init__(
        self, settings: Settings, *, db: Database, jobs: JobQueue, runtime: Runtime
    ) -> None:
        self.settings = settings
        self.db = db
        self.jobs = jobs
        self.runtime = runtime
        self.root = settings.data_dir / "uploads"
        jobs.registry.register(JOB_KIND, self.process)

    def router(self) -> APIRouter:
        from faas.services.ingestion_service.routes import build_router

        return build_router(self)

    async def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    async def stop(self) -> None:
        return None

    # -- accepting work --------------------------------------------------------------------

    async def upload(
        self,
        identity: Identity,
        uploads: Sequence[Upload],
        *,
        collection: str,
        metadata: dict[str, Any],
        auto_ingest: bool,
        redact_pii: bool,
    ) -> list[FileAccepted]:
        """Check every file first (type by content, size, emptiness, and the structural checks
        of `screen`: encrypted, zip bomb, page count): one bad file refuses the whole request
        and nothing is kept, so a client can fix and resend it as a whole."""
        staged: list[tuple[Upload, Path, str, int, str]] = []
        tenant_dir = self.root / identity.tenant_id
        tenant_dir.mkdir(parents=True, exist_ok=True)
        written: list[Path] = []
        try:
            for upload in uploads:
                path = tenant_dir / new_id()
                written.append(path)
                size, digest = await asyncio.to_thread(
                    _copy, upload.file, path, self.settings.max_upload_bytes
                )
                if size == 0:
                    raise ValidationFailed(
                        f"{upload.filename} is empty",
                        details={"file": upload.filename, "reason": "empty"},
                    )
                try:
                    # Reading a PDF's page tree or a ZIP directory is CPU work: off the loop.
                    fmt = await asyncio.to_thread(
                        _screen, path, filename=upload.filename, content_type=upload.content_type
                    )
                except FaaSError as exc:
                    exc.details.setdefault("file", upload.filename)
                    raise
                staged.append((upload, path, fmt, size, digest))
        except BaseException:
            for path in written:
                path.unlink(missing_ok=True)
            raise
        accepted = []
        for upload, path, fmt, size, digest in staged:
            accepted.append(
                await self._accept(
                    identity,
                    path,
                    filename=upload.filename,
                    content_type=upload.content_type,
                    fmt=fmt,
                    size=size,
                    digest=digest,
                    url=None,
                    collection=collection,
                    metadata=metadata,
                    auto_ingest=auto_ingest,
                    redact_pii=redact_pii,
                )
            )
        return accepted

    async def ingest_url(self, identity: Identity, body: UrlIngest) -> FileAccepted:
        await resolve_public(body.url, self.settings.ingestion_url_allowlist)
        tenant_dir = self.root / identity.tenant_id
        tenant_dir.mkdir(parents=True, exist_ok=True)
        name = Path(urlsplit(body.url).path).name or urlsplit(body.url).hostname or "page"
        return await self._accept(
            identity,
            tenant_dir / new_id(),
            filename=name[:512],
            content_type=None,
            fmt=None,
            size=0,
            digest=None,
            url=body.url,
            collection=body.collection,
            metadata=body.metadata,
            auto_ingest=body.auto_ingest,
            redact_pii=body.redact_pii,
        )

    async def _accept(
        self,
        identity: Identity,
        path: Path,
        *,
        filename: str,
        content_type: str | None,
        fmt: str | None,
        size: int,
        digest: str | None,
        url: str | None,
        collection: str,
        metadata: dict[str, Any],
        auto_ingest: bool,
        redact_pii: bool,
    ) -> FileAccepted:
        file_id = path.name
        job_id = new_id()
        now = _now()
        async with self.db.session() as session:
            TenantRepository(session, IngestionFileRow, identity.tenant_id).add(
                id=file_id,
                user_id=identity.user_id,
                job_id=job_id,
                filename=filename,
                source_url=url,
                content_type=content_type,
                format=fmt,
                size_bytes=size,
                sha256=digest,
                collection=collection,
                meta=metadata,
                auto_ingest=auto_ingest,
                status="queued",
                stage="queued",
                created_at=now,
                updated_at=now,
            )
        await self.jobs.submit(
            identity, JOB_KIND, {"file_id": file_id, "redact_pii": redact_pii}, job_id=job_id
        )
        return FileAccepted(
            file_id=file_id,
            job_id=job_id,
            filename=filename,
            format=fmt,
            status="queued",
            location=f"/api/v1/jobs/{job_id}",
        )

    # -- reading ---------------------------------------------------------------------------

    async def get_file(self, tenant: str, file_id: str) -> FileView:
        async with self.db.session() as session:
            row = await TenantRepository(session, IngestionFileRow, tenant).get(file_id)
            if row is None:
                raise NotFound(f"file {file_id} not found")
        job = await self.jobs.get(tenant, row.job_id) if row.job_id else None
        return _view(row, job)

    async def list_files(self, tenant: str, limit: int, offset: int) -> Page[FileView]:
        async with self.db.session() as session:
            rows, total = await TenantRepository(session, IngestionFileRow, tenant).page(
                order_by=IngestionFileRow.created_at.desc(), limit=limit, offset=offset
            )
        return Page[FileView](
            items=[_view(r, None) for r in rows], total=total, limit=limit, offset=offset
        )

    # -- the job ---------------------------------------------------------------------------

    async def process(self, ctx: JobContext) -> dict[str, Any]:
        from faas.documents import clean, detect_format, parse

        file_id = str(ctx.payload["file_id"])
        row = await self._row(ctx.tenant_id, file_id)
        path = self.root / ctx.tenant_id / file_id
        try:
            if row.source_url and not path.exists():
                await self._stage(ctx, row, "fetching", 0.05)
                fetched = await fetch_to_file(
                    row.source_url,
                    path,
                    allowlist=self.settings.ingestion_url_allowlist,
                    max_bytes=self.settings.max_upload_bytes,
                    timeout_s=self.settings.ingestion_fetch_timeout_s,
                )
                fmt = await asyncio.to_thread(
                    detect_format,
                    path,
                    filename=row.filename,
                    content_type=fetched.content_type,
                )
                await self._update(
                    row, format=fmt, size_bytes=fetched.size, content_type=fetched.content_type
                )
            await self._stage(ctx, row, "extracting", 0.1)
            cpu = self.runtime.cpu
            size = path.stat().st_size
            parsed = await cpu.run(size, parse, path, row.format or "text")
            await self._stage(ctx, row, "cleaning", 0.4)
            cleaned = await cpu.run(
                len(parsed.text), clean, parsed, redact_pii=bool(ctx.payload.get("redact_pii"))
            )
            await self._update(row, pages=len(cleaned.pages) or None, chars=len(cleaned.text))
            if not row.auto_ingest:
                await self._finish(row, "extracted", "extracted")
                return {"file_id": file_id, "chars": len(cleaned.text)}
            # The RAG service chunks, embeds and indexes in one call.
            await self._stage(ctx, row, "chunking", 0.6)
            indexed = await self._send_to_rag(ctx, row, cleaned)
        except FaaSError as exc:
            if exc.status_code < 500:  # the file is the problem: a retry would fail the same way
                await self._finish(row, "failed", row.stage, error=exc.message)
                raise PermanentJobError(exc.message) from exc
            # A dependency failed: the job is retried, and fails for good after its last attempt.
            final = ctx.attempt >= self.settings.job_max_attempts
            await self._finish(row, "failed" if final else "retrying", row.stage, error=exc.message)
            raise
        await self._update(row, chunks=indexed["chunks"], document_id=indexed["document_id"])
        await self._finish(row, "indexed", "indexed")
        return {"file_id": file_id, **indexed}

    async def _send_to_rag(
        self, ctx: JobContext, row: IngestionFileRow, doc: Any
    ) -> dict[str, Any]:
        identity = self.runtime.service_identity(ctx.tenant_id, ctx.user_id)
        token = set_context(
            RequestContext(correlation_id=ctx.job_id, request_id=new_id(), identity=identity)
        )
        try:
            body = {
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
            }
            response = await self.runtime.clients.get("rag").post(
                "/api/v1/rag/documents", json=body
            )
            raise_for_error(response, "rag")
            data = response.json()["data"]
        finally:
            reset_context(token)
        return {
            "document_id": data["document_id"],
            "chunks": data["chunks"],
            "duplicate": data["duplicate"],
        }

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

    async def _finish(
        self, row: IngestionFileRow, status: str, stage: str, error: str | None = None
    ) -> None:
        await self._update(row, status=status, stage=stage, error=error)

    async def _update(self, row: IngestionFileRow, **values: Any) -> None:
        async with self.db.session() as session:
            current = await session.get(IngestionFileRow, row.id)
            if current is None:
                return
            for key, value in {**values, "updated_at": _now()}.items():
                setattr(current, key, value)
                setattr(row, key, value)


def _screen(path: Path, *, filename: str, content_type: str | None) -> str:
    """The file's format, once it passed the checks that need no text extraction."""
    from faas.documents import detect_format, screen

    fmt = detect_format(path, filename=filename, content_type=content_type)
    screen(path, fmt)
    return fmt


def _copy(source: IO[bytes], target: Path, max_bytes: int) -> tuple[int, str]:
    source.seek(0)
    digest = hashlib.sha256()
    size = 0
    with target.open("wb") as out:
        while block := source.read(1024 * 1024):
            size += len(block)
            if size > max_bytes:
                out.close()
                target.unlink(missing_ok=True)
                raise PayloadTooLarge(
                    f"a file is larger than {max_bytes} bytes", details={"max_bytes": max_bytes}
                )
            digest.update(block)
            out.write(block)
    return size, digest.hexdigest()


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
