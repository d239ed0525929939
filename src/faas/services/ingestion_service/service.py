"""The ingestion service: uploads and URLs accepted as jobs (`intake`), each job extracting,
cleaning and sending the text to RAG (`processing`), and the file records read back (`files`).
This class builds those parts and hands each call to one of them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from faas.jobs import JobQueue
from faas.services.ingestion_service.batch import BATCH_JOB_KIND, BatchProcessor, ProcessFiles
from faas.services.ingestion_service.files import Files
from faas.services.ingestion_service.intake import JOB_KIND, Intake, Options, Upload
from faas.services.ingestion_service.models import FileAccepted, FileView, UrlIngest
from faas.services.ingestion_service.processing import FileProcessor
from faas.services.rag_service.client import RagClient
from faas.shared.config import Settings
from faas.shared.context import Identity
from faas.shared.contracts import Page
from faas.shared.database import Database

if TYPE_CHECKING:
    from faas.kernel import Platform


class IngestionService:
    name = "ingestion"

    def __init__(
        self, settings: Settings, *, db: Database, jobs: JobQueue, runtime: Platform
    ) -> None:
        self.root = settings.data_dir / "uploads"
        self.intake = Intake(settings, db=db, jobs=jobs, root=self.root)
        self.files = Files(db, jobs)
        self.processor = FileProcessor(
            settings,
            db=db,
            root=self.root,
            cpu=runtime.cpu,
            rag=RagClient(runtime.clients),
            service_identity=runtime.service_identity,
        )
        self.batches = BatchProcessor(db, self.processor)
        jobs.registry.register(JOB_KIND, self.processor.process)
        # Many files in one job; callers may submit it (their own files) over jobs:batch.
        jobs.registry.register(BATCH_JOB_KIND, self.batches.process, accepts=ProcessFiles)

    async def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    async def stop(self) -> None:
        return None

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
        options = Options(collection, metadata, auto_ingest, redact_pii)
        return await self.intake.upload(identity, uploads, options)

    async def ingest_url(self, identity: Identity, body: UrlIngest) -> FileAccepted:
        return await self.intake.ingest_url(identity, body)

    async def get_file(self, tenant: str, file_id: str) -> FileView:
        return await self.files.get(tenant, file_id)

    async def list_files(self, tenant: str, limit: int, offset: int) -> Page[FileView]:
        return await self.files.page(tenant, limit, offset)
