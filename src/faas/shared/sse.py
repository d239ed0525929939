"""Server-sent events, both ways: `sse_event` encodes one event for a streaming response, and
`read_sse` reads the JSON events of a streamed answer (OpenAI's `data: {...}` lines ending with
`data: [DONE]`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson

from faas.shared.exceptions import UpstreamError

DONE = b"data: [DONE]\n\n"


def sse_event(payload: Any) -> bytes:
    """One `data:` event; values JSON cannot hold (datetimes) are sent as strings."""
    return b"data: " + orjson.dumps(payload, default=str) + b"\n\n"


async def read_sse(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """The JSON object of each `data:` event until `[DONE]`; comments, other fields and blank
    lines are skipped. An event whose data is not a JSON object is an upstream error."""
    async for line in response.aiter_lines():
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError("a server-sent event held data that is not JSON") from exc
        if not isinstance(event, dict):
            raise UpstreamError("a server-sent event held JSON that is not an object")
        yield event
