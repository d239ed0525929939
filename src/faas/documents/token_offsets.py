"""Exact cl100k token counts of any slice of a text, from one encoding of the whole text.

cl100k first splits text into pieces with a regular expression (no look-behind), then runs BPE
inside each piece, so a position where every string containing it must start a new piece is a
token boundary in the text and in every slice around it, and counts add up across it. Two
such positions are used, both decided by the characters next to them:

- after a newline, before an ASCII letter or digit (`\\n|word`): no piece runs on from a
  newline into a letter or digit;
- at a space between a printable ASCII character and an ASCII letter (`x| word`): the space
  opens the ` word` piece, and no piece runs on from a letter, digit or mark into a space.

The count of `text[a:b]` is then the count of its two edges (from `a` to the first such cut,
and from the last cut to `b`, each encoded on its own) plus the tokens of the whole text's
encoding between the two cuts. Edges are a word or so long, so a document is encoded about
once however many slices are counted. A cut the whole encoding does not confirm as a token
boundary is dropped (exactness never depends on the argument above alone).
"""

from __future__ import annotations

import bisect
from functools import lru_cache

import numpy as np
import numpy.typing as npt

from faas.shared.tokens import count_tokens, encoding

_NEWLINE, _SPACE = 10, 32
# Edges are a word or two; the same words come back across a corpus.
_SHORT = 48


@lru_cache(maxsize=1 << 16)
def _count_short(text: str) -> int:
    return count_tokens(text)


def _count(text: str) -> int:
    return _count_short(text) if len(text) <= _SHORT else count_tokens(text)


@lru_cache(maxsize=1)
def token_lengths() -> npt.NDArray[np.int64]:
    """Bytes per cl100k token id (ordinary tokens; special ids are never produced here)."""
    enc = encoding()
    lengths = np.zeros(enc.max_token_value + 1, dtype=np.int64)
    for token in range(enc.max_token_value + 1):
        try:
            lengths[token] = len(enc.decode_single_token_bytes(token))
        except KeyError:  # the gaps between ordinary and special ids
            continue
    return lengths


def token_starts(text: str) -> list[int]:
    """Byte offset in `text` (UTF-8) at which each of its tokens starts."""
    tokens = encoding().encode_ordinary(text)
    if not tokens:
        return []
    lengths = token_lengths()[np.asarray(tokens, dtype=np.int64)]
    starts = np.zeros(len(tokens), dtype=np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    result: list[int] = starts.tolist()
    return result


def _is_ascii_letter(codes: npt.NDArray[np.uint32]) -> npt.NDArray[np.bool_]:
    folded = codes | np.uint32(0x20)
    return (folded >= ord("a")) & (folded <= ord("z"))


class TokenOffsets:
    """Counts of slices of `text[start:end]` (absolute positions), encoded once."""

    def __init__(self, text: str, start: int, end: int) -> None:
        self.text = text
        self.cuts: list[int] = []
        self.before: list[int] = []  # tokens of the span before each cut
        span = text[start:end]
        try:
            encoded = span.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: tiktoken re-encodes them; count exactly
            return
        codes = np.frombuffer(span.encode("utf-32-le"), dtype=np.uint32)
        if len(codes) < 3:
            return
        prev, here, after = codes[:-2], codes[1:-1], codes[2:]
        printable = (prev > _SPACE) & (prev < 0x7F)
        space_cut = printable & (here == _SPACE) & _is_ascii_letter(after)
        digit = (here >= ord("0")) & (here <= ord("9"))
        newline_cut = (prev == _NEWLINE) & (_is_ascii_letter(here) | digit)
        positions = np.flatnonzero(space_cut | newline_cut) + 1  # char offsets in span
        if len(positions) == 0:
            return
        if len(encoded) == len(span):
            byte_positions = positions
        else:
            widths = 1 + (codes >= 0x80) + (codes >= 0x800) + (codes >= 0x10000)
            byte_of = np.zeros(len(codes) + 1, dtype=np.int64)
            np.cumsum(widths, out=byte_of[1:])
            byte_positions = byte_of[positions]
        starts = np.asarray(token_starts(span), dtype=np.int64)
        index = np.searchsorted(starts, byte_positions)
        confirmed = index < len(starts)
        confirmed[confirmed] = starts[index[confirmed]] == byte_positions[confirmed]
        self.cuts = (positions[confirmed] + start).tolist()
        self.before = index[confirmed].tolist()

    def count(self, a: int, b: int) -> int:
        """Tokens of `text[a:b]`, exactly as `count_tokens(text[a:b])`."""
        cuts = self.cuts
        # Cuts strictly inside, with the character after a space cut inside the slice too.
        first = bisect.bisect_left(cuts, a)
        last = bisect.bisect_right(cuts, b - 2) - 1
        if first > last:
            return _count(self.text[a:b])
        h1, h2 = cuts[first], cuts[last]
        middle = self.before[last] - self.before[first]
        return _count(self.text[a:h1]) + middle + _count(self.text[h2:b])
