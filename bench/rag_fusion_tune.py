"""How the vector weights of rag_service/fusion.py were chosen: a grid replayed on the `tune`
queries of bench/data/rag_eval only (the `heldout` ones are never seen here).

    .venv/bin/python bench/rag_fusion_tune.py [--embedder minilm|hash]

The keyword and vector lists are fetched once through the API (bench/rag_quality.py's
`evaluate`), then every (natural-language weight, identifier weight) pair is fused offline with
`fusion.fuse`. Printed: the ten best pairs by their worst goal gap (hybrid minus the better leg
on MRR@10 and recall@10, overall and per query kind, to 0.001), then by nDCG@10; last, the best
pair of equal weights (one weight for every query, as feature-hashing spaces get).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from _common import md_table
from faas.services.rag_service.fusion import fuse, has_identifier
from rag_quality import LEGS, Query, Run, eval_ids, evaluate, goal_gaps, load_set, mean_scores

GRID = [i / 20 for i in range(21)]


def worst_gap(ranked: dict[str, dict[str, list[str]]], queries: Sequence[Query]) -> float:
    groups = [queries, *([q for q in queries if q.kind == k] for k in {q.kind for q in queries})]
    return min(min(goal_gaps(mean_scores(ranked, group)).values()) for group in groups)


def tune(run: Run, queries: Sequence[Query]) -> str:
    chosen = [q for q in queries if q.split == "tune"]
    rows = []
    for text_w in GRID:
        for ident_w in GRID:
            ranked = {mode: run.rankings[mode] for mode in LEGS}
            ranked["hybrid"] = {
                q.id: eval_ids(
                    fuse(
                        run.legs["vector"][q.id],
                        run.legs["keyword"][q.id],
                        ident_w if has_identifier(q.text) else text_w,
                    )
                )
                for q in chosen
            }
            ndcg = mean_scores(ranked, chosen)["hybrid"]["nDCG@10"]
            # Gaps equal to 0.001 (a fraction of one query) tie; nDCG@10 breaks the tie.
            rows.append((round(worst_gap(ranked, chosen), 3), ndcg, text_w, ident_w))
    rows.sort(reverse=True)
    # Feature-hashing spaces get one weight for every query: the best pair of equal weights.
    single = next(row for row in rows if row[2] == row[3])
    return md_table(
        [f"{run.embedder}: text weight", "identifier weight", "worst gap", "nDCG@10"],
        [[f"{t:.2f}", f"{i:.2f}", f"{g:+.3f}", f"{n:.3f}"] for g, n, t, i in [*rows[:10], single]],
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--embedder", choices=["minilm", "hash"], default="minilm")
    args = parser.parse_args(argv)
    corpus, queries = load_set()
    print(tune(asyncio.run(evaluate(corpus, queries, args.embedder)), queries))


if __name__ == "__main__":
    sys.exit(main())
