"""RAG retrieval quality: keyword, vector and hybrid search scored on a labelled evaluation set.

    .venv/bin/python bench/rag_quality.py [--embedder minilm|hash] [--no-save]

The set lives in bench/data/rag_eval/ (see its README): ~300 short documents about a fictional
company and 70+ queries with graded relevance (2 = answers it, 1 = related), a mix of
paraphrased questions, exact-identifier lookups (error codes, SKUs, versions, policy numbers)
and mixed ones.

A gateway + rag app is built in-process (SQLite database and vector index in a temporary data
dir, routing `embed-default` to the minilm or hash embedder and `chat-default` to the mock), the
corpus is ingested through `POST /api/v1/rag/documents` (one document per entry, title and text
as the content, metadata {"eval_id": id}), and every query is run through
`POST /api/v1/rag/search` in each mode with top_k=10. Chunk hits map to evaluation ids (a
document keeps its best rank) and are scored with nDCG@10 (linear gain, log2 discount, as
trec_eval's ndcg_cut), recall@10 and MRR@10, implemented below (tests/unit/test_rag_metrics.py
checks them against hand-computed values). Whether hybrid's gain over each single mode is
more than noise is told by a paired two-sided randomisation test on per-query nDCG@10.

Target: hybrid beats both keyword and vector on nDCG@10 and recall@10.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from _common import BENCH_DIR, append_results, environment_lines, md_table, today

DATA_DIR = BENCH_DIR / "data" / "rag_eval"
MODES = ("keyword", "vector", "hybrid")
K = 10
TENANT = "rag-eval"
COLLECTION = "rag-eval"
# cl100k tokens; corpus entries are 60-200 words, so nearly all are one chunk.
CHUNK_SIZE = 320
CHUNK_OVERLAP = 40
PERMUTATION_ROUNDS = 10_000
SIGNIFICANCE = 0.05

Qrels = Mapping[str, int]


# -- metrics -----------------------------------------------------------------------------------


def dcg(gains: Sequence[float]) -> float:
    """Discounted cumulative gain of gains in rank order (rank 1 first): sum g / log2(rank+1)."""
    return sum(g / math.log2(rank + 1) for rank, g in enumerate(gains, start=1))


def ndcg_at_k(ranking: Sequence[str], qrels: Qrels, k: int = K) -> float:
    """Normalised DCG of the top k with the graded relevance as linear gain; 0 when the query
    has no relevant document."""
    ideal = dcg(sorted((g for g in qrels.values() if g > 0), reverse=True)[:k])
    if ideal == 0:
        return 0.0
    return dcg([max(qrels.get(doc, 0), 0) for doc in ranking[:k]]) / ideal


def recall_at_k(ranking: Sequence[str], qrels: Qrels, k: int = K) -> float:
    """Share of the relevant documents (grade > 0, any grade) found in the top k."""
    relevant = {doc for doc, g in qrels.items() if g > 0}
    if not relevant:
        return 0.0
    return len(relevant & set(ranking[:k])) / len(relevant)


def mrr_at_k(ranking: Sequence[str], qrels: Qrels, k: int = K) -> float:
    """Reciprocal rank of the first relevant document (grade > 0) in the top k, else 0."""
    for rank, doc in enumerate(ranking[:k], start=1):
        if qrels.get(doc, 0) > 0:
            return 1.0 / rank
    return 0.0


METRICS = {"nDCG@10": ndcg_at_k, "recall@10": recall_at_k, "MRR@10": mrr_at_k}


def dedupe(ids: Sequence[str]) -> list[str]:
    """Document ids in first-seen order: a document keeps the rank of its best chunk."""
    return list(dict.fromkeys(ids))


def paired_randomisation_p(a: Sequence[float], b: Sequence[float], rounds: int) -> float:
    """Two-sided p-value that the mean of a - b is 0, by randomly flipping the sign of each
    query's difference (Fisher's paired randomisation test; fixed seed, so reproducible)."""
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    observed = abs(diff.mean())
    if observed == 0:
        return 1.0
    signs = np.random.default_rng(0).choice([-1.0, 1.0], size=(rounds, diff.size))
    extreme = np.abs((signs * diff).mean(axis=1)) >= observed - 1e-12
    return float((extreme.sum() + 1) / (rounds + 1))


# -- the evaluation set ------------------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    id: str
    kind: str
    text: str
    qrels: dict[str, int]


def load_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def load_set(data_dir: Path = DATA_DIR) -> tuple[list[dict[str, Any]], list[Query]]:
    corpus = load_jsonl(data_dir / "corpus.jsonl")
    queries = [
        Query(q["id"], q.get("kind", ""), q["query"], dict(q["relevant"]))
        for q in load_jsonl(data_dir / "queries.jsonl")
    ]
    return corpus, queries


# -- the app -----------------------------------------------------------------------------------


def routing_yaml(embedder: str) -> str:
    return (
        "models:\n"
        "  - name: chat-default\n    deployments:\n      - provider: mock\n"
        "  - name: embed-default\n    kind: embedding\n"
        f"    deployments:\n      - provider: {embedder}\n"
    )


@dataclass
class Run:
    rankings: dict[str, dict[str, list[str]]]  # mode -> query id -> eval ids
    chunks: list[int]
    ingest_s: float
    search_s: dict[str, float]


async def evaluate(corpus: list[dict[str, Any]], queries: list[Query], embedder: str) -> Run:
    from faas.app import create_service_app
    from faas.integrations.otel import setup_telemetry
    from faas.runtime import Runtime
    from faas.services import BUILDERS
    from faas.shared.auth import mint_token
    from faas.shared.config import Settings

    with tempfile.TemporaryDirectory(prefix="faas-rag-eval-") as tmp:
        routing = Path(tmp) / "models.yaml"
        routing.write_text(routing_yaml(embedder))
        secret = "rag-eval-" + "x" * 40
        settings = Settings(
            data_dir=Path(tmp) / "data",
            jwt_secret=secret,
            auth="jwt",
            log_requests=False,
            database_url=None,
            redis_url=None,
            nats_url=None,
            vector_url=None,
            gateway_url=None,
            rag_url=None,
            rag_embedding_model=None,
            gateway_models=routing,
            services=["gateway", "rag"],
        )
        runtime = Runtime.build(settings, telemetry=setup_telemetry("faas-bench", set_global=False))
        services = [BUILDERS[name](runtime) for name in ("gateway", "rag")]
        runtime.load_job_modules()
        app = create_service_app(services, runtime)
        token = mint_token(secret, tenant_id=TENANT, user_id="bench", ttl_s=4 * 3600)
        headers = {"Authorization": f"Bearer {token}"}
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(
                transport=transport, base_url="http://faas.test", headers=headers, timeout=300
            ) as client:
                return await _ingest_and_search(client, corpus, queries)
    raise AssertionError("unreachable")


async def _ingest_and_search(
    client: httpx.AsyncClient, corpus: list[dict[str, Any]], queries: list[Query]
) -> Run:
    chunks: list[int] = []
    started = time.perf_counter()
    for doc in corpus:
        body = {
            "title": doc["title"],
            "content": f"{doc['title']}\n\n{doc['text']}",
            "metadata": {"eval_id": doc["id"]},
            "collection": COLLECTION,
            "chunk_size": CHUNK_SIZE,
            "chunk_overlap": CHUNK_OVERLAP,
        }
        response = await client.post("/api/v1/rag/documents", json=body)
        if response.status_code != 201:
            raise RuntimeError(f"ingesting {doc['id']}: {response.status_code} {response.text}")
        chunks.append(int(response.json()["data"]["chunks"]))
    ingest_s = time.perf_counter() - started
    rankings: dict[str, dict[str, list[str]]] = {mode: {} for mode in MODES}
    search_s: dict[str, float] = {}
    for mode in MODES:
        started = time.perf_counter()
        for query in queries:
            body = {"query_text": query.text, "mode": mode, "top_k": K, "collection": COLLECTION}
            response = await client.post("/api/v1/rag/search", json=body)
            if response.status_code != 200:
                raise RuntimeError(f"{mode} search {query.id}: {response.text}")
            hits = response.json()["data"]["results"]
            rankings[mode][query.id] = dedupe([h["metadata"]["eval_id"] for h in hits])
        search_s[mode] = time.perf_counter() - started
    return Run(rankings, chunks, ingest_s, search_s)


# -- report ------------------------------------------------------------------------------------


def per_query(run: Run, queries: list[Query], metric: str) -> dict[str, list[float]]:
    fn = METRICS[metric]
    return {mode: [fn(run.rankings[mode][q.id], q.qrels) for q in queries] for mode in MODES}


def report(run: Run, corpus: list[dict[str, Any]], queries: list[Query], embedder: str) -> str:
    scores = {metric: per_query(run, queries, metric) for metric in METRICS}
    means = {m: {mode: statistics.fmean(v) for mode, v in s.items()} for m, s in scores.items()}
    rows = [
        [
            mode,
            *(f"{means[m][mode]:.3f}" for m in METRICS),
            f"{1000 * run.search_s[mode] / len(queries):.1f}",
        ]
        for mode in MODES
    ]
    main = md_table(["Mode", *METRICS, "ms/query"], rows)

    kinds = sorted({q.kind for q in queries})
    ndcg = scores["nDCG@10"]
    kind_rows = []
    for kind in kinds:
        idx = [i for i, q in enumerate(queries) if q.kind == kind]
        kind_rows.append(
            [
                f"{kind} ({len(idx)})",
                *(f"{statistics.fmean(ndcg[m][i] for i in idx):.3f}" for m in MODES),
            ]
        )
    by_kind = md_table(["nDCG@10 by query kind", *MODES], kind_rows)

    verdicts = []
    beats_all = True
    for other in ("keyword", "vector"):
        wins = sum(h > o for h, o in zip(ndcg["hybrid"], ndcg[other], strict=True))
        losses = sum(h < o for h, o in zip(ndcg["hybrid"], ndcg[other], strict=True))
        p = paired_randomisation_p(ndcg["hybrid"], ndcg[other], PERMUTATION_ROUNDS)
        better = all(means[m]["hybrid"] > means[m][other] for m in ("nDCG@10", "recall@10"))
        beats_all &= better
        delta = means["nDCG@10"]["hybrid"] - means["nDCG@10"][other]
        verdicts.append(
            f"- hybrid vs {other}: nDCG@10 {delta:+.3f} (better on {wins} queries, worse on "
            f"{losses}; paired randomisation p = {p:.3f}"
            f"{', significant' if p < SIGNIFICANCE else ', not significant'} at {SIGNIFICANCE})"
        )
    verdict = (
        "**Hybrid beats both** keyword and vector on nDCG@10 and recall@10."
        if beats_all
        else "**Hybrid does not beat both** keyword and vector on nDCG@10 and recall@10."
    )
    multi = sum(1 for c in run.chunks if c > 1)
    setup = {
        "Evaluation set": f"bench/data/rag_eval: {len(corpus)} documents, {len(queries)} queries "
        f"({', '.join(f'{sum(q.kind == k for q in queries)} {k}' for k in kinds)}), "
        f"{sum(len(q.qrels) for q in queries)} judgements (graded 2/1)",
        "Embedder": f"`embed-default` → {embedder}"
        + (" (all-MiniLM-L6-v2, numpy forward pass)" if embedder == "minilm" else ""),
        "Index": f"SQLite (FTS5 bm25 keyword, numpy cosine vector), chunk_size {CHUNK_SIZE} "
        f"tokens / overlap {CHUNK_OVERLAP}: {sum(run.chunks)} chunks, {multi} documents "
        "in more than one chunk",
        "Search": f"`POST /api/v1/rag/search` top_k={K}; hybrid = RRF (k=60) of keyword and "
        f"vector lists of depth {4 * K}; chunk hits deduplicated per document (best rank)",
        "Metrics": "nDCG@10 (linear gain, log2 discount), recall@10 (grade ≥ 1), MRR@10; "
        "mean over queries",
        "Ingest": f"{run.ingest_s:.1f} s for {len(corpus)} documents (sequential, one per request)",
    }
    return "\n\n".join(
        [
            f"## RAG retrieval quality — {today()}"
            + ("" if embedder == "minilm" else f" ({embedder} embedder)"),
            "\n".join(environment_lines(setup)),
            main,
            by_kind,
            verdict + "\n\n" + "\n".join(verdicts),
        ]
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--embedder", choices=["minilm", "hash"], default="minilm")
    parser.add_argument("--no-save", action="store_true", help="print only, do not append")
    args = parser.parse_args(argv)
    corpus, queries = load_set()
    print(f"{len(corpus)} documents, {len(queries)} queries, embedder {args.embedder}")
    run = asyncio.run(evaluate(corpus, queries, args.embedder))
    section = report(run, corpus, queries, args.embedder)
    print(section)
    if not args.no_save:
        append_results(section)
        print("appended to docs/benchmarks.md")


if __name__ == "__main__":
    sys.exit(main())
