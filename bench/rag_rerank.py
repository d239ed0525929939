"""RAG's rerank stage on the evaluation set: search with and without `rerank: true`.

    .venv/bin/python bench/rag_rerank.py [--embedder minilm|hash] [--no-save]

The set, the ingestion and the metrics are bench/rag_quality.py's (bench/data/rag_eval, top_k
10, MRR@10, recall@10, nDCG@10). The reranker is the gateway's `rerank-default` as faas ships
it: the cosine between the query and each of the 20 candidates under the local embedding model
(providers/rerank_local.py) — the same model that embedded the corpus. Each query runs in every
mode, interleaved, in one process; the figures that count are on the `heldout` queries.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from _common import append_results, environment_lines, md_table, today
from faas.backends.vectors import Hit
from rag_quality import (
    COLLECTION,
    METRICS,
    TENANT,
    K,
    Query,
    Run,
    _ingest,
    eval_ids,
    load_set,
    mean_scores,
)

MODES = {
    "keyword": {"mode": "keyword"},
    "keyword + rerank": {"mode": "keyword", "rerank": True},
    "hybrid": {"mode": "hybrid"},
    "hybrid + rerank": {"mode": "hybrid", "rerank": True},
}


def routing_yaml(embedder: str) -> str:
    return (
        "models:\n"
        "  - name: chat-default\n    deployments:\n      - provider: mock\n"
        "  - name: embed-default\n    kind: embedding\n"
        f"    deployments:\n      - provider: {embedder}\n"
        "  - name: rerank-default\n    kind: rerank\n"
        f"    deployments:\n      - provider: cosine\n        options: {{embedder: {embedder}}}\n"
    )


async def evaluate(
    corpus: list[dict[str, Any]], queries: list[Query], embedder: str
) -> tuple[dict[str, dict[str, list[str]]], dict[str, float]]:
    """mode -> query id -> ranked eval ids, and mode -> (wall ms, CPU ms) per query."""
    from faas.app import create_service_app
    from faas.integrations.otel import setup_telemetry
    from faas.runtime import Runtime
    from faas.services import BUILDERS
    from faas.shared.auth import mint_token
    from faas.shared.config import Settings

    with tempfile.TemporaryDirectory(prefix="faas-rag-rerank-") as tmp:
        routing = Path(tmp) / "models.yaml"
        routing.write_text(routing_yaml(embedder))
        secret = "rag-eval-" + "x" * 40
        unset = dict.fromkeys(
            ("database_url", "redis_url", "nats_url", "vector_url", "gateway_url", "rag_url")
        )
        settings = Settings(
            data_dir=Path(tmp) / "data",
            jwt_secret=secret,
            auth="jwt",
            log_requests=False,
            rag_embedding_model=None,
            gateway_models=routing,
            services=["gateway", "rag"],
            **unset,
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
                await _ingest(client, corpus, Run(embedder, {}, {}, [], 0, 0, {}))
                return await _search(client, queries)
    raise AssertionError("unreachable")


async def _search(
    client: httpx.AsyncClient, queries: list[Query]
) -> tuple[dict[str, dict[str, list[str]]], dict[str, float]]:
    rankings: dict[str, dict[str, list[str]]] = {mode: {} for mode in MODES}
    wall = dict.fromkeys(MODES, 0.0)
    cpu = dict.fromkeys(MODES, 0.0)
    for query in queries:
        for mode, extra in MODES.items():
            body = {"query_text": query.text, "top_k": K, "collection": COLLECTION, **extra}
            started, started_cpu = time.perf_counter(), time.process_time()
            response = await client.post("/api/v1/rag/search", json=body)
            wall[mode] += time.perf_counter() - started
            cpu[mode] += time.process_time() - started_cpu
            if response.status_code != 200:
                raise RuntimeError(f"{mode} search {query.id}: {response.text}")
            found = response.json()["data"]["results"]
            hits = [
                Hit(h["chunk_id"], h["document_id"], h["collection_id"], 0.0, "", h["metadata"])
                for h in found
            ]
            rankings[mode][query.id] = eval_ids(hits)
    timing = {f"{m} wall": 1000 * wall[m] / len(queries) for m in MODES}
    timing |= {f"{m} cpu": 1000 * cpu[m] / len(queries) for m in MODES}
    return rankings, timing


def report(
    embedder: str,
    rankings: dict[str, dict[str, list[str]]],
    timing: dict[str, float],
    queries: list[Query],
) -> str:
    sections = []
    for split in ("heldout", "tune"):
        chosen = [q for q in queries if q.split == split]
        scores = mean_scores(rankings, chosen)
        rows = [
            [
                mode,
                *(f"{scores[mode][m]:.3f}" for m in METRICS),
                f"{timing[f'{mode} wall']:.1f}",
                f"{timing[f'{mode} cpu']:.1f}",
            ]
            for mode in MODES
        ]
        header = ["mode", *METRICS, "ms/query", "CPU ms/query"]
        sections.append(f"{split} ({len(chosen)} queries):\n\n" + md_table(header, rows))
    return "\n\n".join(sections)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embedder", choices=("minilm", "hash"), default="minilm")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    corpus, queries = load_set()
    load_before = os.getloadavg()
    rankings, timing = asyncio.run(evaluate(corpus, queries, args.embedder))
    tables = report(args.embedder, rankings, timing, queries)
    env = environment_lines(
        {"Load average (1 min) before/after": f"{load_before[0]:.2f} / {os.getloadavg()[0]:.2f}"}
    )
    section = (
        f"## {today()} — RAG rerank stage (`rerank: true`), {args.embedder} embeddings\n\n"
        f"`bench/rag_rerank.py --embedder {args.embedder}`: search on bench/data/rag_eval with "
        "and without the gateway's `rerank-default` (cosine over the same local embedding "
        "model, 20 candidates), top_k 10. Times are in-process (ASGI), per query, whole "
        "search.\n\n" + "\n".join(env) + "\n\n" + tables
    )
    sys.stdout.write(section + "\n")
    if not args.no_save:
        append_results(section)


if __name__ == "__main__":
    main()
