"""Accepting work: uploaded files checked and stored in the data dir, URLs checked, and each
recorded as a file row with its job: `ingestion.process_file` for one file, and for an upload
of several, `ingestion.process_files` jobs of many files each (the bulk path)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from sqlalchemy import insert

from faas.jobs import JobQueue, NewJob
from faas.services.ingestion_service.batch import BATCH_JOB_KIND, FILES_PER_JOB, ProcessFiles
from faas.services.ingestion_service.fetch import check_url
from faas.services.ingestion_service.models import FileAccepted, UrlIngest
from faas.services.ingestion_service.tables import IngestionFileRow
from faas.shared.clock import utcnow
from faas.shared.config import Settings
from faas.shared.context import Identity, new_id
from faas.shared.database import Database
from faas.shared.exceptions import FaaSError, PayloadTooLarge, ValidationFailed

JOB_KIND = "ingestion.process_file"


class Upload:
    """One file of a multipart request, already spooled by the server."""

    def __init__(self, filename: str, content_type: str | None, file: IO[bytes]) -> None:
        self.filename = Path(filename or "upload").name[:512] or "upload"
        self.content_type = content_type
        self.file = file


@dataclass(frozen=True)
class Options:
    """What the caller asked for every file of a request."""

    collection: str
    metadata: dict[str, Any]
    auto_ingest: bool
    redact_pii: bool


@dataclass(frozen=True)
class Incoming:
    """One accepted file: stored (an upload) or still to fetch (a URL)."""

    filename: str
    content_type: str | None = None
    format: str | None = None
    size: int = 0
    sha256: str | None = None
    url: str | None = None


class Intake:
    def __init__(self, settings: Settings, *, db: Database, jobs: JobQueue, root: Path) -> None:
        self.settings = settings
        self.db = db
        self.jobs = jobs
        self.root = root

    async def upload(
        self, identity: Identity, uploads: Sequence[Upload], options: Options
    ) -> list[FileAccepted]:
        """Check every file first (type by content, size, emptiness, and the structural checks
        of `screen`: encrypted, zip bomb, page count): one bad file refuses the whole request
        and nothing is kept, so a client can fix and resend it as a whole."""
        tenant_dir = self._tenant_dir(identity)
        paths = [tenant_dir / new_id() for _ in uploads]
        limit = self.settings.max_upload_bytes
        # Copying, hashing and screening are blocking work: one hop off the loop for the whole
        # request, not two per file.
        staging = asyncio.ensure_future(asyncio.to_thread(_stage_all, uploads, paths, limit))
        try:
            staged = await asyncio.shield(staging)
        except BaseException:
            # Cancelled (the client left, the server stops): the thread goes on writing the
            # request's files; let it end before they are removed, or some would stay behind.
            with contextlib.suppress(BaseException):
                await staging
            for path in paths:
                path.unlink(missing_ok=True)
            raise
        if len(staged) == 1:
            return [await self._accept(identity, *staged[0], options)]
        return await self._accept_many(identity, staged, options)

    async def ingest_url(self, identity: Identity, body: UrlIngest) -> FileAccepted:
        await check_url(body.url, self.settings.ingestion_url_allowlist)
        name = Path(urlsplit(body.url).path).name or urlsplit(body.url).hostname or "page"
        options = Options(body.collection, body.metadata, body.auto_ingest, body.redact_pii)
        path = self._tenant_dir(identity) / new_id()
        return await self._accept(identity, path, Incoming(name[:512], url=body.url), options)

    def _tenant_dir(self, identity: Identity) -> Path:
        tenant_dir = self.root / identity.tenant_id
        tenant_dir.mkdir(parents=True, exist_ok=True)
        return tenant_dir

    async def _accept(
        self, identity: Identity, path: Path, file: Incoming, options: Options
    ) -> FileAccepted:
        job_id = new_id()
        async with self.db.session(writes=True) as session:
            session.add(IngestionFileRow(**_row(identity, path.name, job_id, file, options)))
        payload = {"file_id": path.name, "redact_pii": options.redact_pii}
        await self.jobs.submit(identity, JOB_KIND, payload, job_id=job_id)
        return _accepted(path.name, job_id, file)

    async def _accept_many(
        self, identity: Identity, staged: Sequence[tuple[Path, Incoming]], options: Options
    ) -> list[FileAccepted]:
        """Many files: their rows in one transaction, and `ingestion.process_files` jobs of
        up to FILES_PER_JOB files each, recorded in one INSERT and published together."""
        jobs: list[NewJob] = []
        rows: list[dict[str, Any]] = []
        accepted: list[FileAccepted] = []
        for start in range(0, len(staged), FILES_PER_JOB):
            group = staged[start : start + FILES_PER_JOB]
            job_id = new_id()
            payload = ProcessFiles(
                file_ids=[path.name for path, _ in group], redact_pii=options.redact_pii
            )
            jobs.append(NewJob(BATCH_JOB_KIND, payload.model_dump(mode="json"), job_id=job_id))
            for path, file in group:
                rows.append(_row(identity, path.name, job_id, file, options))
                accepted.append(_accepted(path.name, job_id, file))
        async with self.db.session(writes=True) as session:
            await session.execute(insert(IngestionFileRow), rows)
        await self.jobs.submit_many(identity, jobs)
        return accepted


def _row(
    identity: Identity, file_id: str, job_id: str, file: Incoming, options: Options
) -> dict[str, Any]:
    now = utcnow()
    return {
        "id": file_id,
        "tenant_id": identity.tenant_id,
        "user_id": identity.user_id,
        "job_id": job_id,
        "filename": file.filename,
        "source_url": file.url,
        "content_type": file.content_type,
        "format": file.format,
        "size_bytes": file.size,
        "sha256": file.sha256,
        "collection": options.collection,
        "meta": options.metadata,
        "auto_ingest": options.auto_ingest,
        "status": "queued",
        "stage": "queued",
        "created_at": now,
        "updated_at": now,
    }


def _accepted(file_id: str, job_id: str, file: Incoming) -> FileAccepted:
    return FileAccepted(
        file_id=file_id,
        job_id=job_id,
        filename=file.filename,
        format=file.format,
        status="queued",
        location=f"/api/v1/jobs/{job_id}",
    )


def _screen(path: Path, *, filename: str, content_type: str | None) -> str:
    """The file's format, once it passed the checks that need no text extraction."""
    from faas.documents import detect_format, screen

    fmt = detect_format(path, filename=filename, content_type=content_type)
    screen(path, fmt)
    return fmt


def _stage_all(
    uploads: Sequence[Upload], paths: Sequence[Path], max_bytes: int
) -> list[tuple[Path, Incoming]]:
    """Each upload copied to its path (size-bounded, hashed) and screened, in a worker thread."""
    staged = []
    for upload, path in zip(uploads, paths, strict=True):
        size, digest = _copy(upload.file, path, max_bytes)
        if size == 0:
            raise ValidationFailed(
                f"{upload.filename} is empty",
                details={"file": upload.filename, "reason": "empty"},
            )
        try:
            fmt = _screen(path, filename=upload.filename, content_type=upload.content_type)
        except FaaSError as exc:
            exc.details.setdefault("file", upload.filename)
            raise
        incoming = Incoming(upload.filename, upload.content_type, fmt, size, digest)
        staged.append((path, incoming))
    return staged


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
