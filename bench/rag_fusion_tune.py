"""How the vector weights of rag_service/fusion.py were chosen: a grid replayed on the `tune`
queries of bench/data/rag_eval only (the `heldout` ones are never seen here).

    .venv/bin/python bench/rag_fusion_tune.py [--embedder minilm|hash]

The keyword and vector lists are fetched once through the API (bench/rag_quality.py's
`evaluate`), each as deep as the service fuses it (search.py's FUSION_DEPTH, 40; `--depth`
changes it), then every (natural-language weight, identifier weight) pair is fused offline with
`fusion.fuse` (weighted RRF, k = 1). Printed: the ten best pairs by their worst goal gap
(hybrid minus the better leg on MRR@10 and recall@10, overall and per query kind, to 0.001),
then by nDCG@10; last, the best pair of equal weights (one weight for every query, as
feature-hashing spaces get).

    .venv/bin/python bench/rag_fusion_tune.py --families

replays, on the same `tune` lists, the fusion families the issue names, each over the same
weight grid: z-scores in a convex combination (the fusion shipped before this one), min-max
scores in a convex combination, and weighted reciprocal rank fusion (`w / (k + rank)`, k in 1,
2, 3, 5, 60; shipped: k = 1). Printed per family: its best pair by worst gap (then nDCG@10),
and how many grid cells (of 441, or 2,205 for RRF) reach a worst gap of -0.010 or better, which
says whether a good cell stands alone (fits single queries) or sits in a region.

    .venv/bin/python bench/rag_fusion_tune.py --map 1

prints, for weighted RRF with k = 1, whether each cell of a finer grid (text weights 0.50-0.85
by 0.01, identifier weights 0-0.5 by 0.025, and one weight for every query from 0 to 0.30 by
0.02, as feature-hashing spaces get) meets the goal on `tune`: where the shipped weights sit in
a region of cells that hold.

    .venv/bin/python bench/rag_fusion_tune.py --families --depth 10

fetches each leg 10 deep, as the service did before (the metrics always read the fused top 10):
how much the deeper lists, which give a document missing from one list's head its share in
that list, change each family.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
from collections.abc import Callable, Sequence

from _common import md_table
from faas.backends.vectors import Hit
from faas.services.rag_service.fusion import fuse, has_identifier, weighted_rrf
from faas.services.rag_service.search import FUSION_DEPTH
from rag_quality import (
    LEGS,
    Query,
    Run,
    eval_ids,
    evaluate,
    goal_gaps,
    load_set,
    mean_scores,
)

GRID = [i / 20 for i in range(21)]
# `--map`: text weights 0.50-0.85 by 0.01, identifier weights 0-0.5 by 0.025.
TEXT_FINE = [round(0.50 + i / 100, 2) for i in range(36)]
IDENT_FINE = [i / 40 for i in range(21)]
EQUAL_FINE = [i / 50 for i in range(16)]  # one weight for every query: 0-0.30 by 0.02


def worst_gap(ranked: dict[str, dict[str, list[str]]], queries: Sequence[Query]) -> float:
    groups = [queries, *([q for q in queries if q.kind == k] for k in {q.kind for q in queries})]
    return min(min(goal_gaps(mean_scores(ranked, group)).values()) for group in groups)


def tune(run: Run, queries: Sequence[Query]) -> str:
    rows = grid(run, queries, fuse)
    rows.sort(reverse=True)
    # Feature-hashing spaces get one weight for every query: the best pair of equal weights.
    single = next(row for row in rows if row[2] == row[3])
    return md_table(
        [f"{run.embedder}: text weight", "identifier weight", "worst gap", "nDCG@10"],
        [[f"{t:.2f}", f"{i:.2f}", f"{g:+.3f}", f"{n:.3f}"] for g, n, t, i in [*rows[:10], single]],
    )


Fusion = Callable[[Sequence[Hit], Sequence[Hit], float], list[Hit]]


def min_max_fuse(
    vector_hits: Sequence[Hit], keyword_hits: Sequence[Hit], weight: float
) -> list[Hit]:
    """Each list's scores scaled to [0, 1] (a hit missing from a list: 0), combined convexly."""

    def scaled(hits: Sequence[Hit]) -> dict[str, float]:
        if not hits:
            return {}
        low, high = min(h.score for h in hits), max(h.score for h in hits)
        return {h.chunk_id: (h.score - low) / (high - low) if high > low else 1.0 for h in hits}

    keyword, vector = scaled(keyword_hits), scaled(vector_hits)
    by_id = {h.chunk_id: h for h in (*vector_hits, *keyword_hits)}
    fused = {c: (1 - weight) * keyword.get(c, 0.0) + weight * vector.get(c, 0.0) for c in by_id}
    return [by_id[c] for c in sorted(fused, key=lambda c: -fused[c])]


# The fusion shipped before weighted RRF (2026-12-06 to 2026-12-07): z-scores within each list,
# a hit missing from one list scored -2 there, combined convexly; a tie to the better rank.
ABSENT_SCORE = -2.0


def z_score_fuse(
    vector_hits: Sequence[Hit], keyword_hits: Sequence[Hit], weight: float
) -> list[Hit]:
    """`(1 - w) * z_keyword + w * z_vector`, each z-score within its own list."""

    def standard(hits: Sequence[Hit]) -> dict[str, float]:
        if not hits:
            return {}
        mean = sum(h.score for h in hits) / len(hits)
        spread = math.sqrt(sum((h.score - mean) ** 2 for h in hits) / len(hits))
        if spread == 0 or not math.isfinite(spread):
            return {h.chunk_id: 0.0 for h in hits}
        return {h.chunk_id: (h.score - mean) / spread for h in hits}

    keyword, vector = standard(keyword_hits), standard(vector_hits)
    best_rank: dict[str, int] = {}
    by_id: dict[str, Hit] = {}
    for hits in (keyword_hits, vector_hits):
        for rank, hit in enumerate(hits):
            by_id.setdefault(hit.chunk_id, hit)
            best_rank[hit.chunk_id] = min(rank, best_rank.get(hit.chunk_id, rank))
    fused = {
        c: (1 - weight) * keyword.get(c, ABSENT_SCORE) + weight * vector.get(c, ABSENT_SCORE)
        for c in by_id
    }
    return [by_id[c] for c in sorted(fused, key=lambda c: (-fused[c], best_rank[c]))]


def rrf_fuse(k: float) -> Fusion:
    """Weighted reciprocal rank fusion with constant `k` (fusion.weighted_rrf)."""
    return lambda vector_hits, keyword_hits, weight: weighted_rrf(
        vector_hits, keyword_hits, weight, k
    )


def grid(
    run: Run,
    queries: Sequence[Query],
    fusion: Fusion,
    text_weights: Sequence[float] = GRID,
    ident_weights: Sequence[float] = GRID,
) -> list[tuple[float, float, float, float]]:
    """(worst gap, nDCG@10, text weight, identifier weight) for every pair of the grid."""
    chosen = [q for q in queries if q.split == "tune"]
    rows = []
    for text_w in text_weights:
        for ident_w in ident_weights:
            ranked = {mode: run.rankings[mode] for mode in LEGS}
            ranked["hybrid"] = {
                q.id: eval_ids(
                    fusion(
                        run.legs["vector"][q.id],
                        run.legs["keyword"][q.id],
                        ident_w if has_identifier(q.text) else text_w,
                    )
                )
                for q in chosen
            }
            ndcg = mean_scores(ranked, chosen)["hybrid"]["nDCG@10"]
            rows.append((round(worst_gap(ranked, chosen), 3), ndcg, text_w, ident_w))
    return rows


def families(run: Run, queries: Sequence[Query]) -> str:
    candidates: list[tuple[str, list[Fusion]]] = [
        ("z-scores, convex (shipped before, 10 deep)", [z_score_fuse]),
        ("min-max, convex", [min_max_fuse]),
        ("weighted RRF, k = 1 (shipped)", [fuse]),
        ("weighted RRF, k in 1, 2, 3, 5, 60", [rrf_fuse(k) for k in (1, 2, 3, 5, 60)]),
    ]
    rows = []
    for name, fusions in candidates:
        cells = [row for fusion in fusions for row in grid(run, queries, fusion)]
        worst, ndcg, text_w, ident_w = max(cells)
        near = sum(cell[0] >= -0.010 for cell in cells)
        rows.append(
            [
                name,
                f"{text_w:.2f} / {ident_w:.2f}",
                f"{worst:+.3f}",
                f"{ndcg:.3f}",
                f"{near} of {len(cells)}",
            ]
        )
    header = [f"{run.embedder}, tune: family", "best text / identifier weight", "worst gap"]
    return md_table([*header, "nDCG@10", "cells with worst gap >= -0.010"], rows)


def region_map(run: Run, queries: Sequence[Query], k: float) -> str:
    """Weighted RRF with constant `k` on a fine grid around the shipped weights: one line per
    text weight, one mark per identifier weight (`#` worst gap >= 0, `+` >= -0.010, `.` below).
    A region of marks is a choice that holds; a lone mark fits single queries."""
    cells = grid(run, queries, rrf_fuse(k), TEXT_FINE, IDENT_FINE)
    marks = {(t, i): "#" if g >= 0 else "+" if g >= -0.010 else "." for g, _, t, i in cells}
    lines = [
        f"{run.embedder}, tune, weighted RRF k = {k:g}: text weight by rows, identifier weight "
        f"{IDENT_FINE[0]:.3f} to {IDENT_FINE[-1]:.3f} by {IDENT_FINE[1] - IDENT_FINE[0]:.3f} "
        "across",
        *(f"  {t:.2f}  " + "".join(marks[(t, i)] for i in IDENT_FINE) for t in TEXT_FINE),
    ]
    # One weight for every query, as feature-hashing spaces get.
    equal = [g for w in EQUAL_FINE for g, _, _, _ in grid(run, queries, rrf_fuse(k), [w], [w])]
    lines.append(
        f"one weight for every query, {EQUAL_FINE[0]:.2f} to {EQUAL_FINE[-1]:.2f} by "
        f"{EQUAL_FINE[1] - EQUAL_FINE[0]:.2f}: "
        + "".join("#" if g >= 0 else "+" if g >= -0.010 else "." for g in equal)
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--embedder", choices=["minilm", "hash"], default="minilm")
    parser.add_argument("--families", action="store_true", help="compare fusion families")
    parser.add_argument("--depth", type=int, default=FUSION_DEPTH, help="hits fetched per leg")
    parser.add_argument("--map", type=float, metavar="K", help="weighted RRF's fine grid, k = K")
    args = parser.parse_args(argv)
    corpus, queries = load_set()
    run = asyncio.run(evaluate(corpus, queries, args.embedder, args.depth))
    if args.map is not None:
        print(region_map(run, queries, args.map))
    else:
        print(families(run, queries) if args.families else tune(run, queries))


if __name__ == "__main__":
    sys.exit(main())
