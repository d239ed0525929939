"""RAG embeds in batches the gateway accepts: at most 256 texts and 300,000 tokens each (a token
is at least one UTF-8 byte, so 300,000 bytes)."""

from __future__ import annotations

from faas.services.rag_service.embeddings import embed_batches as _embed_batches


def test_batches_stay_within_the_gateways_embedding_limits() -> None:
    texts = [f"{i:04d}" + "é" * 1500 for i in range(600)]  # 3,004 bytes each
    batches = _embed_batches(texts)
    assert [t for b in batches for t in b] == texts
    assert all(len(b) <= 256 for b in batches)
    assert all(sum(len(t.encode()) for t in b) <= 300_000 for b in batches)
    assert len(batches) == 7  # 99 texts fit in 300,000 bytes


def test_short_texts_batch_by_count() -> None:
    batches = _embed_batches(["word"] * 600)
    assert [len(b) for b in batches] == [256, 256, 88]
    assert _embed_batches([]) == []
