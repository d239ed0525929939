"""Normalise parsed text for retrieval, page by page so that page spans stay exact.

Every transformation works inside one page's text; the cleaned pages are joined again and
their spans recomputed, so a chunk's character offsets still map to the right page.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from typing import Final

from faas.documents._model import PageSpan, ParsedDocument, UnreadableDocument

_LINE_BREAKS = re.compile(r"\r\n?|[\u2028\u2029\x0b\x0c\x85]")
# C0/C1 controls except tab and newline, and invisible format characters (soft hyphen,
# zero-width spaces and joiners, bidi overrides, BOM) that split words for a tokenizer.
_INVISIBLE = re.compile(
    r"[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f\xad\u200b-\u200f\u202a-\u202e\u2060-\u2064"
    r"\u2066-\u2069\ufeff\ufff9-\ufffb]"
)
_SPACE_RUN = re.compile(r"(?<=\S)[ \t]+")
_TRAILING_SPACE = re.compile(r"[ \t]+$", re.M)
_BLANK_LINES = re.compile(r"\n(?:[ \t]*\n)+")
_HYPHEN_BREAK = re.compile(r"(?<=[^\W\d_])-[ \t]*\n[ \t]*(?=([^\W\d_]))")
_PAGE_NUMBER = re.compile(
    r"(?:(?:page|p\.|pg\.?|seite|página|pagina)\s*)?[-\u2013\u2014]?\s*#\s*[-\u2013\u2014]?"
    r"(?:\s*(?:of|/|von|de|sur)\s*#)?",
    re.I,
)
_DIGITS = re.compile(r"\d+")
_EDGE_LINES: Final = 3
_NUMBERED_LINE_MAX: Final = 50

_EMAIL = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"
    r"(?![\w-])"
)
# Card numbers start with 2-6 (Mastercard 2-series, Amex/Diners/JCB, Visa, Mastercard,
# Discover/UnionPay); a tenth of arbitrary digit strings pass Luhn, so the prefix matters.
_CARD = re.compile(r"(?<![\d-])[2-6](?:[ -]?\d){12,18}(?![\d-])")
_PHONE = re.compile(
    r"""(?<![\w+@])(?:
        \+\d{1,3}(?:[ .-]?\(\d{1,4}\))?(?:[ .-]?\d{1,5}){1,6}   # international
      | \(\d{2,5}\)[ .-]?\d{2,5}(?:[ .-]?\d{2,5}){0,3}          # (area) number
      | \d{3}([-. ])\d{3}\1\d{4}                                # NANP 415-555-2671
      | 0\d{1,4}(?:[ /-]\d{2,8}){1,4}                           # national trunk prefix 0
    )(?![\w@]|[.-]\d)""",
    re.X,
)


def clean(doc: ParsedDocument, *, redact_pii: bool = False) -> ParsedDocument:
    """NFKC, invisible characters, whitespace, hyphenation, repeated headers/footers and
    page numbers, optionally PII; raises UnreadableDocument('empty') if nothing is left."""
    pages = [_normalise(text).split("\n") for text in _page_texts(doc)]
    boilerplate = _boilerplate(pages)
    counts: Counter[str] = Counter()
    parts: list[str] = []
    spans: list[PageSpan] = []
    position = 0
    for number, lines in enumerate(pages, start=1):
        kept = _drop_edges(lines, boilerplate, len(pages) > 1)
        counts["boilerplate_lines"] += len(lines) - len(kept)
        text = _whitespace(_dehyphenate("\n".join(kept)))
        if redact_pii:
            text = redact(text, counts)
        if text:
            position += 2 if parts else 0
            parts.append(text)
        spans.append(PageSpan(number, position, position + len(text)))
        position += len(text)
    cleaned = "\n\n".join(parts)
    if not cleaned:
        raise UnreadableDocument("Nothing is left of the document after cleaning", reason="empty")
    title = " ".join(_normalise(doc.title).split()) if doc.title else None
    if title and redact_pii:
        title = redact(title, counts)
    metadata = {
        **doc.metadata,
        "cleaned": True,
        "boilerplate_lines_removed": counts.pop("boilerplate_lines", 0),
        "redactions": dict(sorted(counts.items())) if redact_pii else {},
    }
    return replace(doc, text=cleaned, title=title or None, pages=spans, metadata=metadata)


def _page_texts(doc: ParsedDocument) -> list[str]:
    """Each page's text, from its start to the next page's start: nothing is dropped."""
    spans = sorted(doc.pages, key=lambda span: (span.start, span.page))
    if not spans:
        return [doc.text]
    starts = [0] + [span.start for span in spans[1:]]
    ends = [*starts[1:], len(doc.text)]
    return [doc.text[start:end] for start, end in zip(starts, ends, strict=True)]


def _normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", _LINE_BREAKS.sub("\n", text))
    return _INVISIBLE.sub("", text.replace("\t", " "))


def _line_key(line: str) -> str:
    key = " ".join(line.split()).lower()
    # Running footers differ only in their numbers ("Page 3 of 10"); a long line that differs
    # only in numbers is more likely content (a table row), so it must repeat exactly.
    return _DIGITS.sub("#", key) if len(key) <= _NUMBERED_LINE_MAX else key


def _edge_indexes(lines: list[str]) -> list[int]:
    filled = [i for i, line in enumerate(lines) if line.strip()]
    if len(filled) <= 2 * _EDGE_LINES:
        return filled
    return filled[:_EDGE_LINES] + filled[-_EDGE_LINES:]


def _boilerplate(pages: list[list[str]]) -> set[str]:
    """Keys of lines at the top or bottom of most pages: running headers and footers."""
    with_text = sum(1 for lines in pages if any(line.strip() for line in lines))
    if with_text < 3:
        return set()
    seen: Counter[str] = Counter()
    for lines in pages:
        seen.update({_line_key(lines[i]) for i in _edge_indexes(lines)})
    return {key for key, count in seen.items() if count >= max(3, with_text / 2)}


def _drop_edges(lines: list[str], boilerplate: set[str], paged: bool) -> list[str]:
    drop = set()
    for i in _edge_indexes(lines):
        key = _line_key(lines[i])
        if key in boilerplate or (paged and _PAGE_NUMBER.fullmatch(key)):
            drop.add(i)
    return [line for i, line in enumerate(lines) if i not in drop] if drop else lines


def _dehyphenate(text: str) -> str:
    # "infor-\nmation" -> "information"; "Jean-\nPaul" keeps its hyphen (capital after break).
    def join(match: re.Match[str]) -> str:
        return "" if match.group(1).islower() else match.group(0)

    return _HYPHEN_BREAK.sub(join, text)


def _whitespace(text: str) -> str:
    text = _TRAILING_SPACE.sub("", _SPACE_RUN.sub(" ", text))
    return _BLANK_LINES.sub("\n\n", text).strip()


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, char in enumerate(reversed(digits)):
        value = int(char) * (2 if i % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


def _phone_ok(candidate: str) -> bool:
    digits = sum(char.isdigit() for char in candidate)
    if candidate.startswith("+"):
        return 8 <= digits <= 15
    if candidate.startswith("("):
        return 7 <= digits <= 15
    if candidate.startswith("0"):
        return 9 <= digits <= 12
    return digits == 10


def redact(text: str, counts: Counter[str] | None = None) -> str:
    """Emails, Luhn-valid card numbers and phone numbers replaced by placeholders."""
    tally: Counter[str] = counts if counts is not None else Counter()

    def replacer(kind: str, valid: Callable[[str], bool]) -> Callable[[re.Match[str]], str]:
        def replace_match(match: re.Match[str]) -> str:
            if not valid(match.group(0)):
                return match.group(0)
            tally[kind] += 1
            return f"[{kind.upper()}]"

        return replace_match

    text = _EMAIL.sub(replacer("email", lambda _: True), text)
    text = _CARD.sub(replacer("card", lambda s: luhn_valid(re.sub(r"\D", "", s))), text)
    return _PHONE.sub(replacer("phone", _phone_ok), text)
