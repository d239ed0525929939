"""The indexing pipeline's first half: a document's text cut into chunks that never straddle a
page, each embedded (or its vector reused when its text did not change), as chunk rows."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
from sqlalchemy import insert, inspect
from sqlalchemy.ext.asyncio import AsyncSession

# At import, not at first use: importing the parsers (docx, lxml, pypdf) takes ~0.5 s, which
# on the first document held the event loop.
from faas.documents import ChunkPiece, PageSpan, ParsedDocument, chunk, text_hash
from faas.services.rag_service.embeddings import Embedder
from faas.services.rag_service.models import DocumentCreate, PageSpanIn
from faas.services.rag_service.tables import ChunkRow
from faas.shared.context import new_id
from faas.shared.cpu import CpuPool
from faas.shared.exceptions import ValidationFailed

CHUNK_INSERT_BATCH = 500

Reusable = dict[str, tuple[bytes, str]]
"""Vectors that may be reused, by chunk text hash: (embedding, embedding model)."""


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


async def insert_chunks(session: AsyncSession, chunks: Sequence[ChunkRow]) -> None:
    """Chunk rows in batches of plain values. The ORM's unit of work over a big document's
    thousands of rows ran for hundreds of milliseconds on the event loop in one go; each batch
    now awaits the database, so other requests are served in between."""
    keys = [attr.key for attr in inspect(ChunkRow).column_attrs]
    for start in range(0, len(chunks), CHUNK_INSERT_BATCH):
        batch = chunks[start : start + CHUNK_INSERT_BATCH]
        await session.execute(insert(ChunkRow), [{k: getattr(c, k) for k in keys} for c in batch])


def chunk_by_page(
    content: str, pages: list[PageSpanIn], chunk_size: int, chunk_overlap: int
) -> list[ChunkPiece]:
    """Chunks that never straddle a page, so every citation can name its page; without page
    spans, the document is chunked as a whole."""
    spans = [(p.page, p.start, min(p.end, len(content))) for p in pages if p.end > p.start]
    if not spans:
        spans = [(0, 0, len(content))]
    pieces: list[ChunkPiece] = []
    for page, start, end in spans:
        text = content[start:end]
        if not text.strip():
            continue
        page_spans = [PageSpan(page, 0, len(text))] if page else []
        doc = ParsedDocument(text=text, format="text", title=None, pages=page_spans, metadata={})
        for piece in chunk(doc, chunk_size=chunk_size, chunk_overlap=chunk_overlap):
            metadata = dict(piece.metadata)
            metadata["start"] = piece.start + start
            metadata["end"] = piece.end + start
            pieces.append(
                replace(
                    piece,
                    ordinal=len(pieces),
                    start=piece.start + start,
                    end=piece.end + start,
                    metadata=metadata,
                )
            )
    return pieces


class Chunker:
    def __init__(self, cpu: CpuPool, embedder: Embedder) -> None:
        self.cpu = cpu
        self.embedder = embedder

    async def rows(
        self,
        tenant: str,
        document_id: str,
        content: str,
        pages: list[PageSpanIn] | None,
        chunk_size: int,
        chunk_overlap: int,
        reusable: Reusable,
    ) -> tuple[list[ChunkRow], int]:
        """The document's chunk rows, and how many of them were embedded anew."""
        pieces = await self.cpu.run(
            len(content), chunk_by_page, content, pages or [], chunk_size, chunk_overlap
        )
        if not pieces:
            raise ValidationFailed("the document has no text to index")
        hashes = [text_hash(p.text) for p in pieces]
        vectors = await self._vectors(pieces, hashes, reusable)
        rows = []
        for i, piece in enumerate(pieces):
            if i and i % CHUNK_INSERT_BATCH == 0:
                await asyncio.sleep(0)  # thousands of ORM objects: let other requests run
            embedding, model = vectors.get(i) or reusable[hashes[i]]
            rows.append(_row(tenant, document_id, piece, hashes[i], embedding, model))
        return rows, len(vectors)

    async def rows_many(
        self, tenant: str, documents: Sequence[tuple[str, DocumentCreate]]
    ) -> list[list[ChunkRow]]:
        """The chunk rows of each new `(document_id, body)`, every chunk of every document
        embedded together (one gateway call per EMBED_BATCH chunks, not one per document);
        an empty list for a document with no text."""
        specs = [(b.content, b.pages or [], b.chunk_size, b.chunk_overlap) for _, b in documents]
        size = sum(len(b.content) for _, b in documents)
        pieces = await self.cpu.run(size, chunk_all, specs)
        texts = [p.text for doc in pieces for p in doc]
        if not texts:
            return [[] for _ in documents]
        matrix, model = await self.embedder.embed(texts)
        out: list[list[ChunkRow]] = []
        n = 0
        for (document_id, _), doc in zip(documents, pieces, strict=True):
            await asyncio.sleep(0)  # thousands of ORM objects: let other requests run
            rows = []
            for piece in doc:
                embedding = matrix[n].tobytes()
                rows.append(
                    _row(tenant, document_id, piece, text_hash(piece.text), embedding, model)
                )
                n += 1
            out.append(rows)
        return out

    async def _vectors(
        self, pieces: Sequence[ChunkPiece], hashes: Sequence[str], reusable: Reusable
    ) -> dict[int, tuple[bytes, str]]:
        """New vectors by piece position: for every piece without a reusable one."""
        missing = [i for i, h in enumerate(hashes) if h not in reusable]
        if not missing:
            return {}
        matrix, model = await self.embedder.embed([pieces[i].text for i in missing])
        # Reused vectors of another model would leave the document in two spaces.
        stale = [i for i, h in enumerate(hashes) if h in reusable and reusable[h][1] != model]
        if stale:
            more, _ = await self.embedder.embed([pieces[i].text for i in stale])
            matrix = np.vstack([matrix, more])
        return {i: (matrix[n].tobytes(), model) for n, i in enumerate([*missing, *stale])}


def chunk_all(specs: Sequence[tuple[str, list[PageSpanIn], int, int]]) -> list[list[ChunkPiece]]:
    """`chunk_by_page` for each (content, pages, chunk size, overlap): one hop to the CPU pool
    for a whole batch of documents."""
    return [chunk_by_page(*spec) for spec in specs]


def _row(
    tenant: str,
    document_id: str,
    piece: ChunkPiece,
    digest: str,
    embedding: bytes,
    model: str,
) -> ChunkRow:
    return ChunkRow(
        id=new_id(),
        tenant_id=tenant,
        document_id=document_id,
        ordinal=piece.ordinal,
        text=piece.text,
        text_hash=digest,
        token_count=piece.token_count,
        meta=dict(piece.metadata),
        embedding=embedding,
        embedding_model=model,
    )
