"""The value types shared by the parsers, the cleaner and the chunker."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from faas.shared.exceptions import ValidationFailed

Reason = Literal[
    "empty", "encrypted", "corrupt", "too_many_pages", "too_large", "zip_bomb", "no_text"
]


@dataclass(frozen=True)
class PageSpan:
    """Page `page` (1-based) is text[start:end] of its document."""

    page: int
    start: int
    end: int


@dataclass(frozen=True)
class ParsedDocument:
    text: str
    format: str
    title: str | None
    pages: list[PageSpan]
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ParseLimits:
    max_pages: int = 2000
    max_chars: int = 20_000_000
    max_uncompressed_bytes: int = 200 * 1024 * 1024
    max_compression_ratio: float = 200.0
    max_zip_members: int = 10_000
    max_json_depth: int = 64
    max_csv_rows: int = 1_000_000


class UnreadableDocument(ValidationFailed):
    """The bytes are of a supported format but yield no usable text; `reason` says why."""

    def __init__(
        self, message: str, *, reason: Reason, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message, details={**(details or {}), "reason": reason})
        self.reason: Reason = reason
