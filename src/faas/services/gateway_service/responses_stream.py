"""A streamed Responses call: the pipeline's chat completion chunks translated, as they arrive,
into the Responses API's events (`response.created` ... `response.completed`), each numbered by
`sequence_number`. A failure upstream after the stream began ends it with `error` and
`response.failed`."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from faas.services.gateway_service.accounting import CallRecord
from faas.services.gateway_service.responses_items import (
    Item,
    function_call_item,
    message_item,
    new_id,
    output_text,
)
from faas.services.gateway_service.responses_models import ResponsesBody
from faas.services.gateway_service.responses_translate import INCOMPLETE, response_object
from faas.shared.exceptions import FaaSError

Event = dict[str, Any]
OnFinal = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass
class _Open:
    """An output item still being streamed."""

    index: int
    item: Item
    text: list[str] = field(default_factory=list)


class ResponseStream:
    def __init__(
        self,
        request: ResponsesBody,
        response_id: str,
        call: CallRecord,
        on_final: OnFinal,
    ) -> None:
        self.request = request
        self.response_id = response_id
        self.created_at = int(time.time())
        self.call = call
        self.on_final = on_final
        self.output: list[Item] = []
        self.message: _Open | None = None
        self.calls: dict[int, _Open] = {}
        self.finish: str | None = None
        self.model = request.model
        self.sequence = 0

    def _frame(self, event: Event) -> bytes:
        event["sequence_number"] = self.sequence
        self.sequence += 1
        name = str(event["type"]).encode()
        return b"event: " + name + b"\ndata: " + orjson.dumps(event) + b"\n\n"

    def _response(self, status: str, **extra: Any) -> dict[str, Any]:
        return response_object(
            self.request,
            self.response_id,
            created_at=self.created_at,
            status=status,
            model=self.model,
            output=self.output,
            **extra,
        )

    async def run(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        failure: dict[str, Any] | None = None
        try:  # the upstream stream is closed (and its usage settled) however this one ends
            for kind in ("response.created", "response.in_progress"):
                yield self._frame({"type": kind, "response": self._response("in_progress")})
            async for frame in chunks:
                for chunk in _chunks(frame):
                    if isinstance(chunk.get("error"), dict):
                        failure = chunk["error"]
                        continue
                    for event in self._chunk(chunk):
                        yield self._frame(event)
        finally:
            close = getattr(chunks, "aclose", None)
            if close is not None:
                await close()
        for event in self._close_all():
            yield self._frame(event)
        if failure is None:
            reason = INCOMPLETE.get(str(self.finish))
            status = "incomplete" if reason else "completed"
            final = self._response(status, usage=self.call.usage, incomplete_reason=reason)
            try:
                await self.on_final(final)
            except FaaSError as exc:  # answered, but not stored as asked
                failure = {"message": f"the response could not be stored: {exc.message}"}
            else:
                yield self._frame({"type": f"response.{status}", "response": final})
                return
        message = str(failure.get("message") or "the upstream model failed")
        error = {"code": "server_error", "message": message}
        yield self._frame({"type": "error", **error, "param": None})
        failed = self._response("failed", usage=self.call.usage, error=error)
        yield self._frame({"type": "response.failed", "response": failed})

    def _chunk(self, chunk: dict[str, Any]) -> Iterator[Event]:
        if isinstance(chunk.get("model"), str):
            self.model = chunk["model"]
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta")
            if not isinstance(delta, dict):
                continue
            content = delta.get("content")
            if isinstance(content, str) and content:
                yield from self._text(content)
            for call in delta.get("tool_calls") or []:
                if isinstance(call, dict):
                    yield from self._tool_call(call)
            if choice.get("finish_reason"):
                self.finish = str(choice["finish_reason"])

    def _open_message(self) -> Iterator[Event]:
        item = message_item("assistant", [], new_id("msg")) | {"status": "in_progress"}
        self.message = _Open(len(self.output), item)
        self.output.append(item)
        yield {
            "type": "response.output_item.added",
            "output_index": self.message.index,
            "item": item,
        }
        yield {
            "type": "response.content_part.added",
            "item_id": item["id"],
            "output_index": self.message.index,
            "content_index": 0,
            "part": output_text(""),
        }

    def _text(self, delta: str) -> Iterator[Event]:
        if self.message is None:
            yield from self._open_message()
        assert self.message is not None
        self.message.text.append(delta)
        yield {
            "type": "response.output_text.delta",
            "item_id": self.message.item["id"],
            "output_index": self.message.index,
            "content_index": 0,
            "delta": delta,
            "logprobs": [],
        }

    def _tool_call(self, delta: dict[str, Any]) -> Iterator[Event]:
        index = delta.get("index", 0)
        function = delta.get("function")
        function = function if isinstance(function, dict) else {}
        state = self.calls.get(index) if isinstance(index, int) else None
        if state is None:
            yield from self._close_message()
            given = delta.get("id")
            call_id = given if isinstance(given, str) else new_id("call")
            item = function_call_item(call_id, {"name": function.get("name")}, "in_progress")
            state = _Open(len(self.output), item)
            self.output.append(item)
            self.calls[index if isinstance(index, int) else len(self.calls)] = state
            yield {"type": "response.output_item.added", "output_index": state.index, "item": item}
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            state.text.append(arguments)
            yield {
                "type": "response.function_call_arguments.delta",
                "item_id": state.item["id"],
                "output_index": state.index,
                "delta": arguments,
            }

    def _close_message(self) -> Iterator[Event]:
        opened, self.message = self.message, None
        if opened is None:
            return
        text = "".join(opened.text)
        item_id, index = opened.item["id"], opened.index
        where = {"item_id": item_id, "output_index": index, "content_index": 0}
        yield {"type": "response.output_text.done", **where, "text": text, "logprobs": []}
        yield {"type": "response.content_part.done", **where, "part": output_text(text)}
        status = "incomplete" if self.finish in INCOMPLETE else "completed"
        opened.item.update(content=[output_text(text)], status=status)
        yield {"type": "response.output_item.done", "output_index": index, "item": opened.item}

    def _close_all(self) -> Iterator[Event]:
        if not self.output:
            yield from self._open_message()
        yield from self._close_message()
        for state in self.calls.values():
            arguments = "".join(state.text)
            state.item.update(arguments=arguments, status="completed")
            yield {
                "type": "response.function_call_arguments.done",
                "item_id": state.item["id"],
                "output_index": state.index,
                "name": state.item["name"],
                "arguments": arguments,
            }
            yield {
                "type": "response.output_item.done",
                "output_index": state.index,
                "item": state.item,
            }
        self.calls = {}


def _chunks(frame: bytes) -> Iterator[dict[str, Any]]:
    """The JSON payloads of an SSE frame from the pipeline (`data: {...}`), without `[DONE]`."""
    for line in frame.split(b"\n"):
        if not line.startswith(b"data: "):
            continue
        payload = line[6:]
        if payload == b"[DONE]":
            continue
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            continue
        if isinstance(chunk, dict):
            yield chunk
