"""The chunker as it was before it counted from one encoding per section (2026-12-06): kept
only as the reference that tests/unit/test_chunking_offsets.py compares the chunker against.

A chunk is always a contiguous slice `doc.text[start:end]`, so its offsets, pages and
heading can be cited exactly. Sections under markdown headings are never mixed; within a
section the text is split on paragraphs, then lines, sentences, words and finally tokens,
until every piece fits, and neighbouring pieces are packed back together up to the budget.
"""

from __future__ import annotations

import bisect
import hashlib
import re
import unicodedata
from dataclasses import dataclass
from itertools import accumulate
from typing import Any, Final

from faas.documents._model import PageSpan, ParsedDocument
from faas.shared.exceptions import ValidationFailed
from faas.shared.tokens import count_tokens, encoding

MIN_CHUNK_SIZE: Final = 8
# Formats whose parsers write markdown headings; elsewhere a "# " line is just text.
_HEADING_FORMATS: Final = frozenset({"markdown", "html", "docx"})
# Above this many characters per budget token a piece is split without counting it: text
# almost never averages more than ~5 characters per cl100k token, and splitting a piece
# that would have fitted costs nothing (its parts are packed back together).
_CHARS_PER_TOKEN_CEILING: Final = 6
_HEADING_OR_FENCE = re.compile(r"^(?:(#{1,6})[ \t]+(.+?)(?:[ \t]+#+)?[ \t]*|(?:```|~~~).*)$", re.M)
# Sentence ends: . ! ? (maybe before a closing quote or bracket), and the CJK full stops.
_SENTENCE_GAP = r"(?:(?<=[.!?])|(?<=[.!?][\"'\u201d\u2019)\]]))\s+|(?<=[\u3002\uff01\uff1f])\s*"
_SPLITTERS: Final = (
    re.compile(r"\n[ \t]*\n\s*"),  # paragraphs
    re.compile(r"\n\s*"),  # lines
    re.compile(_SENTENCE_GAP),
    re.compile(r"\s+"),  # words
)
_OVERLAP_SENTENCE = re.compile(_SENTENCE_GAP + r"|\n\s*")
_OVERLAP_WORD = re.compile(r"\s+")


@dataclass(frozen=True)
class ChunkPiece:
    ordinal: int
    text: str
    start: int
    end: int
    token_count: int
    metadata: dict[str, Any]


@dataclass(frozen=True)
class _Atom:
    start: int
    end: int
    tokens: int


def text_hash(text: str) -> str:
    """sha256 of the text with unicode and whitespace normalised: stable across re-parses."""
    normalised = " ".join(unicodedata.normalize("NFKC", text).split())
    return hashlib.sha256(normalised.encode("utf-8")).hexdigest()


def chunk(
    doc: ParsedDocument, *, chunk_size: int = 400, chunk_overlap: int = 60
) -> list[ChunkPiece]:
    """Chunks of at most `chunk_size` cl100k tokens, each starting with up to
    `chunk_overlap` tokens of the previous chunk in the same section."""
    if chunk_size < MIN_CHUNK_SIZE or not 0 <= chunk_overlap < chunk_size:
        raise ValidationFailed(
            "chunk_size must be at least 8 and chunk_overlap in [0, chunk_size)",
            details={"chunk_size": chunk_size, "chunk_overlap": chunk_overlap},
        )
    text = doc.text
    pages = sorted((span for span in doc.pages if span.end > span.start), key=lambda s: s.start)
    starts = [span.start for span in pages]
    pieces: list[ChunkPiece] = []
    sections = _sections(text) if doc.format in _HEADING_FORMATS else [(0, len(text), None)]
    for start, end, heading in sections:
        atoms: list[_Atom] = []
        _split(text, start, end, 0, chunk_size, atoms)
        for chunk_start, chunk_end, tokens, overlap in _pack(
            text, atoms, chunk_size, chunk_overlap
        ):
            covered = _pages(pages, starts, chunk_start, chunk_end)
            metadata = {
                "page": covered[0] if covered else None,
                "pages": covered,
                "heading": heading,
                "start": chunk_start,
                "end": chunk_end,
                "overlap_chars": overlap,
            }
            pieces.append(
                ChunkPiece(
                    ordinal=len(pieces),
                    text=text[chunk_start:chunk_end],
                    start=chunk_start,
                    end=chunk_end,
                    token_count=tokens,
                    metadata=metadata,
                )
            )
    return pieces


def _sections(text: str) -> list[tuple[int, int, str | None]]:
    """(start, end, heading path) per markdown section; fenced code cannot open one."""
    bounds: list[tuple[int, str | None]] = [(0, None)]
    path: list[tuple[int, str]] = []
    in_fence = False
    for match in _HEADING_OR_FENCE.finditer(text):
        if match.group(1) is None:
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        level = len(match.group(1))
        while path and path[-1][0] >= level:
            path.pop()
        path.append((level, " ".join(match.group(2).split())))
        heading = " > ".join(title for _, title in path)
        previous_start = bounds[-1][0]
        body = text[previous_start : match.start()]
        # A heading directly followed by a sub-heading is kept with it, not chunked alone.
        if bounds[-1][1] is not None and "\n" not in body.strip():
            bounds[-1] = (previous_start, heading)
        else:
            bounds.append((match.start(), heading))
    sections: list[tuple[int, int, str | None]] = []
    for i, (start, path_text) in enumerate(bounds):
        end = bounds[i + 1][0] if i + 1 < len(bounds) else len(text)
        if text[start:end].strip():
            sections.append((start, end, path_text))
    return sections


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _split(text: str, start: int, end: int, level: int, budget: int, out: list[_Atom]) -> None:
    """Append pieces of text[start:end] that each fit the budget, in order."""
    start, end = _trim(text, start, end)
    if start == end:
        return
    if end - start <= budget * _CHARS_PER_TOKEN_CEILING:
        tokens = count_tokens(text[start:end])
        if tokens <= budget:
            out.append(_Atom(start, end, tokens))
            return
    for depth in range(level, len(_SPLITTERS)):
        cut = start
        pieces = []
        for match in _SPLITTERS[depth].finditer(text, start, end):
            if match.start() > cut:
                pieces.append((cut, match.start()))
            cut = max(cut, match.end())
        if pieces:
            pieces.append((cut, end))
            for piece_start, piece_end in pieces:
                _split(text, piece_start, piece_end, depth + 1, budget, out)
            return
    _split_tokens(text, start, end, budget, out)


def _split_tokens(text: str, start: int, end: int, budget: int, out: list[_Atom]) -> None:
    """A run without any whitespace (a URL, base64, CJK) cut at the longest fitting prefix."""
    while start < end:
        # A token is at least one byte and a character at most four: this prefix always fits.
        low, high = min(end, start + max(1, budget // 4)), min(end, start + budget * 8)
        best = (low, count_tokens(text[start:low]))
        while low < high:
            middle = (low + high + 1) // 2
            tokens = count_tokens(text[start:middle])
            if tokens <= budget:
                best, low = (middle, tokens), middle
            else:
                high = middle - 1
        out.append(_Atom(start, best[0], best[1]))
        start = best[0]


def _overlap_start(text: str, low: int, high: int, allowance: int) -> tuple[int, int] | None:
    """(start, tokens) of the longest suffix of text[low:high] that fits `allowance` tokens and
    starts a sentence (or, when sentences give less than a third of it, a word)."""
    window = max(low + 1, high - allowance * _CHARS_PER_TOKEN_CEILING)
    # One encoding of the window estimates every candidate suffix; the pick is then verified.
    tail = text[window:high]
    ascii_tail = tail.isascii()
    token_bytes = encoding().decode_tokens_bytes(encoding().encode_ordinary(tail))
    starts = list(accumulate((len(b) for b in token_bytes), initial=0))[:-1]
    fallback = None
    for pattern in (_OVERLAP_SENTENCE, _OVERLAP_WORD):
        for match in pattern.finditer(text, window, high):
            candidate = match.end()
            if candidate >= high:
                break
            prefix = candidate - window
            offset = prefix if ascii_tail else len(tail[:prefix].encode("utf-8"))
            estimate = len(starts) - bisect.bisect_left(starts, offset)
            if estimate > allowance:
                continue
            tokens = count_tokens(text[candidate:high])
            if tokens <= allowance:
                if tokens * 3 >= allowance:
                    return candidate, tokens
                fallback = fallback or (candidate, tokens)
                break
    return fallback


def _pack(
    text: str, atoms: list[_Atom], budget: int, overlap: int
) -> list[tuple[int, int, int, int]]:
    """Greedy packing of atoms: (start, end, tokens, overlap chars) per chunk."""
    chunks: list[tuple[int, int, int, int]] = []
    i = 0
    while i < len(atoms):
        first = atoms[i]
        lead: tuple[int, int] | None = None
        if chunks and overlap:
            allowance = min(overlap, budget - first.tokens - 1)
            if allowance > 0:
                lead = _overlap_start(text, chunks[-1][0], chunks[-1][1], allowance)
        j, estimate = i, first.tokens + (lead[1] + 1 if lead else 0)
        while j + 1 < len(atoms):
            gap = text[atoms[j].end : atoms[j + 1].start]
            extra = atoms[j + 1].tokens + gap.count("\n")
            if estimate + extra > budget:
                break
            estimate += extra
            j += 1
        start = lead[0] if lead else first.start
        tokens = first.tokens if j == i and not lead else count_tokens(text[start : atoms[j].end])
        # The estimate was short (tokens merged across a gap): give back atoms, then the
        # overlap; a lone atom fits by construction, it was counted as this very slice.
        while tokens > budget and (j > i or lead):
            if j > i:
                j -= 1
            else:
                lead = None
            start = lead[0] if lead else first.start
            tokens = count_tokens(text[start : atoms[j].end])
        overlap_chars = chunks[-1][1] - start if lead else 0
        chunks.append((start, atoms[j].end, tokens, overlap_chars))
        i = j + 1
    return chunks


def _pages(pages: list[PageSpan], starts: list[int], start: int, end: int) -> list[int]:
    index = max(0, bisect.bisect_right(starts, start) - 1)
    covered = []
    while index < len(pages) and pages[index].start < end:
        if pages[index].end > start:
            covered.append(pages[index].page)
        index += 1
    return covered
