"""The chunker counts slices from one encoding per section: its chunks must be exactly those of
the chunker that encoded every slice on its own (tests/unit/chunking_reference.py)."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from faas.documents import ParsedDocument, chunk
from faas.documents.token_offsets import TokenOffsets, token_starts
from faas.shared.tokens import count_tokens, encoding
from tests.unit import chunking_reference

# Pieces chosen to meet cl100k's splitting rules at their edges: contractions, digit runs,
# punctuation before newlines, runs of spaces and newlines, tabs, non-ASCII letters and marks,
# CJK without spaces, emoji, headings and fences (markdown sections).
_PIECES = [
    "the", "The", "quick", "brown", "fox's", "don't", "we'll", "I'm", "x", "a",
    "12", "3456789", "2026-12-06", "3.14", "v1.2", "naïve", "café", "Straße", "ΑΒΓ",
    "東京の天気は晴れです", "😀", "e\u0301", "(", ")", "[note]", "—", "...", ".", ",",
    "!", "?", '"', "'", "```", "# Title", "## Sub", "### Deep", "- item", "1.", "http://x.y/z?q=1",
    "a" * 40, "x1y2z3" * 8, "\u00a0", "\u3000", "_", "__init__", "C++", "#",
]  # fmt: skip
_GAPS = [" ", " ", " ", "  ", "\n", "\n\n", "\n\n\n", " \n", "\n ", "\t", " \n\n ", "", "\r\n"]


@st.composite
def texts(draw: st.DrawFn) -> str:
    seed = draw(st.integers(0, 2**32 - 1))
    length = draw(st.integers(0, 900))
    rng = random.Random(seed)
    parts: list[str] = []
    for _ in range(length):
        parts.append(rng.choice(_PIECES))
        parts.append(rng.choice(_GAPS))
    return "".join(parts)


def _same_chunks(text: str, fmt: str, size: int, overlap: int) -> None:
    doc = ParsedDocument(text=text, format=fmt, title=None, pages=[], metadata={})
    reference_doc = chunking_reference.ParsedDocument(
        text=text, format=fmt, title=None, pages=[], metadata={}
    )
    new = [
        (p.start, p.end, p.token_count, p.metadata)
        for p in chunk(doc, chunk_size=size, chunk_overlap=overlap)
    ]
    old = [
        (p.start, p.end, p.token_count, p.metadata)
        for p in chunking_reference.chunk(reference_doc, chunk_size=size, chunk_overlap=overlap)
    ]
    assert new == old


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    text=texts(),
    fmt=st.sampled_from(["text", "markdown"]),
    size=st.sampled_from([8, 13, 40, 100, 400]),
    overlap_share=st.floats(0, 0.9),
)
def test_chunks_are_those_of_the_reference_chunker(
    text: str, fmt: str, size: int, overlap_share: float
) -> None:
    _same_chunks(text, fmt, size, min(size - 1, int(size * overlap_share)))


@settings(max_examples=150, deadline=None)
@given(text=texts(), data=st.data())
def test_every_slice_counts_as_its_own_encoding(text: str, data: st.DataObject) -> None:
    start = data.draw(st.integers(0, len(text)))
    end = data.draw(st.integers(start, len(text)))
    offsets = TokenOffsets(text, start, end)
    for _ in range(20):
        a = data.draw(st.integers(start, end))
        b = data.draw(st.integers(a, end))
        assert offsets.count(a, b) == count_tokens(text[a:b])


def test_prose_is_counted_from_cuts_not_reencoded() -> None:
    text = "\n\n".join(["The quick brown fox jumps over the lazy dog. " * 20] * 5)
    offsets = TokenOffsets(text, 0, len(text))
    assert len(offsets.cuts) > 800
    assert offsets.count(0, len(text)) == count_tokens(text)
    assert offsets.count(7, len(text) - 9) == count_tokens(text[7:-9])


def test_token_starts_are_the_byte_offsets_of_each_token() -> None:
    text = "naïve café, 東京 and 12345 😀"
    tokens = encoding().encode_ordinary(text)
    expected, offset = [], 0
    for token in tokens:
        expected.append(offset)
        offset += len(encoding().decode_single_token_bytes(token))
    assert token_starts(text) == expected
    assert token_starts("") == []


def test_bench_like_documents_chunk_as_before() -> None:
    rng = random.Random(7)
    vocab = [f"{a}{b}{c}" for a in "bcdfgklmnprst" for b in "aeiou" for c in "lmnrstxz"]
    for _ in range(5):
        sentences = [
            " ".join(rng.choices(vocab, k=rng.randint(8, 20))).capitalize() + "."
            for _ in range(110)
        ]
        text = "\n\n".join(" ".join(sentences[i : i + 5]) for i in range(0, 110, 5))
        _same_chunks(text, "text", 400, 60)
        _same_chunks(text, "markdown", 120, 30)
