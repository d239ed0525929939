"""Document ingestion: format detection, parsing, cleaning and chunking for RAG.

Pure and CPU-bound: services call these from a worker thread. Errors are FaaSErrors
(415 UnsupportedMediaType, 422 UnreadableDocument with a `reason`). `screen` runs the cheap
structural checks (encrypted, zip bomb, page count) at upload; `parse` extracts the text.
"""

from faas.documents._model import PageSpan, ParsedDocument, ParseLimits, UnreadableDocument
from faas.documents.chunking import ChunkPiece, chunk, text_hash
from faas.documents.cleaning import clean, redact
from faas.documents.formats import FORMATS, detect_format
from faas.documents.parsers import parse, screen

__all__ = [
    "FORMATS",
    "ChunkPiece",
    "PageSpan",
    "ParseLimits",
    "ParsedDocument",
    "UnreadableDocument",
    "chunk",
    "clean",
    "detect_format",
    "parse",
    "redact",
    "screen",
    "text_hash",
]
