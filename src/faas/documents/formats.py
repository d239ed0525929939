"""Content-first detection of a document's format, and text decoding shared with the parsers.

The extension and the declared content type are hints only: they decide between text formats
that the bytes cannot tell apart (markdown vs plain text vs CSV), never against magic bytes.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
import zipfile
from pathlib import Path
from typing import Final, NoReturn

from faas.shared.exceptions import UnsupportedMediaType

FORMATS: Final = ("pdf", "docx", "html", "markdown", "text", "csv", "json")
SNIFF_BYTES: Final = 64 * 1024
# JSON larger than this is recognised by its opening instead of a full parse (the parser parses).
_JSON_FULL_PARSE_BYTES: Final = 1024 * 1024

_EXTENSIONS: Final = {
    ".pdf": "pdf",
    ".docx": "docx",
    ".html": "html",
    ".htm": "html",
    ".xhtml": "html",
    ".md": "markdown",
    ".markdown": "markdown",
    ".mdx": "markdown",
    ".txt": "text",
    ".text": "text",
    ".log": "text",
    ".csv": "csv",
    ".tsv": "csv",
    ".json": "json",
    ".jsonl": "json",
    ".ndjson": "json",
}
_CONTENT_TYPES: Final = {
    "application/pdf": "pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "text/html": "html",
    "application/xhtml+xml": "html",
    "text/markdown": "markdown",
    "text/x-markdown": "markdown",
    "text/plain": "text",
    "text/csv": "csv",
    "text/tab-separated-values": "csv",
    "application/json": "json",
    "application/x-ndjson": "json",
    "application/jsonl": "json",
}
# Magic bytes of formats we recognise but do not ingest, so the 415 can say what the file is.
_MAGIC: Final[tuple[tuple[bytes, str], ...]] = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"\x7fELF", "elf"),
    (b"\xfe\xed\xfa\xce", "mach-o"),
    (b"\xfe\xed\xfa\xcf", "mach-o"),
    (b"\xce\xfa\xed\xfe", "mach-o"),
    (b"\xcf\xfa\xed\xfe", "mach-o"),
    (b"\xca\xfe\xba\xbe", "java-class"),
    (b"\x00asm", "wasm"),
    (b"\x1f\x8b", "gzip"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"(\xb5/\xfd", "zstd"),
    (b"7z\xbc\xaf\x27\x1c", "7z"),
    (b"Rar!\x1a\x07", "rar"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "ole2"),
    (b"SQLite format 3\x00", "sqlite"),
    (b"OggS", "ogg"),
    (b"fLaC", "flac"),
    (b"%!PS", "postscript"),
    (b"{\\rtf", "rtf"),
)
_HTML_START = re.compile(
    r"^(?:<\?xml[^>]*>\s*)?(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html|head|body)\b", re.I | re.S
)
_MARKDOWN_MARKERS = re.compile(
    r"^(?:#{1,6}[ \t]+\S|```|~~~|[-*+][ \t]+\S|\d+\.[ \t]+\S|>[ \t]|\|.*\|[ \t]*$)"
    r"|\[[^\]\n]+\]\([^)\s]+\)",
    re.M,
)
_BOMS: Final = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")


def hint_format(filename: str | None, content_type: str | None) -> str | None:
    """The format the name or the declared type suggests, if any (never trusted over content)."""
    if content_type:
        hinted = _CONTENT_TYPES.get(content_type.split(";")[0].strip().lower())
        if hinted:
            return hinted
    if filename:
        return _EXTENSIONS.get(Path(filename).suffix.lower())
    return None


def decode_text(data: bytes, *, declared: str | None = None) -> tuple[str, str]:
    """(text, encoding): BOM, then a declared charset, then UTF-8, UTF-16 without BOM, cp1252."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return data.decode(encoding, errors="replace"), encoding
    if declared:
        try:
            return data.decode(declared, errors="replace"), codecs.lookup(declared).name
        except LookupError:
            pass
    # Mostly-ASCII UTF-16 is valid UTF-8 full of NULs: look for it first.
    utf16 = _utf16_without_bom(data) if b"\x00" in data[:4096] else None
    if utf16:
        return data.decode(utf16, errors="replace"), utf16
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError as exc:
        # A multi-byte character cut by a sniffing window is still UTF-8.
        if exc.start >= len(data) - 3 and exc.reason == "unexpected end of data":
            return data.decode("utf-8", errors="ignore"), "utf-8"
    try:
        return data.decode("cp1252"), "cp1252"
    except UnicodeDecodeError:
        return data.decode("latin-1"), "latin-1"


def _utf16_without_bom(data: bytes) -> str | None:
    sample = data[:4096]
    pairs = len(sample) // 2
    if pairs < 2:
        return None
    even_zeros = sample[0::2].count(0)
    odd_zeros = sample[1::2].count(0)
    # Mostly-ASCII UTF-16 has a NUL in every other byte.
    if odd_zeros > 0.4 * pairs and even_zeros < 0.05 * pairs:
        return "utf-16-le"
    if even_zeros > 0.4 * pairs and odd_zeros < 0.05 * pairs:
        return "utf-16-be"
    return None


def looks_binary(text: str) -> bool:
    if "\x00" in text:
        return True
    sample = text[:SNIFF_BYTES]
    return bool(sample) and len(_CONTROL.findall(sample)) > 0.05 * len(sample)


def detect_format(
    head: bytes | Path, *, filename: str | None = None, content_type: str | None = None
) -> str:
    """One of FORMATS, judged from the content; raises UnsupportedMediaType naming the kind.

    Pass the whole file (bytes or a Path): recognising a DOCX means opening the ZIP's
    central directory, which sits at the end of the file. With a Path only the first
    SNIFF_BYTES and the ZIP directory are read.
    """
    hint = hint_format(filename, content_type)
    if isinstance(head, Path):
        with head.open("rb") as fh:
            sample = fh.read(SNIFF_BYTES)
            truncated = bool(fh.read(1))
    else:
        sample, truncated = head[:SNIFF_BYTES], len(head) > SNIFF_BYTES
    if not sample.strip():
        # Nothing to judge: the parser reports it as empty, in the format the caller expected.
        return hint or "text"
    pdf_at = sample.find(b"%PDF-", 0, 1024)
    # Readers accept junk before the header, but text that merely mentions it is text.
    if pdf_at == 0 or (pdf_at > 0 and looks_binary(sample[:pdf_at].decode("latin-1"))):
        return "pdf"
    if sample.startswith(b"PK\x03\x04"):
        return _zip_format(head, hint)
    if sample[:4] == b"RIFF" and sample[8:12] == b"WEBP":
        _unsupported("webp")
    if sample[4:8] == b"ftyp":
        _unsupported("mp4")
    if sample.startswith(b"ID3") and len(sample) > 3 and sample[3] < 10:
        _unsupported("mp3")
    # Two- and three-letter magics that plain text can start with need a second look.
    if sample.startswith(b"MZ") and b"\x00" in sample[:64]:
        _unsupported("exe")
    if re.match(rb"BZh[1-9]1AY&SY", sample):
        _unsupported("bzip2")
    for magic, kind in _MAGIC:
        if sample.startswith(magic):
            _unsupported(kind)
    return _text_format(sample, truncated, head, hint)


def _unsupported(kind: str) -> NoReturn:
    raise UnsupportedMediaType(
        f"Unsupported document type: {kind}",
        details={"detected": kind, "supported": list(FORMATS)},
    )


def _zip_format(source: bytes | Path, hint: str | None) -> str:
    try:
        with zipfile.ZipFile(source if isinstance(source, Path) else io.BytesIO(source)) as zf:
            names = set(zf.namelist())
    except (zipfile.BadZipFile, OSError, ValueError):
        if hint == "docx":
            return "docx"  # let the parser report it as corrupt: a clearer 422 than a 415
        _unsupported("zip")
    if "word/document.xml" in names:
        return "docx"
    kinds = {
        "xl/workbook.xml": "xlsx",
        "ppt/presentation.xml": "pptx",
        "META-INF/container.xml": "epub",
        "content.xml": "opendocument",
    }
    for member, kind in kinds.items():
        if member in names:
            _unsupported(kind)
    _unsupported("zip")


def _text_format(sample: bytes, truncated: bool, whole: bytes | Path, hint: str | None) -> str:
    text, _ = decode_text(sample)
    if looks_binary(text):
        _unsupported("binary")
    stripped = text.lstrip("\ufeff \t\r\n")
    if _HTML_START.match(stripped[:4096]):
        return "html"
    if stripped[:1] in ("{", "[") and (hint == "json" or _is_json(stripped, truncated, whole)):
        return "json"
    if hint == "html" and re.search(r"<(?:p|div|body|title|h[1-6])\b", stripped[:4096], re.I):
        return "html"
    if hint in ("markdown", "text"):
        return hint
    if _is_csv(text, truncated, strict=hint != "csv"):
        return "csv"
    if stripped.startswith("# ") or len(_MARKDOWN_MARKERS.findall(text)) >= 2:
        return "markdown"
    return "text"


def _is_json(text: str, truncated: bool, whole: bytes | Path) -> bool:
    if not truncated or (isinstance(whole, bytes) and len(whole) <= _JSON_FULL_PARSE_BYTES):
        full = whole if isinstance(whole, bytes) else None
        body = decode_text(full)[0] if full is not None else text
        try:
            json.loads(body)
            return True
        except RecursionError:
            return True  # JSON all the same: the parser refuses it with the depth limit
        except ValueError:
            return _is_json_lines(body)
    # Too large to parse twice: accept a JSON-looking opening (the parser validates fully).
    return bool(re.match(r"[\[{]\s*[\[{\"]", text))


def _is_json_lines(text: str) -> bool:
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) < 2:
        return False
    try:
        return all(isinstance(json.loads(line), dict) for line in lines[:50])
    except (ValueError, RecursionError):
        return False


def _is_csv(text: str, truncated: bool, *, strict: bool) -> bool:
    lines = text.splitlines()
    if truncated and len(lines) > 1:
        lines = lines[:-1]  # the last line may be cut by the sniffing window
    lines = [line for line in lines[:50] if line.strip()]
    if len(lines) < (3 if strict else 2):
        return False
    sample = "\n".join(lines)
    try:
        dialect = csv.Sniffer().sniff(sample, delimiters=",;\t|")
        rows = list(csv.reader(io.StringIO(sample), dialect))
    except csv.Error:
        return False
    widths = {len(row) for row in rows if row}
    return len(widths) == 1 and widths.pop() >= 2
