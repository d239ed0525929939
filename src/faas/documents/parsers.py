"""Bytes (or a file) of a detected format to text with page spans, within resource limits."""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path
from typing import Any

import docx
from docx.opc.exceptions import PackageNotFoundError
from docx.table import Table
from docx.text.paragraph import Paragraph
from pypdf import PdfReader
from pypdf.errors import DependencyError, LimitReachedError, PdfReadError

from faas.documents._html import html_to_text
from faas.documents._model import PageSpan, ParsedDocument, ParseLimits, UnreadableDocument
from faas.documents._records import csv_to_text, json_to_text
from faas.documents.formats import FORMATS, decode_text, looks_binary
from faas.shared.exceptions import UnsupportedMediaType

__all__ = [
    "PageSpan",
    "ParseLimits",
    "ParsedDocument",
    "UnreadableDocument",
    "parse",
    "screen",
]

# Small members compress extremely well when repetitive; only a big one can be a bomb.
_RATIO_FLOOR_BYTES = 1024 * 1024
_MD_TITLE = re.compile(r"^#[ \t]+(.+?)[ \t#]*$", re.M)
_FRONT_MATTER_TITLE = re.compile(r"\A---\n(?:.*\n)*?title:[ \t]*[\"']?(.+?)[\"']?[ \t]*\n", re.M)
# A malformed DOCX surfaces as any of these from python-docx and lxml (XMLSyntaxError is one).
_DOCX_ERRORS = (
    PackageNotFoundError,
    zipfile.BadZipFile,
    KeyError,
    ValueError,
    TypeError,
    AttributeError,
    IndexError,
    SyntaxError,
)


def screen(data: bytes | Path, fmt: str, *, limits: ParseLimits = ParseLimits()) -> None:
    """The checks that need no text extraction, cheap enough to run while the client waits:
    empty, encrypted, structurally corrupt, over the page limit, a zip bomb (from the ZIP
    directory), text formats too large to fit `max_chars`. Raises UnreadableDocument (422).
    `parse` runs the same checks first, then finds what only extraction can (no text, a
    corrupt page, too many characters)."""
    size = _size(data, fmt)
    if fmt == "pdf":
        _open_pdf(data, limits)
    elif fmt == "docx":
        _check_zip(data, limits)
    elif size > limits.max_chars * 4:
        raise _too_large(limits)


def parse(data: bytes | Path, fmt: str, *, limits: ParseLimits = ParseLimits()) -> ParsedDocument:
    """Text, title, page spans and metadata of a document; raises UnreadableDocument (422)."""
    size = _size(data, fmt)
    pages: list[PageSpan] | None = None
    metadata: dict[str, Any] = {}
    title: str | None = None
    if fmt == "pdf":
        text, title, pages, metadata = _parse_pdf(data, limits)
    elif fmt == "docx":
        text, title, pages, metadata = _parse_docx(data, limits)
    else:
        if size > limits.max_chars * 4:
            raise _too_large(limits)
        raw = data.read_bytes() if isinstance(data, Path) else data
        if fmt == "html":
            text, title, metadata["encoding"] = html_to_text(raw, limits.max_chars)
        else:
            text, metadata["encoding"] = decode_text(raw)
            if looks_binary(text):
                raise UnreadableDocument(
                    f"The {fmt} document contains binary data", reason="corrupt"
                )
            text = text.replace("\r\n", "\n").replace("\r", "\n")
            if fmt == "csv":
                text, extra = csv_to_text(text, limits)
                metadata.update(extra)
            elif fmt == "json":
                text, title, extra = json_to_text(text, limits)
                metadata.update(extra)
            elif fmt == "markdown":
                found = _FRONT_MATTER_TITLE.search(text) or _MD_TITLE.search(text)
                title = found.group(1).strip() if found else None
    if len(text) > limits.max_chars:
        raise _too_large(limits)
    if not text.strip():
        raise UnreadableDocument("The document has no text", reason="empty")
    spans = pages if pages is not None else [PageSpan(1, 0, len(text))]
    metadata["page_count"] = len(spans)
    return ParsedDocument(text=text, format=fmt, title=title, pages=spans, metadata=metadata)


def _size(data: bytes | Path, fmt: str) -> int:
    if fmt not in FORMATS:
        raise UnsupportedMediaType(f"Unsupported document format: {fmt}", details={"format": fmt})
    size = data.stat().st_size if isinstance(data, Path) else len(data)
    if size == 0:
        raise UnreadableDocument("The document is empty", reason="empty")
    return size


def _too_large(limits: ParseLimits) -> UnreadableDocument:
    return UnreadableDocument(
        f"The document's text exceeds {limits.max_chars} characters",
        reason="too_large",
        details={"max_chars": limits.max_chars},
    )


def _stream(data: bytes | Path) -> io.BytesIO | Path:
    return data if isinstance(data, Path) else io.BytesIO(data)


def _open_pdf(data: bytes | Path, limits: ParseLimits) -> tuple[PdfReader, int]:
    """The reader and its page count; refuses a PDF that needs a password, cannot be opened,
    or has more pages than allowed. Reads the cross-reference table and the page tree only."""
    try:
        reader = PdfReader(_stream(data))
        if reader.is_encrypted:
            try:
                decrypted = bool(reader.decrypt(""))
            except (DependencyError, NotImplementedError, PdfReadError):
                # pypdf raises NotImplementedError for encryption schemes it cannot open.
                decrypted = False
            if not decrypted:
                raise UnreadableDocument("The PDF is password-protected", reason="encrypted")
        page_count = len(reader.pages)
    except LimitReachedError as exc:
        raise UnreadableDocument(
            f"The PDF exceeds a safety limit: {exc}", reason="too_large"
        ) from exc
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
        raise UnreadableDocument(f"The PDF is corrupt: {exc}", reason="corrupt") from exc
    if page_count > limits.max_pages:
        raise UnreadableDocument(
            f"The PDF has {page_count} pages, more than {limits.max_pages}",
            reason="too_many_pages",
            details={"pages": page_count, "max_pages": limits.max_pages},
        )
    return reader, page_count


def _parse_pdf(
    data: bytes | Path, limits: ParseLimits
) -> tuple[str, str | None, list[PageSpan], dict[str, Any]]:
    reader, page_count = _open_pdf(data, limits)
    parts: list[str] = []
    spans: list[PageSpan] = []
    failed: list[int] = []
    position = 0
    for number in range(1, page_count + 1):
        try:
            page_text = reader.pages[number - 1].extract_text() or ""
        except LimitReachedError as exc:
            raise UnreadableDocument(
                f"Page {number} exceeds a safety limit: {exc}", reason="too_large"
            ) from exc
        # One malformed page must not cost the rest; pypdf raises a wide variety here.
        except Exception:
            failed.append(number)
            page_text = ""
        page_text = page_text.strip()
        if parts:
            position += 2
        spans.append(PageSpan(number, position, position + len(page_text)))
        parts.append(page_text)
        position += len(page_text)
        if position > limits.max_chars:
            raise _too_large(limits)
    if not any(parts):
        raise UnreadableDocument(
            "The PDF has no extractable text (scanned or image-only pages need OCR)",
            reason="no_text",
            details={"pages": page_count, "failed_pages": failed},
        )
    metadata: dict[str, Any] = {"encrypted": reader.is_encrypted, "failed_pages": failed}
    title = None
    try:
        info = reader.metadata
        if info is not None:
            title = " ".join(str(info.title or "").split()) or None
            metadata["author"] = str(info.author) if info.author else None
            metadata["producer"] = str(info.producer) if info.producer else None
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError):
        pass
    return "\n\n".join(parts), title, spans, metadata


def _check_zip(data: bytes | Path, limits: ParseLimits) -> None:
    """Refuse a zip bomb from its directory, before anything is decompressed.

    The declared sizes can be trusted as an upper bound: zipfile stops reading a member at
    its declared size and fails its CRC check when the real data is longer.
    """
    try:
        with zipfile.ZipFile(_stream(data)) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise UnreadableDocument(f"The DOCX is not a valid ZIP: {exc}", reason="corrupt") from exc
    bomb = len(infos) > limits.max_zip_members
    total = sum(info.file_size for info in infos)
    bomb = bomb or total > limits.max_uncompressed_bytes
    worst = max(
        (
            info.file_size / max(info.compress_size, 1)
            for info in infos
            if info.file_size > _RATIO_FLOOR_BYTES
        ),
        default=0.0,
    )
    if bomb or worst > limits.max_compression_ratio:
        raise UnreadableDocument(
            "The DOCX expands far beyond its size (zip bomb)",
            reason="zip_bomb",
            details={"members": len(infos), "uncompressed_bytes": total, "ratio": round(worst)},
        )
    if not any(info.filename == "word/document.xml" for info in infos):
        raise UnreadableDocument("The DOCX has no word/document.xml", reason="corrupt")


def _heading_level(paragraph: Paragraph) -> int:
    name = paragraph.style.name if paragraph.style is not None else None
    if not name:
        return 0
    if name == "Title":
        return 1
    match = re.fullmatch(r"Heading (\d)", name)
    return min(int(match.group(1)), 6) if match else 0


def _table_lines(table: Table) -> list[str]:
    lines = []
    for row in table.rows:
        cells, seen = [], set()
        for cell in row.cells:
            # Merged cells come back once per grid column they span.
            if id(cell._tc) not in seen:
                seen.add(id(cell._tc))
                cells.append(" ".join(cell.text.split()))
        if any(cells):
            lines.append("| " + " | ".join(cells) + " |")
            if len(lines) == 1:
                lines.append("|" + " --- |" * len(cells))
    return lines


def _page_break(paragraph: Paragraph, selector: str) -> str | None:
    """'before' or 'after' the paragraph when it holds a page break, else None."""
    runs = paragraph._p.xpath(f"./w:r[{selector}][1]")
    if not runs:
        return None
    return "after" if runs[0].xpath("count(preceding-sibling::w:r/w:t)") else "before"


def _parse_docx(
    data: bytes | Path, limits: ParseLimits
) -> tuple[str, str | None, list[PageSpan], dict[str, Any]]:
    _check_zip(data, limits)
    blocks: list[str] = []
    breaks: list[int] = []  # block indexes that start a new page
    try:
        document = docx.Document(str(data) if isinstance(data, Path) else io.BytesIO(data))
        body = document.element.body
        # Word saves where its layout broke pages; without that, use the hard page breaks.
        rendered = bool(body.xpath(".//w:lastRenderedPageBreak"))
        selector = ".//w:lastRenderedPageBreak" if rendered else ".//w:br[@w:type='page']"
        for item in document.iter_inner_content():
            if isinstance(item, Table):
                lines = _table_lines(item)
                if lines:
                    blocks.append("\n".join(lines))
                continue
            where = _page_break(item, selector)
            if where == "before" and blocks:
                breaks.append(len(blocks))
            text = item.text.strip()
            level = _heading_level(item)
            style = item.style.name if item.style is not None else ""
            if text and level:
                blocks.append("#" * level + " " + " ".join(text.split()))
            elif text:
                blocks.append(("- " + text) if (style or "").startswith("List") else text)
            if where == "after":
                breaks.append(len(blocks))
        properties = document.core_properties
        title = (properties.title or "").strip() or None
        metadata: dict[str, Any] = {
            "author": properties.author or None,
            "created": properties.created.isoformat() if properties.created else None,
            "modified": properties.modified.isoformat() if properties.modified else None,
            "page_breaks": "rendered" if rendered else "hard",
        }
    except _DOCX_ERRORS as exc:
        raise UnreadableDocument(f"The DOCX is corrupt: {exc}", reason="corrupt") from exc
    if len(set(breaks)) + 1 > limits.max_pages:
        raise UnreadableDocument(
            f"The DOCX has more than {limits.max_pages} pages",
            reason="too_many_pages",
            details={"max_pages": limits.max_pages},
        )
    spans: list[PageSpan] = []
    position, first_block = 0, 0
    starts = [b for b in sorted(set(breaks)) if 0 < b < len(blocks)]
    for number, end_block in enumerate([*starts, len(blocks)], start=1):
        page_text = "\n\n".join(blocks[first_block:end_block])
        spans.append(PageSpan(number, position, position + len(page_text)))
        position += len(page_text) + (2 if page_text and end_block < len(blocks) else 0)
        first_block = end_block
    return "\n\n".join(blocks), title, spans, metadata
