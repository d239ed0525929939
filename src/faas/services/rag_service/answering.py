"""`/rag/query`: optional query rewrite, hybrid retrieval, a numbered-sources prompt, generation
through the gateway, citations, sources and a grounding score per answer sentence."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from faas.services.gateway_service.client import reply_message
from faas.services.rag_service.models import (
    Citation,
    QueryRequest,
    QueryResponse,
    SearchHit,
    SearchRequest,
    SentenceSupport,
    Source,
)
from faas.services.rag_service.retrieval import (
    REWRITE_TEMPLATE,
    answer_confidence,
    build_prompt,
    cited_numbers,
    cited_support,
    sentences,
)
from faas.shared.api import stream_error
from faas.shared.context import Identity
from faas.shared.sse import DONE, sse_event

if TYPE_CHECKING:
    from faas.services.rag_service.service import RagService

SNIPPET_CHARS = 280
PASSAGE_CHARS = 2000
SUPPORTED = 0.5
NO_SOURCES = "I could not find anything about this in the documents."


@dataclass
class Prepared:
    query: str
    rewritten: str | None
    hits: list[SearchHit]
    prompt: str | None
    usage: dict[str, int] = field(default_factory=dict)


def _add_usage(total: dict[str, int], usage: dict[str, Any] | None) -> None:
    for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
        total[key] = total.get(key, 0) + int((usage or {}).get(key) or 0)


class Answerer:
    """Answers from the tenant's documents, through the RAG service's search, its gateway
    client and its answer cache."""

    def __init__(self, rag: RagService) -> None:
        self.rag = rag

    async def _chat(
        self, prompt: str, body: QueryRequest, max_tokens: int
    ) -> tuple[str, dict[str, Any]]:
        completion = await self.rag.gateway.chat(self._chat_body(prompt, body, max_tokens))
        content = reply_message(completion).get("content") or ""
        return str(content), dict(completion.get("usage") or {})

    def _chat_body(self, prompt: str, body: QueryRequest, max_tokens: int) -> dict[str, Any]:
        return {
            "model": body.model or self.rag.chat_model or "chat-default",
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens,
            "temperature": body.temperature,
        }

    async def prepare(self, identity: Identity, body: QueryRequest) -> Prepared:
        usage: dict[str, int] = {}
        rewritten = None
        search_text = body.query
        if body.enable_rewrite:
            text, rewrite_usage = await self._chat(
                REWRITE_TEMPLATE.format(question=body.query), body, 64
            )
            _add_usage(usage, rewrite_usage)
            first_line = text.strip().splitlines()[0].strip() if text.strip() else ""
            if first_line:
                rewritten = search_text = first_line[:500]
        found = await self.rag.search(
            identity,
            SearchRequest(
                query_text=search_text,
                top_k=body.top_k,
                mode="hybrid",
                filters=body.filters,
                collection=body.collection,
                rerank=body.rerank,
            ),
        )
        hits = found.results
        prompt = None
        if hits:
            passages = [(n, h.title, h.text[:PASSAGE_CHARS]) for n, h in enumerate(hits, 1)]
            prompt = build_prompt(body.query, passages)
        return Prepared(body.query, rewritten, hits, prompt, usage)

    def finish(
        self, prepared: Prepared, answer: str, body: QueryRequest, usage: dict[str, int]
    ) -> QueryResponse:
        cited = cited_numbers(answer)
        citations = [
            Citation(
                n=n,
                document_id=h.document_id,
                chunk_id=h.chunk_id,
                title=h.title,
                snippet=h.text[:SNIPPET_CHARS],
                page=h.metadata.get("page"),
                score=h.score,
                cited_in_answer=n in cited,
            )
            for n, h in enumerate(prepared.hits, 1)
        ]
        sources: dict[str, Source] = {}
        for h in prepared.hits:
            source = sources.setdefault(
                h.document_id,
                Source(
                    document_id=h.document_id,
                    title=h.title,
                    source=h.metadata.get("source"),
                    pages=[],
                ),
            )
            pages = h.metadata.get("pages") or [h.metadata.get("page")]
            for page in pages:
                if isinstance(page, int) and page not in source.pages:
                    source.pages.append(page)
        texts = [f"{h.title}\n{h.text[:PASSAGE_CHARS]}" for h in prepared.hits]  # as shown
        scored = [(s, cited_support(s, texts)) for s in sentences(answer)] if texts else []
        support = [
            SentenceSupport(sentence=s, support=round(v, 3), supported=v >= SUPPORTED)
            for s, v in scored
        ]
        confidence = round(answer_confidence(scored), 3)
        return QueryResponse(
            answer=answer,
            query=prepared.query,
            rewritten_query=prepared.rewritten,
            citations=citations,
            sources=list(sources.values()),
            confidence=confidence,
            usage=usage,
            grounding=support if body.enable_grounding_check else None,
            unsupported_sentences=(
                [x.sentence for x in support if not x.supported]
                if body.enable_grounding_check
                else None
            ),
        )

    async def answer(self, identity: Identity, body: QueryRequest) -> QueryResponse:
        cache = self.rag.cache
        key = await cache.key(identity.tenant_id, body.model_dump(exclude={"stream"}))
        cached = await cache.get(key)
        if cached is not None:
            return cached
        prepared = await self.prepare(identity, body)
        usage = dict(prepared.usage)
        if prepared.prompt is None:
            answer = NO_SOURCES
        else:
            answer, chat_usage = await self._chat(prepared.prompt, body, body.max_tokens)
            _add_usage(usage, chat_usage)
        result = self.finish(prepared, answer, body, usage)
        await cache.put(key, result)
        return result

    async def stream(self, identity: Identity, body: QueryRequest) -> AsyncIterator[bytes]:
        """SSE: a `citations` event, `delta` events with answer text, then `done` with the
        whole result (citations marked as cited or not, grounding, usage), then `[DONE]`.

        The gateway call is opened before the first event, so a request it refuses (an unknown
        model, a spent budget) is an HTTP error; a failure after that ends the stream with an
        `error` event and `[DONE]`, never a cut connection."""
        prepared = await self.prepare(identity, body)
        upstream = AsyncExitStack()
        chunks = None
        if prepared.prompt is not None:
            chat = self._chat_body(prepared.prompt, body, body.max_tokens)
            chunks = await upstream.enter_async_context(self.rag.gateway.stream_chat(chat))
        return self._events(prepared, body, upstream, chunks)

    async def _events(
        self,
        prepared: Prepared,
        body: QueryRequest,
        upstream: AsyncExitStack,
        chunks: AsyncIterator[dict[str, Any]] | None,
    ) -> AsyncIterator[bytes]:
        usage = dict(prepared.usage)
        parts: list[str] = []
        async with upstream:
            try:
                preview = self.finish(prepared, "", body, prepared.usage)
                citations = [c.model_dump() for c in preview.citations]
                yield sse_event({"type": "citations", "citations": citations})
                if chunks is None:
                    parts.append(NO_SOURCES)
                    yield sse_event({"type": "delta", "content": NO_SOURCES})
                else:
                    async for chunk in chunks:
                        if "error" in chunk:
                            yield sse_event({"type": "error", "error": chunk["error"]})
                            continue
                        _add_usage(usage, chunk.get("usage"))
                        for text in _deltas(chunk):
                            parts.append(text)
                            yield sse_event({"type": "delta", "content": text})
                result = self.finish(prepared, "".join(parts), body, usage)
                yield sse_event({"type": "done", **result.model_dump(mode="json")})
            except Exception as exc:
                yield sse_event({"type": "error", "error": stream_error(exc)})
        yield DONE


def _deltas(chunk: dict[str, Any]) -> list[str]:
    """The answer text a `chat.completion.chunk` adds, per choice."""
    texts = ((choice.get("delta") or {}).get("content") for choice in chunk.get("choices") or [])
    return [text for text in texts if text]
