"""The IR metrics of bench/rag_quality.py against hand-computed values, and the integrity of the
labelled evaluation set in bench/data/rag_eval/."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
DATA = BENCH / "data" / "rag_eval"


def _load_bench_module() -> ModuleType:
    # bench/ is not a package: its scripts import `_common` from their own folder.
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("rag_quality", BENCH / "rag_quality.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH))
    return module


rq = _load_bench_module()

QRELS = {"a": 2, "b": 1, "c": 1, "z": 0}


def test_ndcg_matches_hand_computed_value() -> None:
    # DCG  = 0/log2(2) + 2/log2(3) + 1/log2(4) + 0/log2(5) = 1.261860 + 0.5 = 1.761860
    # IDCG = 2/log2(2) + 1/log2(3) + 1/log2(4)             = 2 + 0.630930 + 0.5 = 3.130930
    ranking = ["x", "a", "c", "y"]
    assert rq.ndcg_at_k(ranking, QRELS) == pytest.approx(1.761860 / 3.130930, abs=1e-6)
    assert rq.ndcg_at_k(ranking, QRELS) == pytest.approx(0.562727, abs=1e-6)


def test_ndcg_bounds_cutoff_and_grades() -> None:
    assert rq.ndcg_at_k(["a", "b", "c"], QRELS) == pytest.approx(1.0)
    assert rq.ndcg_at_k(["a", "c", "b"], QRELS) == pytest.approx(1.0)  # equal grades swap
    assert rq.ndcg_at_k(["b", "a", "c"], QRELS) < 1.0  # the grade-2 document belongs first
    assert rq.ndcg_at_k(["z", "x"], QRELS) == 0.0  # grade 0 gains nothing
    assert rq.ndcg_at_k(["a"], {}) == 0.0  # no relevant document: 0, not a division by zero
    eleventh = [f"n{i}" for i in range(10)] + ["a"]
    assert rq.ndcg_at_k(eleventh, QRELS, k=10) == 0.0
    # Only the top k count, and the ideal is cut at k too: one slot, best grade in it.
    assert rq.ndcg_at_k(["a", "b"], QRELS, k=1) == pytest.approx(1.0)
    assert rq.ndcg_at_k(["b", "a"], QRELS, k=1) == pytest.approx(0.5)


def test_recall_matches_hand_computed_values() -> None:
    assert rq.recall_at_k(["x", "a", "c", "y"], QRELS) == pytest.approx(2 / 3)
    assert rq.recall_at_k(["a", "b", "c"], QRELS) == pytest.approx(1.0)
    assert rq.recall_at_k(["z"], QRELS) == 0.0  # grade 0 is not relevant
    assert rq.recall_at_k(["x"] * 10 + ["a"], QRELS, k=10) == 0.0
    assert rq.recall_at_k(["a"], {}) == 0.0


def test_mrr_matches_hand_computed_values() -> None:
    assert rq.mrr_at_k(["x", "a", "c"], QRELS) == pytest.approx(1 / 2)
    assert rq.mrr_at_k(["x", "y", "z", "b"], QRELS) == pytest.approx(1 / 4)  # grade 1 counts
    assert rq.mrr_at_k(["a"], QRELS) == 1.0
    assert rq.mrr_at_k([f"n{i}" for i in range(10)] + ["a"], QRELS, k=10) == 0.0


def test_dcg_uses_log2_discount() -> None:
    assert rq.dcg([1, 1, 1]) == pytest.approx(1 + 1 / math.log2(3) + 0.5)
    assert rq.dcg([]) == 0.0


def test_dedupe_keeps_each_document_at_its_best_rank() -> None:
    assert rq.dedupe(["a", "b", "a", "c", "b"]) == ["a", "b", "c"]


def test_paired_randomisation_test() -> None:
    same = [0.1, 0.5, 0.9, 0.3]
    assert rq.paired_randomisation_p(same, same, 1000) == 1.0
    better = [0.9] * 20
    worse = [0.4] * 20
    p = rq.paired_randomisation_p(better, worse, 2000)
    assert p < 0.01
    assert p == rq.paired_randomisation_p(better, worse, 2000)  # fixed seed: reproducible
    noisy_a = [0.5, 0.6, 0.4, 0.7, 0.3, 0.5]
    noisy_b = [0.6, 0.5, 0.5, 0.6, 0.4, 0.5]
    assert rq.paired_randomisation_p(noisy_a, noisy_b, 2000) > 0.5


def _jsonl(name: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in (DATA / name).read_text().splitlines() if line.strip()]


def test_evaluation_set_is_well_formed() -> None:
    corpus = _jsonl("corpus.jsonl")
    queries = _jsonl("queries.jsonl")
    ids = [d["id"] for d in corpus]
    assert len(corpus) >= 300 and len(set(ids)) == len(ids)
    for doc in corpus:
        assert isinstance(doc["title"], str) and doc["title"]
        assert isinstance(doc["text"], str)
        assert 60 <= len(doc["text"].split()) <= 200, doc["id"]
    assert len({d["text"] for d in corpus}) == len(corpus)
    assert len(queries) >= 60
    assert len({q["id"] for q in queries}) == len(queries)
    known = set(ids)
    for query in queries:
        relevant = query["relevant"]
        assert isinstance(relevant, dict) and 1 <= len(relevant) <= 4, query["id"]
        assert set(relevant) <= known, query["id"]
        assert set(relevant.values()) <= {1, 2} and 2 in relevant.values(), query["id"]
    assert {q["kind"] for q in queries} == {"paraphrase", "identifier", "mixed", "multi"}
    for kind in {q["kind"] for q in queries}:
        splits = [q["split"] for q in queries if q["kind"] == kind]
        assert set(splits) == {"tune", "heldout"}
        assert abs(2 * splits.count("tune") - len(splits)) <= 1, kind
