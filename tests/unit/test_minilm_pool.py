"""MiniLM bulk embedding: batches spread over one thread per core give the same vectors as one
thread, and the process-wide one-BLAS-thread limit holds while any encode runs."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import numpy as np
import pytest

from faas.services.gateway_service.providers import minilm


class RecordingController:
    """Stands in for threadpoolctl's controller: records limits set and restored."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def limit(self, *, limits: int, user_api: str) -> Any:
        self.events.append(f"limit {limits} {user_api}")
        controller = self

        class Limiter:
            def restore_original_limits(self) -> None:
                controller.events.append("restore")

        return Limiter()


def test_overlapping_encodes_share_one_limit_restored_by_the_last() -> None:
    threads = minilm._BlasThreads()
    blas = RecordingController()
    with threads.held(blas):
        with threads.held(blas):
            assert blas.events == ["limit 1 blas"]
        assert blas.events == ["limit 1 blas"]  # the first encode still runs
    assert blas.events == ["limit 1 blas", "restore"]


def test_the_pool_has_one_thread_per_core() -> None:
    assert minilm._pool()._max_workers == (os.cpu_count() or 1)


@pytest.mark.skipif(not minilm.extra_available(), reason="the 'embeddings' extra is absent")
async def test_parallel_batches_give_the_vectors_of_one_thread() -> None:
    model = await asyncio.to_thread(minilm.load_model)
    texts = [f"word{i} " * (1 + i % 23) for i in range(70)]  # 3 batches, mixed lengths
    alone, tokens = await asyncio.to_thread(model.encode, texts)
    spread, spread_tokens = await model.encode_parallel(texts)
    assert spread.shape == (70, 384) and spread_tokens == tokens
    np.testing.assert_allclose(spread, alone, atol=1e-5)
