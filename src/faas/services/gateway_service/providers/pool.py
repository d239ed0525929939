"""Provider instances by name, built on first use so an unused extra is never imported."""

from __future__ import annotations

from faas.services.gateway_service.providers import (
    build_chat_provider,
    build_embedding_provider,
    build_rerank_provider,
)
from faas.services.gateway_service.providers.base import ChatProvider, EmbeddingProvider
from faas.services.gateway_service.providers.rerank_base import RerankProvider


class Providers:
    """One instance per provider name, shared by every deployment that names it."""

    def __init__(self) -> None:
        self._chat: dict[str, ChatProvider] = {}
        self._embed: dict[str, EmbeddingProvider] = {}
        self._rerank: dict[str, RerankProvider] = {}

    def chat(self, name: str) -> ChatProvider:
        if name not in self._chat:
            self._chat[name] = build_chat_provider(name)
        return self._chat[name]

    def embedding(self, name: str) -> EmbeddingProvider:
        if name not in self._embed:
            self._embed[name] = build_embedding_provider(name)
        return self._embed[name]

    def rerank(self, name: str) -> RerankProvider:
        if name not in self._rerank:
            self._rerank[name] = build_rerank_provider(name)
        return self._rerank[name]

    async def aclose(self) -> None:
        providers: list[ChatProvider | EmbeddingProvider | RerankProvider] = [
            *self._chat.values(),
            *self._embed.values(),
            *self._rerank.values(),
        ]
        for provider in providers:
            await provider.aclose()
        self._chat.clear()
        self._embed.clear()
        self._rerank.clear()
