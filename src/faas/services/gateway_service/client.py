"""How other services call the gateway: chat completions (whole or streamed), embeddings, and
the names of the chat models it serves.

Chat requests and answers keep OpenAI's shapes (plain dicts): the agent loop passes its
conversation and tool specs through untouched, and what comes back is what any OpenAI client
would read. Every method raises the shared errors, with the gateway's status and code.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import numpy as np

from faas.kernel.clients import ApiClient
from faas.shared.exceptions import UpstreamError

CHAT_PATH = "/v1/chat/completions"
MODELS_PATH = "/v1/models"
EMBEDDINGS_PATH = "/api/v1/gateway/embeddings"
RERANK_PATH = "/v1/rerank"
AGENT_RUN_HEADER = "x-faas-agent-run"

# The budgeted agent run the current task's chat calls belong to (see `run_budget`).
_run_header: ContextVar[dict[str, str] | None] = ContextVar("faas_agent_run", default=None)


@contextmanager
def run_budget(run_id: str, budget_usd: float | None) -> Iterator[None]:
    """Inside it, every chat call of this task carries the run's budget to the gateway, which
    reserves each call against it too (level `agent`); `None` is no budget."""
    if budget_usd is None:
        yield
        return
    token = _run_header.set({AGENT_RUN_HEADER: f"{run_id};budget_usd={budget_usd!r}"})
    try:
        yield
    finally:
        _run_header.reset(token)


@dataclass(frozen=True)
class Embeddings:
    """Vectors of the texts, in order (float32, as the model gave them: not normalised)."""

    model: str
    """The routing name that embedded them (e.g. `embed-default`)."""
    deployment: str
    """The deployment behind it (`provider:model@host`): what fixes the vector space."""
    vectors: np.ndarray


def reply_message(completion: dict[str, Any]) -> dict[str, Any]:
    """The message of a completion's first choice."""
    try:
        message = completion["choices"][0]["message"]
    except (KeyError, IndexError, TypeError) as exc:
        raise UpstreamError("the gateway answered a chat completion without a choice") from exc
    if not isinstance(message, dict):
        raise UpstreamError("the gateway answered a chat completion without a message")
    return message


class GatewayClient(ApiClient):
    service = "gateway"

    async def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        """An OpenAI chat completion for `body`, an OpenAI request (`model` and `messages`
        required; the gateway's `cache` extension allowed)."""
        completion = await self.call("POST", CHAT_PATH, json=body, headers=_run_header.get())
        if not isinstance(completion, dict):
            raise UpstreamError("the gateway answered a chat completion that is not an object")
        return completion

    async def chat_text(self, body: dict[str, Any]) -> str:
        """Only the reply's text, for callers that want prose or JSON back ("" when the model
        answered with tool calls alone)."""
        return str(reply_message(await self.chat(body)).get("content") or "")

    @asynccontextmanager
    async def stream_chat(
        self, body: dict[str, Any]
    ) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        """The `chat.completion.chunk`s of a streamed completion, the last one carrying usage.

        A request the gateway refuses (unknown model, spent budget) raises before the first
        chunk. A failure after that arrives as a chunk holding `error`, passed on as it came:
        the caller decides whether it ends its own answer or is reported inside it."""
        streamed = {**body, "stream": True, "stream_options": {"include_usage": True}}
        async with self.events(CHAT_PATH, json=streamed, headers=_run_header.get()) as chunks:
            yield chunks

    async def embed(self, texts: Sequence[str], model: str | None = None) -> Embeddings:
        """Embed `texts` with `model` (the gateway's default embedding model when None). One
        call: batching to the gateway's input limit is the caller's choice."""
        body: dict[str, Any] = {"texts": list(texts)}
        if model:
            body["model"] = model
        data = await self.data("POST", EMBEDDINGS_PATH, json=body)
        try:
            return Embeddings(
                model=str(data["model"]),
                deployment=str(data.get("deployment") or ""),
                vectors=np.asarray(data["vectors"], dtype=np.float32),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise UpstreamError("the gateway answered embeddings in an unexpected shape") from exc

    async def rerank(
        self, query: str, documents: Sequence[str], model: str | None = None
    ) -> list[tuple[int, float]]:
        """`(index into documents, relevance score)` for every document, best first, by
        `model` (the gateway's `rerank-default` when None)."""
        body: dict[str, Any] = {"query": query, "documents": list(documents)}
        body |= {"return_documents": False} | ({"model": model} if model else {})
        answer = await self.call("POST", RERANK_PATH, json=body)
        try:
            return [(int(r["index"]), float(r["relevance_score"])) for r in answer["results"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise UpstreamError("the gateway answered a rerank in an unexpected shape") from exc

    async def chat_models(self) -> set[str]:
        """The names a chat request may use as `model` (to check a configuration early)."""
        listing = await self.call("GET", MODELS_PATH)
        try:
            return {str(m["id"]) for m in listing["data"] if m.get("kind", "chat") == "chat"}
        except (KeyError, TypeError, AttributeError) as exc:
            raise UpstreamError("the gateway answered a model list of unexpected shape") from exc
