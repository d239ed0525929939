"""faas.documents on real files that the tests build: PDFs written byte by byte with a
correct xref table, DOCX from python-docx, a zip bomb, HTML, markdown, CSV, JSON, UTF-16."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from itertools import pairwise
from pathlib import Path

import docx
import pytest
from pypdf import PdfReader, PdfWriter

from faas.documents import (
    ParsedDocument,
    ParseLimits,
    UnreadableDocument,
    chunk,
    clean,
    detect_format,
    parse,
    screen,
    text_hash,
)
from faas.shared.exceptions import UnsupportedMediaType
from faas.shared.tokens import count_tokens

HEADER = "ACME Corp - Confidential Quarterly Report"
SENTENCES = [
    "Revenue grew in every region during the quarter.",
    "The board reviewed the forecast and approved the budget.",
    "Customer churn fell for the third consecutive month.",
    "Operating costs remained within the planned envelope.",
]


def _pdf_string(text: str) -> bytes:
    escaped = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    return b"(" + escaped.encode("latin-1") + b")"


def make_pdf(
    pages: list[list[str]], *, title: str | None = None, image_only: bool = False
) -> bytes:
    """A PDF with one Helvetica text line per entry; header, body and footer as the caller
    lays them out (the first and last line of a page are placed at the page edges)."""
    objects: list[bytes] = []

    def add(body: bytes) -> int:
        objects.append(body)
        return len(objects)

    catalog = add(b"")  # filled in once the page tree exists
    tree = add(b"")
    font = add(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    image = add(
        b"<< /Type /XObject /Subtype /Image /Width 2 /Height 2 /ColorSpace /DeviceGray"
        b" /BitsPerComponent 8 /Length 4 >>\nstream\n\x00\x80\xff\x40\nendstream"
    )
    kids = []
    for lines in pages:
        if image_only:
            content = b"q 200 0 0 200 72 500 cm /Im1 Do Q"
        else:
            parts = []
            for i, line in enumerate(lines):
                y = 770 if i == 0 else 40 if i == len(lines) - 1 else 720 - 16 * i
                parts.append(b"BT /F1 11 Tf 72 %d Td %s Tj ET" % (y, _pdf_string(line)))
            content = b"\n".join(parts)
        stream = add(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(content), content))
        kids.append(
            add(
                b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 612 792] /Contents %d 0 R"
                b" /Resources << /Font << /F1 %d 0 R >> /XObject << /Im1 %d 0 R >> >> >>"
                % (tree, stream, font, image)
            )
        )
    objects[catalog - 1] = b"<< /Type /Catalog /Pages %d 0 R >>" % tree
    refs = b" ".join(b"%d 0 R" % kid for kid in kids)
    objects[tree - 1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (refs, len(kids))
    info = add(b"<< /Title %s >>" % _pdf_string(title)) if title else None
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    trailer = b"/Size %d /Root %d 0 R" % (len(objects) + 1, catalog)
    if info:
        trailer += b" /Info %d 0 R" % info
    out += b"trailer\n<< %s >>\nstartxref\n%d\n%%%%EOF\n" % (trailer, xref)
    return bytes(out)


def report_pdf(page_count: int = 4) -> bytes:
    pages = []
    for n in range(1, page_count + 1):
        body = [f"Section {n} opens with MARKER-P{n} as its anchor, right below the header."]
        body += [f"{s} (page {n}, note {k})" for k, s in enumerate(SENTENCES)]
        if n == 2:
            body += ["The analysts expect more infor-", "mation next quarter."]
        pages.append([HEADER, *body, f"Page {n} of {page_count}"])
    return make_pdf(pages, title="Quarterly Report")


def encrypt(pdf: bytes, user_password: str, *, algorithm: str = "AES-128") -> bytes:
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf)))
    writer.encrypt(user_password=user_password, owner_password="owner", algorithm=algorithm)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def make_docx() -> bytes:
    document = docx.Document()
    document.core_properties.title = "Operator Guide"
    document.add_heading("Installation", level=1)
    document.add_paragraph("Read the whole guide before you start the installation.")
    document.add_heading("Linux", level=2)
    document.add_paragraph("On Linux, unpack the archive and run the LINUX-STEP installer.")
    table = document.add_table(rows=3, cols=2)
    for row, (name, value) in enumerate([("Name", "Value"), ("port", "8080"), ("mode", "fast")]):
        table.cell(row, 0).text = name
        table.cell(row, 1).text = value
    document.add_page_break()
    document.add_heading("Usage", level=1)
    document.add_paragraph("Start the service; SECOND-PAGE-MARKER confirms it is up.")
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def zip_bomb() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        archive.writestr("word/document.xml", "<document/>")
        with archive.open("word/media/image1.bin", "w") as member:
            block = b"\x00" * (1024 * 1024)
            for _ in range(24):
                member.write(block)
    return out.getvalue()


def zip_of_many(members: int) -> bytes:
    """A valid DOCX-shaped ZIP of `members` empty entries: tiny on disk, costly to walk."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("word/document.xml", "<document/>")
        for number in range(members - 1):
            archive.writestr(f"{number:x}", b"")
    return out.getvalue()


def fmt_and_parse(data: bytes, filename: str | None = None) -> ParsedDocument:
    return parse(data, detect_format(data, filename=filename))


def reason_of(data: bytes, fmt: str, limits: ParseLimits | None = None) -> str:
    with pytest.raises(UnreadableDocument) as caught:
        parse(data, fmt, limits=limits or ParseLimits())
    assert caught.value.status_code == 422
    assert caught.value.details["reason"] == caught.value.reason
    return caught.value.reason


# ---- detection ---------------------------------------------------------------------------


def test_detection_trusts_content_over_a_wrong_extension() -> None:
    assert detect_format(report_pdf(), filename="report.txt", content_type="text/plain") == "pdf"
    assert detect_format(make_docx(), filename="notes.pdf") == "docx"
    html = b"<!DOCTYPE html><html><body><p>x</p></body></html>"
    assert detect_format(html, filename="page.docx") == "html"
    assert detect_format(b'[{"a": 1}, {"a": 2}]', filename="data.csv") == "json"
    assert detect_format(b"name,city\nAlice,Paris\nBob,Rome\n") == "csv"
    assert detect_format(b"# Title\n\nSome *text*.\n\n- item\n") == "markdown"
    assert detect_format(b"Just a plain note about nothing.") == "text"
    assert detect_format(b"plain words", filename="notes.md") == "markdown"


def test_detection_reads_a_path_and_utf16(tmp_path: Path) -> None:
    path = tmp_path / "guide.bin"
    path.write_bytes(make_docx())
    assert detect_format(path) == "docx"
    utf16 = "Ein naïver Text über Grüße.\nZweite Zeile.".encode("utf-16")
    assert detect_format(utf16) == "text"
    assert "naïver" in fmt_and_parse(utf16).text
    no_bom = "Plain UTF-16 without a byte order mark, naïve.".encode("utf-16-le")
    assert fmt_and_parse(no_bom).text == "Plain UTF-16 without a byte order mark, naïve."
    mentions = b"A PDF file starts with %PDF-1.7 and ends with %%EOF.\n"
    assert detect_format(mentions) == "text"
    assert detect_format(b"junk before\x00\x01 %PDF-1.4\n") == "pdf"


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + b"\x00" * 40, "png"),
        (b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 56, "elf"),
        (b"\x00\x01\x02\x03\xfe\xff" * 200, "binary"),
    ],
)
def test_unsupported_binaries_are_415_naming_the_kind(data: bytes, kind: str) -> None:
    with pytest.raises(UnsupportedMediaType) as caught:
        detect_format(data, filename="harmless.txt")
    assert caught.value.status_code == 415
    assert caught.value.details["detected"] == kind


def test_office_and_plain_zips_are_415() -> None:
    for member, kind in (("xl/workbook.xml", "xlsx"), ("readme.txt", "zip")):
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w") as archive:
            archive.writestr(member, "x")
        with pytest.raises(UnsupportedMediaType) as caught:
            detect_format(out.getvalue(), filename="file.docx")
        assert caught.value.details["detected"] == kind


def test_empty_and_blank_files_are_422_empty() -> None:
    assert detect_format(b"", filename="a.pdf") == "pdf"
    assert reason_of(b"", "pdf") == "empty"
    assert reason_of(b"  \n\t\n", detect_format(b"  \n\t\n")) == "empty"
    assert reason_of(b"<html><script>x()</script></html>", "html") == "empty"


# ---- PDF ---------------------------------------------------------------------------------


def test_pdf_pages_title_and_spans() -> None:
    doc = parse(report_pdf(), "pdf")
    assert doc.title == "Quarterly Report"
    assert [span.page for span in doc.pages] == [1, 2, 3, 4]
    for span in doc.pages:
        assert f"MARKER-P{span.page}" in doc.text[span.start : span.end]
        assert f"MARKER-P{span.page + 1}" not in doc.text[span.start : span.end]


def test_pdf_cleaning_removes_headers_footers_and_remaps_pages() -> None:
    parsed = parse(report_pdf(), "pdf")
    assert parsed.text.count(HEADER) == 4 and "Page 3 of 4" in parsed.text
    doc = clean(parsed)
    assert HEADER not in doc.text
    assert "Page 3 of 4" not in doc.text and "of 4" not in doc.text
    assert "more information next quarter" in doc.text  # de-hyphenated across the line break
    assert doc.metadata["boilerplate_lines_removed"] == 8
    for span in doc.pages:
        page_text = doc.text[span.start : span.end]
        assert page_text.startswith(f"Section {span.page} opens with MARKER-P{span.page}")
        assert page_text.endswith(f"(page {span.page}, note 3)") or span.page == 2


def test_pdf_chunks_cite_the_right_pages() -> None:
    doc = clean(parse(report_pdf(), "pdf"))
    pieces = chunk(doc, chunk_size=40, chunk_overlap=8)
    assert len(pieces) > 8
    for piece in pieces:
        assert piece.metadata["page"] == piece.metadata["pages"][0]
        for page in range(1, 5):
            if f"(page {page}," in piece.text or f"MARKER-P{page}" in piece.text:
                assert page in piece.metadata["pages"], (piece.text, piece.metadata)
    anchors = [p for p in pieces if "MARKER-P3" in p.text]
    assert anchors and all(3 in p.metadata["pages"] for p in anchors)


def test_pdf_encrypted_needs_a_password_unless_it_is_empty() -> None:
    assert reason_of(encrypt(report_pdf(2), "secret"), "pdf") == "encrypted"
    opened = parse(encrypt(report_pdf(2), ""), "pdf")
    assert "MARKER-P2" in opened.text and opened.metadata["encrypted"] is True


def test_pdf_unreadable_reasons() -> None:
    assert reason_of(make_pdf([["x"], ["y"]], image_only=True), "pdf") == "no_text"
    assert reason_of(report_pdf(4), "pdf", ParseLimits(max_pages=3)) == "too_many_pages"
    assert reason_of(b"%PDF-1.7\nthis is not a pdf at all\n", "pdf") == "corrupt"
    assert reason_of(report_pdf(4), "pdf", ParseLimits(max_chars=500)) == "too_large"


def test_pdf_from_a_path(tmp_path: Path) -> None:
    path = tmp_path / "report"
    path.write_bytes(report_pdf(2))
    assert parse(path, detect_format(path)).pages[1].page == 2


# ---- DOCX --------------------------------------------------------------------------------


def test_docx_structure_pages_and_heading_metadata() -> None:
    doc = fmt_and_parse(make_docx(), "guide.docx")
    assert doc.title == "Operator Guide"
    lines = doc.text.splitlines()
    assert "# Installation" in lines and "## Linux" in lines and "# Usage" in lines
    assert "| Name | Value |" in lines and "| port | 8080 |" in lines
    assert [span.page for span in doc.pages] == [1, 2]
    assert "SECOND-PAGE-MARKER" in doc.text[doc.pages[1].start : doc.pages[1].end]
    assert "LINUX-STEP" in doc.text[doc.pages[0].start : doc.pages[0].end]
    pieces = chunk(clean(doc), chunk_size=24, chunk_overlap=4)
    linux = [p for p in pieces if "LINUX-STEP" in p.text]
    assert linux and all(p.metadata["heading"] == "Installation > Linux" for p in linux)
    usage = [p for p in pieces if "SECOND-PAGE-MARKER" in p.text]
    assert usage and all(p.metadata["pages"] == [2] for p in usage)
    assert usage[0].metadata["heading"] == "Usage"


def test_docx_zip_bomb_is_refused_before_decompressing() -> None:
    bomb = zip_bomb()
    assert len(bomb) < 200_000
    assert detect_format(bomb, filename="invoice.docx") == "docx"
    assert reason_of(bomb, "docx") == "zip_bomb"
    assert reason_of(make_docx(), "docx", ParseLimits(max_uncompressed_bytes=10_000)) == "zip_bomb"
    assert reason_of(b"PK\x03\x04 truncated", "docx") == "corrupt"


def screened_reason(data: bytes, fmt: str, limits: ParseLimits | None = None) -> str:
    with pytest.raises(UnreadableDocument) as caught:
        screen(data, fmt, limits=limits or ParseLimits())
    assert caught.value.status_code == 422
    return caught.value.reason


def test_screening_refuses_zip_bombs_by_ratio_total_size_and_member_count() -> None:
    assert screened_reason(zip_bomb(), "docx") == "zip_bomb"
    many = zip_of_many(50)
    screen(many, "docx", limits=ParseLimits(max_zip_members=50))
    assert screened_reason(many, "docx", ParseLimits(max_zip_members=49)) == "zip_bomb"
    assert screened_reason(zip_of_many(10_001), "docx") == "zip_bomb"
    document = make_docx()
    screen(document, "docx")
    assert screened_reason(document, "docx", ParseLimits(max_uncompressed_bytes=10_000)) == (
        "zip_bomb"
    )
    assert screened_reason(b"PK\x03\x04 truncated", "docx") == "corrupt"


def test_screening_refuses_encrypted_and_long_pdfs_without_extracting_text() -> None:
    assert screened_reason(encrypt(report_pdf(2), "secret"), "pdf") == "encrypted"
    assert screened_reason(encrypt(report_pdf(2), "s", algorithm="AES-256"), "pdf") == "encrypted"
    assert screened_reason(report_pdf(4), "pdf", ParseLimits(max_pages=3)) == "too_many_pages"
    assert screened_reason(b"%PDF-1.7\nthis is not a pdf at all\n", "pdf") == "corrupt"
    screen(encrypt(report_pdf(2), ""), "pdf")
    # Only extraction can tell that a PDF has no text: screening lets it through.
    screen(make_pdf([["x"]], image_only=True), "pdf")


def test_screening_refuses_empty_files_and_text_beyond_the_character_limit() -> None:
    assert screened_reason(b"", "text") == "empty"
    assert screened_reason(b"a" * 41, "text", ParseLimits(max_chars=10)) == "too_large"
    screen(b"a" * 40, "text", limits=ParseLimits(max_chars=10))


# ---- HTML, markdown, CSV, JSON, text -----------------------------------------------------


def test_html_drops_scripts_and_navigation_and_keeps_structure() -> None:
    page = (
        b'<!doctype html><html><head><meta charset="windows-1252"><title>Caf\xe9 Guide</title>'
        b"<style>body { color: red }</style><script>var secret = 1;</script></head><body>"
        b'<nav><a href="/">Home</a> | <a href="/about">About us</a></nav>'
        b"<h1>Main Title</h1><p>Tom &amp; Jerry visit the caf\xe9 &eacute;t&eacute;.</p>"
        b"<div>First block</div><div>Second block</div><h2>Details</h2>"
        b"<ul><li>one</li><li>two</li></ul><table><tr><th>k</th><th>v</th></tr></table>"
        b"<noscript>enable js</noscript><footer>Copyright footer</footer></body></html>"
    )
    doc = fmt_and_parse(page, "page.txt")
    assert doc.format == "html" and doc.title == "Café Guide"
    for hidden in ("secret", "color", "Home", "About us", "enable js", "Copyright"):
        assert hidden not in doc.text
    blocks = doc.text.split("\n\n")
    assert blocks[:2] == ["# Main Title", "Tom & Jerry visit the café été."]
    assert "First block" in blocks and "Second block" in blocks and "## Details" in blocks
    assert "- one\n- two" in blocks and "k | v" in blocks


def test_markdown_headings_flow_into_chunk_metadata() -> None:
    text = (
        "# Install\n\n## Linux\n\n"
        + " ".join(f"Linux step {i} installs a package." for i in range(40))
        + "\n\n```\n# not a heading inside code\n```\n\n## Windows\n\nRun the setup program.\n"
    )
    doc = fmt_and_parse(text.encode())
    assert doc.format == "markdown" and doc.title == "Install"
    pieces = chunk(doc, chunk_size=50, chunk_overlap=10)
    assert {p.metadata["heading"] for p in pieces} == {"Install > Linux", "Install > Windows"}
    assert pieces[0].text.startswith("# Install\n\n## Linux")
    assert pieces[-1].text == "## Windows\n\nRun the setup program."


def test_csv_records_become_lines() -> None:
    data = b"name,city,notes\r\nAlice,Paris,likes tea\r\nBob,Rome,\r\n"
    doc = fmt_and_parse(data)
    assert doc.format == "csv"
    assert doc.text == "name: Alice; city: Paris; notes: likes tea\nname: Bob; city: Rome"
    assert reason_of(data, "csv", ParseLimits(max_csv_rows=1)) == "too_large"


def test_json_records_are_flattened() -> None:
    payload = {
        "title": "Users",
        "items": [
            {"id": 1, "user": {"name": "Ann", "tags": ["a", "b"]}, "active": True},
            {"id": 2, "user": {"name": "Ben", "tags": []}, "active": None},
        ],
    }
    doc = fmt_and_parse(json.dumps(payload).encode(), "export.bin")
    assert doc.format == "json" and doc.title == "Users"
    assert doc.text.split("\n\n") == [
        "title: Users",
        "id: 1\nuser.name: Ann\nuser.tags: a, b\nactive: true",
        "id: 2\nuser.name: Ben\nactive: null",
    ]
    lines = b'{"q": "a?", "a": "yes"}\n{"q": "b?", "a": "no"}\n'
    assert fmt_and_parse(lines).text == "q: a?\na: yes\n\nq: b?\na: no"
    deep = b'{"a":' * 80 + b"1" + b"}" * 80
    assert reason_of(deep, "json") == "too_large"
    bomb = b"[" * 100_000 + b"]" * 100_000
    assert detect_format(bomb) == "json" and reason_of(bomb, "json") == "too_large"
    assert reason_of(b'{"a": ', "json") == "corrupt"


# ---- cleaning ----------------------------------------------------------------------------


def test_pii_redaction_validates_cards_with_luhn() -> None:
    text = (
        "Mail jane.doe+rag@example.co.uk or call +44 20 7946 0958, (415) 555-2671 or "
        "030 12345678. Card 4111 1111 1111 1111 is valid; 4111 1111 1111 1112 is not. "
        "Build 2024-01-15 from 10.0.0.1 costs 1,234,567."
    )
    doc = ParsedDocument(text, "text", None, [], {})
    redacted = clean(doc, redact_pii=True)
    assert redacted.text == (
        "Mail [EMAIL] or call [PHONE], [PHONE] or [PHONE]. Card [CARD] is valid; "
        "4111 1111 1111 1112 is not. Build 2024-01-15 from 10.0.0.1 costs 1,234,567."
    )
    assert redacted.metadata["redactions"] == {"card": 1, "email": 1, "phone": 3}
    assert clean(doc).text == text


def test_cleaning_normalises_unicode_controls_and_whitespace() -> None:
    text = "ﬁle\u00a0name\x07 with\u200b  gaps\t\there\r\n\r\n\r\n\r\nnext  paragraph  "
    assert clean(ParsedDocument(text, "text", None, [], {})).text == (
        "file name with gaps here\n\nnext paragraph"
    )


# ---- chunking ----------------------------------------------------------------------------


def long_document() -> ParsedDocument:
    paragraphs = []
    for i in range(60):
        sentences = [f"Paragraph {i} sentence {k} talks about topic {i * k % 7}." for k in range(9)]
        paragraphs.append(" ".join(sentences))
    text = "\n\n".join(paragraphs) + "\n\n" + BLOB + "\n\nend"
    return ParsedDocument(text, "text", None, [], {})


# A 3,200-character run without whitespace: only the token-level split can cut it.
BLOB = "".join(hashlib.sha256(str(i).encode()).hexdigest() for i in range(50))


def test_chunks_respect_the_budget_and_overlap_is_bounded() -> None:
    doc = long_document()
    pieces = chunk(doc, chunk_size=64, chunk_overlap=16)
    overlapped = 0
    for previous, piece in pairwise(pieces):
        assert piece.text == doc.text[piece.start : piece.end]
        assert piece.token_count == count_tokens(piece.text) <= 64
        if piece.start < previous.end:
            overlapped += 1
            shared = doc.text[piece.start : previous.end]
            assert count_tokens(shared) <= 16 and piece.metadata["overlap_chars"] == len(shared)
            assert piece.start > previous.start and not shared[0].isspace()
    assert overlapped > len(pieces) // 2
    covered: set[int] = set()
    for piece in pieces:
        covered.update(range(piece.start, piece.end))
    assert all(i in covered for i, char in enumerate(doc.text) if not char.isspace())
    assert [p.ordinal for p in pieces] == list(range(len(pieces)))


def test_chunking_without_overlap_and_deterministic() -> None:
    doc = long_document()
    first = chunk(doc, chunk_size=100, chunk_overlap=0)
    assert first == chunk(doc, chunk_size=100, chunk_overlap=0)
    assert all(a.end <= b.start for a, b in pairwise(first))
    assert all(p.metadata["overlap_chars"] == 0 and p.metadata["heading"] is None for p in first)
    prose = [p for p in first if p.text[-1] not in "0123456789abcdef"]
    assert len(prose) > 10 and all(p.text.endswith((".", "end")) for p in prose)
    assert sum(p.text in BLOB for p in first) >= 5
    with pytest.raises(Exception, match="chunk_overlap"):
        chunk(doc, chunk_size=50, chunk_overlap=50)


def test_packing_verifies_the_exact_count() -> None:
    # Runs of spaces are tokens of their own that the per-piece estimate does not see.
    text = "     ".join(f"w{i}" for i in range(400))
    pieces = chunk(ParsedDocument(text, "text", None, [], {}), chunk_size=12, chunk_overlap=3)
    assert all(p.token_count == count_tokens(p.text) <= 12 for p in pieces)
    assert pieces[-1].text.endswith("w399")


def test_text_hash_ignores_formatting_only() -> None:
    assert text_hash("Hello  world\n") == text_hash("Hello world")
    assert text_hash("ﬁle") == text_hash("file")
    assert text_hash("Hello world") != text_hash("Hello World")
    assert len(text_hash("x")) == 64
