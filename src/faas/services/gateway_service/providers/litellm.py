"""Every other vendor through litellm (extra `litellm`, pinned to an exact known-good release).

`import litellm` takes seconds and ~200 MB, so it happens on first use, in a thread.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import threading
from collections.abc import AsyncIterator
from typing import Any

import orjson

from faas.services.gateway_service.providers.base import (
    ChatRequest,
    ChatResult,
    ErrorKind,
    MissingExtra,
    ProviderError,
    StreamEvent,
    Usage,
)
from faas.services.gateway_service.routing_table import Deployment

MISSING = "the litellm provider needs the 'litellm' extra: pip install 'faas[litellm]'"
# Most specific first: litellm's Timeout is also an APIConnectionError (as in openai).
_KINDS: tuple[tuple[str, ErrorKind], ...] = (
    ("Timeout", "timeout"),
    ("RateLimitError", "rate_limited"),
    ("AuthenticationError", "auth"),
    ("PermissionDeniedError", "auth"),
    ("APIConnectionError", "connect"),
    ("BadRequestError", "bad_request"),
    ("NotFoundError", "bad_request"),
    ("UnprocessableEntityError", "bad_request"),
)

_module: Any = None
_import_lock = threading.Lock()


def _import() -> Any:
    global _module
    with _import_lock:
        if _module is None:
            # Without this litellm fetches its model cost map from the internet on import.
            os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            try:
                _module = importlib.import_module("litellm")
            except ImportError as exc:
                raise MissingExtra(MISSING) from exc
        return _module


async def _litellm() -> Any:
    return _module if _module is not None else await asyncio.to_thread(_import)


def _retry_after(exc: BaseException) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    value = headers.get("retry-after") if headers is not None else None
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _error(litellm: Any, exc: Exception, deployment: Deployment) -> ProviderError:
    kind: ErrorKind = "server"
    for name, mapped in _KINDS:
        cls = getattr(litellm, name, None)
        if isinstance(cls, type) and isinstance(exc, cls):
            kind = mapped
            break
    status = getattr(exc, "status_code", None)
    where = f"deployment {deployment.id}"
    if kind == "auth":
        return ProviderError(kind, f"{where}: upstream rejected the credentials", status=status)
    text = str(getattr(exc, "message", None) or exc)
    if deployment.api_key is not None:
        text = text.replace(deployment.api_key.get_secret_value(), "[redacted]")
    body = getattr(exc, "body", None)
    return ProviderError(
        kind,
        f"{where}: {text[:500]}",
        status=status if isinstance(status, int) else None,
        retry_after_s=_retry_after(exc) if kind == "rate_limited" else None,
        body=body if isinstance(body, dict) else None,
    )


def _dump(obj: Any, *, exclude_none: bool) -> dict[str, Any]:
    if isinstance(obj, dict):
        return obj
    data: dict[str, Any] = obj.model_dump(exclude_none=exclude_none)
    return data


class LiteLLMProvider:
    name = "litellm"

    def __init__(self) -> None:
        if importlib.util.find_spec("litellm") is None:
            raise MissingExtra(MISSING)

    def _kwargs(self, request: ChatRequest, deployment: Deployment) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            **request.params,
            "model": deployment.model,
            "messages": request.messages,
            "timeout": deployment.timeout_s,
            # Retries and fallbacks are the router's job.
            "num_retries": 0,
        }
        if deployment.api_base:
            kwargs["api_base"] = deployment.api_base
        if deployment.api_key is not None:
            kwargs["api_key"] = deployment.api_key.get_secret_value()
        if deployment.headers:
            kwargs["extra_headers"] = dict(deployment.headers)
        return kwargs

    async def chat(self, request: ChatRequest, deployment: Deployment) -> ChatResult:
        litellm = await _litellm()
        kwargs = self._kwargs(request, deployment)
        kwargs.pop("stream_options", None)
        try:
            response = await litellm.acompletion(**kwargs, stream=False)
        except Exception as exc:
            raise _error(litellm, exc, deployment) from exc
        body = _dump(response, exclude_none=False)
        return ChatResult(body=body, usage=Usage.from_openai(body.get("usage")))

    async def stream(
        self, request: ChatRequest, deployment: Deployment
    ) -> AsyncIterator[StreamEvent]:
        litellm = await _litellm()
        kwargs = self._kwargs(request, deployment)
        options = kwargs.pop("stream_options", None) or {}
        try:
            chunks = await litellm.acompletion(
                **kwargs, stream=True, stream_options={**options, "include_usage": True}
            )
            async for chunk in chunks:
                data = _dump(chunk, exclude_none=True)
                has_content = False
                finish = None
                for choice in data.get("choices") or ():
                    delta = choice.get("delta") or {}
                    has_content = has_content or bool(
                        delta.get("content") or delta.get("tool_calls")
                    )
                    finish = choice.get("finish_reason") or finish
                yield StreamEvent(
                    orjson.dumps(data),
                    has_content=has_content,
                    usage=Usage.from_openai(data.get("usage")),
                    finish_reason=finish,
                )
        except ProviderError:
            raise
        except Exception as exc:
            raise _error(litellm, exc, deployment) from exc

    async def health(self, deployment: Deployment) -> bool:
        try:
            await _litellm()
        except MissingExtra:
            return False
        return True

    async def aclose(self) -> None:
        return None
