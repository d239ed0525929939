"""The embedding space of a collection: the model its chunks were embedded with, and its
dimension. A query embedded by another model ranks noise (hash vectors next to MiniLM queries
scored 0.003 instead of 0.43), so mixing is refused with the way out: `faas rag reindex`."""

from __future__ import annotations

from typing import Any

from faas.shared.exceptions import Conflict

MODEL_ID_CHARS = 128  # rag_chunks.embedding_model


def model_id(response: dict[str, Any]) -> str:
    """`provider:model` of the gateway deployment that embedded: what fixes the vector space
    (the model's routing name, e.g. embed-default, stays the same when its deployment changes;
    the host after `@` does not change the vectors)."""
    deployment = str(response.get("deployment") or "").split("@", 1)[0]
    return (deployment or str(response["model"]))[:MODEL_ID_CHARS]


def mismatch(
    collection: str, indexed: str, indexed_dims: int | None, model: str, dims: int
) -> Conflict:
    was = f"{indexed} ({indexed_dims} dimensions)" if indexed_dims else indexed
    return Conflict(
        f"collection {collection!r} was indexed with {was} but the gateway now embeds with "
        f"{model} ({dims} dimensions): run `faas rag reindex --collection {collection}` to "
        f"re-embed it with {model}, or set FAAS_RAG_EMBEDDING_MODEL to a model served by {indexed}",
        details={
            "collection": collection,
            "indexed_with": indexed,
            "indexed_dimensions": indexed_dims,
            "current_model": model,
            "current_dimensions": dims,
        },
    )
