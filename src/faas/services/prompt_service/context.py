"""Fitting a conversation into a context window: keep the system prompt and the newest
messages that fit; with `summarize`, the dropped oldest turns become one summary message,
written through the gateway from the tenant's `agent.summarize_memory` template."""

from __future__ import annotations

from typing import Any

from faas.services.gateway_service.client import GatewayClient
from faas.services.prompt_service.models import ContextRequest, ContextResponse
from faas.services.prompt_service.rendering import TemplateRenderer
from faas.services.prompt_service.stored_templates import StoredTemplateRenderer
from faas.shared.context import Identity
from faas.shared.exceptions import ValidationFailed
from faas.shared.tokens import REPLY_PRIMING, count_chat_tokens

SUMMARY_PREFIX = "Summary of earlier conversation: "
SUMMARY_TEMPLATE = "agent.summarize_memory"
SUMMARY_MAX_TOKENS = 512
SUMMARY_MIN_TOKENS = 8
# The transcript handed to the summarizer: newest dropped turns first, up to this size.
SUMMARY_INPUT_CHARS = 200_000
SUMMARY_MESSAGE_CHARS = 20_000
# The gateway's own default chat model, named because its chat route needs a model.
DEFAULT_CHAT_MODEL = "chat-default"


class ContextBuilder:
    def __init__(
        self,
        renderer: TemplateRenderer,
        renders: StoredTemplateRenderer,
        gateway: GatewayClient,
        chat_model: str | None = None,
    ) -> None:
        self.renderer = renderer
        self.renders = renders
        self.gateway = gateway
        self.chat_model = chat_model

    async def build(self, identity: Identity, body: ContextRequest) -> ContextResponse:
        """Keep the system prompt and the newest messages that fit `max_tokens` (cl100k chat
        tokens, exact for OpenAI cl100k models); with `summarize`, the dropped oldest turns
        are replaced by one summary message written through the gateway."""
        history = [m.model_dump(exclude_unset=True) for m in body.messages]
        system: dict[str, Any] | None = None
        if body.system_prompt is not None:
            system = {"role": "system", "content": body.system_prompt}
        else:
            first = next((i for i, m in enumerate(history) if m["role"] == "system"), None)
            if first is not None:
                system = history.pop(first)
        head = [system] if system is not None else []
        # Counting tokens of megabytes of messages takes seconds: off the event loop.
        base, costs = await self.renderer.run(_costs, head, history)
        if base > body.max_tokens:
            raise ValidationFailed(
                f"the system prompt alone needs {base} tokens; max_tokens is {body.max_tokens}",
                details={"system_tokens": base, "max_tokens": body.max_tokens},
            )
        start = _fit(history, costs, body.max_tokens - base)
        truncated = await self.renderer.run(
            _context, head + history[start:], start, summarized=False
        )
        if start == 0 or body.strategy == "truncate":
            return truncated

        overhead = count_chat_tokens([{"role": "system", "content": SUMMARY_PREFIX}])
        overhead -= REPLY_PRIMING
        reserve = min(SUMMARY_MAX_TOKENS, (body.max_tokens - base) // 3)
        summary_tokens = reserve - overhead - 1  # 1: the prefix may merge with the summary
        if summary_tokens < SUMMARY_MIN_TOKENS:
            truncated.note = "no room for a summary within max_tokens: truncated instead"
            return truncated
        start = _fit(history, costs, body.max_tokens - base - reserve)
        summary = await self._summarize(identity, history[:start], summary_tokens, body.model)
        if not summary:
            truncated.note = "the summarizer returned nothing: truncated instead"
            return truncated
        summary_message = {"role": "system", "content": SUMMARY_PREFIX + summary}
        result = await self.renderer.run(
            _context, [*head, summary_message, *history[start:]], start, summarized=True
        )
        if result.token_count > body.max_tokens:
            truncated.note = (
                f"the summary did not fit ({result.token_count} > {body.max_tokens} tokens): "
                "truncated instead"
            )
            return truncated
        return result

    async def _summarize(
        self, identity: Identity, dropped: list[dict[str, Any]], max_tokens: int, model: str | None
    ) -> str:
        transcript: list[dict[str, Any]] = []
        size = 0
        for message in reversed(dropped):  # newest first, so a cut loses the oldest turns
            content = _text(message)[:SUMMARY_MESSAGE_CHARS]
            size += len(content)
            if size > SUMMARY_INPUT_CHARS:
                break
            transcript.append({"role": message["role"], "content": content})
        transcript.reverse()
        rendered = await self.renders.render(
            identity.tenant_id, SUMMARY_TEMPLATE, {"messages": transcript}
        )
        text = await self.gateway.chat_text(
            {
                "model": model or self.chat_model or DEFAULT_CHAT_MODEL,
                "messages": [{"role": "user", "content": rendered.rendered}],
                "max_tokens": max_tokens,
                "temperature": 0,
            }
        )
        return text.strip()


def _costs(head: list[dict[str, Any]], history: list[dict[str, Any]]) -> tuple[int, list[int]]:
    """Tokens of the head (system prompt and reply priming), and of each message alone."""
    return count_chat_tokens(head), [count_chat_tokens([m]) - REPLY_PRIMING for m in history]


def _fit(history: list[dict[str, Any]], costs: list[int], budget: int) -> int:
    """The index of the oldest message kept when keeping the newest messages that fit; a tool
    result whose assistant tool call was dropped is dropped too."""
    start, total = len(costs), 0
    while start > 0 and total + costs[start - 1] <= budget:
        total += costs[start - 1]
        start -= 1
    while start < len(history) and history[start]["role"] == "tool":
        start += 1
    return start


def _text(message: dict[str, Any]) -> str:
    """A message as transcript text: text parts, and the names of the tools it called."""
    content = message.get("content")
    if isinstance(content, list):
        text = " ".join(str(p.get("text", "")) for p in content if p.get("type") == "text")
    else:
        text = str(content or "")
    calls = [
        str(call.get("function", {}).get("name", ""))
        for call in message.get("tool_calls") or []
        if isinstance(call, dict)
    ]
    if calls:
        text = f"{text} [called {', '.join(calls)}]".strip()
    return text


def _context(messages: list[dict[str, Any]], dropped: int, *, summarized: bool) -> ContextResponse:
    return ContextResponse(
        messages=messages,
        token_count=count_chat_tokens(messages),
        dropped=dropped,
        summarized=summarized,
    )
