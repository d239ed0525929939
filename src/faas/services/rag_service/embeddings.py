"""Embeddings through the gateway, in batches it accepts, as unit vectors (so a dot product is
the cosine similarity every search and MMR step relies on)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from faas.services.gateway_service.client import GatewayClient
from faas.services.rag_service.embedding_space import model_id

EMBED_BATCH = 256
# The gateway takes at most 300,000 tokens per embeddings request; a token is at least one
# UTF-8 byte, so batches of at most this many bytes always fit.
EMBED_BATCH_BYTES = 300_000


def embed_batches(texts: Sequence[str]) -> list[list[str]]:
    """`texts` in order, cut into batches of at most EMBED_BATCH texts and EMBED_BATCH_BYTES."""
    batches: list[list[str]] = [[]]
    size = 0
    for text in texts:
        length = len(text.encode())
        if batches[-1] and (len(batches[-1]) >= EMBED_BATCH or size + length > EMBED_BATCH_BYTES):
            batches.append([])
            size = 0
        batches[-1].append(text)
        size += length
    return [b for b in batches if b]


def unit_vectors(vectors: np.ndarray) -> np.ndarray:
    """The rows scaled to length 1 (a zero row stays zero), as float32."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    unit: np.ndarray = (vectors / norms).astype(np.float32)
    return unit


class Embedder:
    """Embeds with the configured model (the gateway's default when None)."""

    def __init__(self, gateway: GatewayClient, model: str | None = None) -> None:
        self.gateway = gateway
        self.model = model

    async def embed(self, texts: Sequence[str]) -> tuple[np.ndarray, str]:
        """Unit vectors for `texts`, and the embedding space (`model_id`) they are in."""
        parts: list[np.ndarray] = []
        space = ""
        for batch in embed_batches(texts):
            embedded = await self.gateway.embed(batch, self.model)
            space = model_id(embedded.model, embedded.deployment)
            parts.append(embedded.vectors)
        return unit_vectors(np.vstack(parts)), space
