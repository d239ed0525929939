"""The chat and embedding models the platform asks the gateway for (RAG's, by default), by name
and deployment, for the banner and /readyz."""

from __future__ import annotations

from faas.services.gateway_service.routing_table import RoutingTable, load_routing
from faas.shared.config import Settings
from faas.shared.exceptions import FaaSError


def _describe(table: RoutingTable, name: str | None, kind: str) -> str:
    try:
        model = table.get(name) if name else table.default_for(kind)  # type: ignore[arg-type]
    except FaaSError:
        model = None
    if model is None:
        return f"{name or kind} (not in the routing table)"
    return f"{model.name} ({', '.join(d.id for d in model.deployments)})"


def models_in_use(settings: Settings) -> dict[str, str]:
    """`{"chat": "chat-default (mock:faas-mock)", "embedding": "embed-default (hash:hash-384)"}`:
    the models RAG asks the gateway for, and the deployments that serve them."""
    from faas.services.gateway_service.service import default_routing

    try:
        table = load_routing(settings.gateway_models) if settings.gateway_models else None
    except FaaSError as exc:
        unreadable = f"unknown: {exc.message}"
        return {"chat": unreadable, "embedding": unreadable}
    table = table or default_routing()
    return {
        "chat": _describe(table, settings.rag_chat_model, "chat"),
        "embedding": _describe(table, settings.rag_embedding_model, "embedding"),
    }


def banner_line(settings: Settings) -> str:
    models = models_in_use(settings)
    return f"  models: chat {models['chat']}; embeddings {models['embedding']}"
