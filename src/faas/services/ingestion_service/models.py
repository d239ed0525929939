"""Wire models of the ingestion service."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from faas.services.rag_service.models import NAME_PATTERN


class UrlIngest(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "url": "https://en.wikipedia.org/wiki/Retrieval-augmented_generation",
                    "collection": "default",
                }
            ]
        }
    )

    url: str = Field(min_length=8, max_length=4096)
    collection: str = Field("default", pattern=NAME_PATTERN)
    metadata: dict[str, Any] = Field(default_factory=dict)
    auto_ingest: bool = True
    redact_pii: bool = False


class FileAccepted(BaseModel):
    file_id: str
    job_id: str
    filename: str
    format: str | None
    status: str
    location: str


class FilesAccepted(BaseModel):
    files: list[FileAccepted]


class FileView(BaseModel):
    id: str
    filename: str
    source_url: str | None
    content_type: str | None
    format: str | None
    size_bytes: int
    collection: str
    metadata: dict[str, Any]
    auto_ingest: bool
    status: str
    stage: str
    progress: float
    pages: int | None
    chars: int | None
    chunks: int | None
    document_id: str | None
    job_id: str | None
    error: str | None
    created_at: datetime
    updated_at: datetime
