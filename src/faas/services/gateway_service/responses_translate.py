"""A Responses API request as the chat request the pipeline runs, and a chat completion as the
Responses object the caller gets back."""

from __future__ import annotations

import time
from typing import Any

from faas.services.gateway_service.providers.base import Usage
from faas.services.gateway_service.responses_items import Item, chat_messages, output_items
from faas.services.gateway_service.responses_models import ResponsesBody

# A chat finish reason that stops a response short, and how the Responses API names it.
INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def chat_body(request: ResponsesBody, conversation: list[Item]) -> dict[str, Any]:
    """The chat completion request: `instructions` as the system message, then the conversation
    (the stored chain, then this request's input), tools and options in chat's shapes."""
    messages = []
    if request.instructions:
        messages.append({"role": "system", "content": request.instructions})
    messages += chat_messages(conversation)
    body: dict[str, Any] = {"model": request.model, "messages": messages}
    if request.tools:
        body["tools"] = [
            {"type": "function", "function": t.model_dump(exclude={"type"}, exclude_none=True)}
            for t in request.tools
        ]
        if request.parallel_tool_calls is not None:
            body["parallel_tool_calls"] = request.parallel_tool_calls
    choice = request.tool_choice
    if isinstance(choice, str):
        body["tool_choice"] = choice
    elif choice is not None:
        body["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.max_output_tokens is not None:
        body["max_tokens"] = request.max_output_tokens
    if request.user is not None:
        body["user"] = request.user
    response_format = _response_format(request)
    if response_format is not None:
        body["response_format"] = response_format
    return body


def _response_format(request: ResponsesBody) -> dict[str, Any] | None:
    form = request.text.format if request.text is not None else None
    if form is None or form.type == "text":
        return None
    if form.type == "json_object":
        return {"type": "json_object"}
    schema = form.model_dump(include={"name", "json_schema", "description", "strict"})
    schema = {k: v for k, v in schema.items() if v is not None}
    schema["schema"] = schema.pop("json_schema", {})
    schema.setdefault("name", "response")
    return {"type": "json_schema", "json_schema": schema}


def usage_view(usage: Usage | None) -> dict[str, Any] | None:
    if usage is None:
        return None
    return {
        "input_tokens": usage.prompt_tokens,
        # A required field of OpenAI's schema; chat usage reports no prompt-cache writes.
        "input_tokens_details": {"cached_tokens": usage.cached_tokens, "cache_write_tokens": 0},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.total_tokens,
    }


def response_object(
    request: ResponsesBody,
    response_id: str,
    *,
    created_at: int,
    status: str,
    model: str,
    output: list[Item],
    usage: Usage | None = None,
    incomplete_reason: str | None = None,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The Responses object, echoing the request's settings as OpenAI does."""
    text = request.text.model_dump(by_alias=True, exclude_none=True) if request.text else {}
    text.setdefault("format", {"type": "text"})
    choice = request.tool_choice
    finished = status in ("completed", "incomplete", "failed")
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "completed_at": int(time.time()) if finished else None,
        "background": False,
        "error": error,
        "incomplete_details": {"reason": incomplete_reason} if incomplete_reason else None,
        "instructions": request.instructions,
        "max_output_tokens": request.max_output_tokens,
        "metadata": request.metadata or {},
        "model": model,
        "output": output,
        "parallel_tool_calls": request.parallel_tool_calls is not False,
        "previous_response_id": request.previous_response_id,
        "prompt_cache_key": request.prompt_cache_key,
        "reasoning": request.reasoning,
        "safety_identifier": request.safety_identifier,
        "service_tier": request.service_tier or "default",
        "store": request.store,
        "temperature": request.temperature if request.temperature is not None else 1.0,
        "text": text,
        "tool_choice": choice.model_dump()
        if choice is not None and not isinstance(choice, str)
        else (choice or "auto"),
        "tools": [t.model_dump(exclude_none=True) for t in request.tools or []],
        "top_p": request.top_p if request.top_p is not None else 1.0,
        "truncation": "disabled",
        "usage": usage_view(usage),
        "user": request.user,
    }


def completed_response(
    request: ResponsesBody,
    response_id: str,
    completion: dict[str, Any],
    usage: Usage | None,
    created_at: int,
) -> dict[str, Any]:
    """The Responses object of a finished chat completion."""
    choices = completion.get("choices") or [{}]
    choice = choices[0]
    reason = INCOMPLETE.get(str(choice.get("finish_reason")))
    status = "incomplete" if reason else "completed"
    output = output_items(choice.get("message") or {}, status=status, response_id=response_id)
    return response_object(
        request,
        response_id,
        created_at=created_at,
        status=status,
        model=str(completion.get("model") or request.model),
        output=output,
        usage=usage,
        incomplete_reason=reason,
    )
