"""A fast, dependency-free embedder: signed feature hashing of words and character trigrams.

Not semantic, but texts sharing words and spellings land close together, which is what tests,
demos and the semantic cache's plumbing need. Stable across processes and machines.
"""

from __future__ import annotations

import re
import zlib

import numpy as np
import numpy.typing as npt

from faas.services.gateway_service.offload import text_size
from faas.services.gateway_service.providers.base import EmbeddingResult, Usage
from faas.services.gateway_service.routing_table import Deployment
from faas.shared.cpu import run_cpu
from faas.shared.tokens import count_tokens

DEFAULT_DIMENSIONS = 384
_WORD = re.compile(r"\w+")
# Words identify topics better than trigrams; trigrams make spelling variants meet.
_WORD_WEIGHT = np.float32(1.0)
_TRIGRAM_WEIGHT = np.float32(0.5)
# Keeps word keys (crc32 values) apart from trigram keys (at most 24 bits).
_WORD_TAG = np.uint64(1 << 40)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _mix(keys: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    # splitmix64's finaliser: every input bit affects the bucket and the sign bit.
    x = keys ^ (keys >> np.uint64(30))
    x = x * _M1
    x ^= x >> np.uint64(27)
    x = x * _M2
    x ^= x >> np.uint64(31)
    return x


def _normalise(text: str) -> str:
    return " ".join(text.lower().split())


def embed_texts(texts: list[str], dimensions: int = DEFAULT_DIMENSIONS) -> npt.NDArray[np.float32]:
    """One L2-normalised float32 row per text (all zeros for a text without characters)."""
    n = len(texts)
    out = np.zeros((n, dimensions), dtype=np.float32)
    if n == 0:
        return out
    normalised = [_normalise(t) for t in texts]

    # Character trigrams over the UTF-8 bytes of " text " for the whole batch at once: texts
    # are joined with NUL and any trigram touching a NUL is dropped.
    padded = [f" {t} ".encode() for t in normalised]
    joined = np.frombuffer(b"\x00".join(padded), dtype=np.uint8).astype(np.uint64)
    lengths = np.fromiter((len(p) + 1 for p in padded), dtype=np.int64, count=n)
    owners = np.repeat(np.arange(n, dtype=np.int64), lengths)[: len(joined)]
    if len(joined) >= 3:
        a, b, c = joined[:-2], joined[1:-1], joined[2:]
        valid = (a != 0) & (b != 0) & (c != 0)
        tri_keys = ((a << np.uint64(16)) | (b << np.uint64(8)) | c)[valid]
        tri_rows = owners[: len(joined) - 2][valid]
    else:
        tri_keys = np.zeros(0, dtype=np.uint64)
        tri_rows = np.zeros(0, dtype=np.int64)

    word_lists = [_WORD.findall(t) for t in normalised]
    counts = np.fromiter((len(w) for w in word_lists), dtype=np.int64, count=n)
    word_keys = np.fromiter(
        (zlib.crc32(w.encode()) for words in word_lists for w in words),
        dtype=np.uint64,
        count=int(counts.sum()),
    )
    word_keys |= _WORD_TAG
    word_rows = np.repeat(np.arange(n, dtype=np.int64), counts)

    keys = np.concatenate([tri_keys, word_keys])
    rows = np.concatenate([tri_rows, word_rows])
    weights = np.concatenate(
        [
            np.full(len(tri_keys), _TRIGRAM_WEIGHT, dtype=np.float32),
            np.full(len(word_keys), _WORD_WEIGHT, dtype=np.float32),
        ]
    )
    hashed = _mix(keys)
    buckets = (hashed % np.uint64(dimensions)).astype(np.int64)
    signs = np.where(hashed >> np.uint64(63), np.float32(-1.0), np.float32(1.0))
    np.add.at(out, (rows, buckets), weights * signs)
    norms = np.sqrt(np.einsum("ij,ij->i", out, out))[:, None]
    np.divide(out, norms, out=out, where=norms > 0)
    return out


def _embed(texts: list[str], dimensions: int, model: str) -> EmbeddingResult:
    vectors = embed_texts(texts, dimensions)
    usage = Usage(prompt_tokens=sum(count_tokens(t) for t in texts), source="estimated")
    return EmbeddingResult(
        vectors=vectors.tolist(), usage=usage, model=model or f"hash-{dimensions}"
    )


class HashEmbeddingProvider:
    name = "hash"

    async def embed(self, texts: list[str], deployment: Deployment) -> EmbeddingResult:
        dimensions = deployment.dimensions or DEFAULT_DIMENSIONS
        return await run_cpu(text_size(texts), _embed, texts, dimensions, deployment.model)

    async def health(self, deployment: Deployment) -> bool:
        return True

    async def aclose(self) -> None:
        return None
