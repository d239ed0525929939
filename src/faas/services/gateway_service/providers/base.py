"""The provider port. Requests and responses use OpenAI's chat/embeddings shapes as the
lingua franca: the OpenAI-compatible provider passes them through, others translate."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from faas.services.gateway_service.routing_table import Deployment

ErrorKind = Literal[
    "connect", "timeout", "rate_limited", "auth", "bad_request", "server", "unavailable"
]
# Failures worth trying the next deployment for; the rest are the caller's to fix.
RETRYABLE: frozenset[str] = frozenset(
    {"connect", "timeout", "rate_limited", "server", "unavailable"}
)


class ProviderError(Exception):
    """An upstream failure, classified so the router can decide whether to fall back."""

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        status: int | None = None,
        retry_after_s: float | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status
        self.retry_after_s = retry_after_s
        self.body = body

    @property
    def retryable(self) -> bool:
        return self.kind in RETRYABLE


class MissingExtra(Exception):
    """A provider's optional dependency is not installed; the message names the extra."""


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    source: Literal["provider", "estimated"] = "provider"

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @classmethod
    def from_openai(cls, usage: dict[str, Any] | None) -> Usage | None:
        if not usage:
            return None
        prompt_details = usage.get("prompt_tokens_details") or {}
        completion_details = usage.get("completion_tokens_details") or {}
        return cls(
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            cached_tokens=int(prompt_details.get("cached_tokens") or 0),
            reasoning_tokens=int(completion_details.get("reasoning_tokens") or 0),
        )


@dataclass(slots=True)
class ChatRequest:
    """An OpenAI chat request body minus `model` and `stream`, which the router sets."""

    messages: list[dict[str, Any]]
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class ChatResult:
    body: dict[str, Any]  # an OpenAI `chat.completion` object
    usage: Usage | None  # None when the provider did not report usage


@dataclass(slots=True)
class StreamEvent:
    """One SSE `data:` payload: the raw bytes to forward and what the gateway needs from it."""

    data: bytes  # the JSON of one `chat.completion.chunk` (without the `data: ` framing)
    has_content: bool = False  # carries generated text or a tool call
    usage: Usage | None = None
    finish_reason: str | None = None


@dataclass(slots=True)
class EmbeddingResult:
    vectors: list[list[float]]
    usage: Usage | None
    model: str


@runtime_checkable
class ChatProvider(Protocol):
    name: str

    async def chat(self, request: ChatRequest, deployment: Deployment) -> ChatResult:
        """One completion. Raises ProviderError."""
        ...

    def stream(self, request: ChatRequest, deployment: Deployment) -> AsyncIterator[StreamEvent]:
        """Chunks as they arrive; raises ProviderError before or during iteration. The last
        event carries usage when the provider reports it (stream_options.include_usage)."""
        ...

    async def health(self, deployment: Deployment) -> bool: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class TakesTokenIds(Protocol):
    """An embeddings provider that can send token ids upstream as they are."""

    async def embed_token_ids(
        self, ids: list[list[int]], deployment: Deployment
    ) -> EmbeddingResult: ...


@runtime_checkable
class EmbeddingProvider(Protocol):
    name: str

    async def embed(self, texts: list[str], deployment: Deployment) -> EmbeddingResult: ...

    async def health(self, deployment: Deployment) -> bool: ...

    async def aclose(self) -> None: ...
