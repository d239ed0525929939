"""Sizes of gateway inputs in characters, the unit `faas.shared.cpu.run_cpu` decides by."""

from __future__ import annotations


def text_size(texts: list[str]) -> int:
    return sum(len(t) for t in texts)


def vector_size(vectors: list[list[float]]) -> int:
    """Vectors in the same unit: a float is about 16 characters of JSON."""
    return 16 * len(vectors) * (len(vectors[0]) if vectors else 0)
