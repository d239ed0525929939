"""The floor for a Python LLM proxy on this stack: uvicorn (uvloop, httptools, access log off)
and one aiohttp session, no auth, limits, usage or logging. A POST to /v1/chat/completions is
forwarded as is to the upstream and the answer returned as is. The gateway benchmark measures it
beside faas and LiteLLM: what faas costs above it is what the platform adds.

    python bench/bare_proxy.py --upstream http://127.0.0.1:PORT --port PORT
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import aiohttp
import uvicorn

Scope = dict[str, Any]

_FORWARDED = frozenset({b"authorization", b"content-type"})


class BareProxy:
    """A pure ASGI app: one upstream session, opened at start-up."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.session: aiohttp.ClientSession | None = None

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        body = await read_body(receive)
        headers = {k.decode(): v.decode() for k, v in scope["headers"] if k in _FORWARDED}
        assert self.session is not None
        url = self.upstream + scope["path"]
        async with self.session.request(scope["method"], url, data=body, headers=headers) as answer:
            payload = await answer.read()
            content_type = answer.headers.get("content-type", "application/json")
            status = answer.status
        await answer_with(send, status, payload, [(b"content-type", content_type.encode())])

    def started(self) -> None:
        """Called once the upstream session is open (for a subclass)."""

    def stopping(self) -> None:
        """Called at shutdown, before the upstream session closes (for a subclass)."""

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=None)
                self.session = aiohttp.ClientSession(connector=connector)
                self.started()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.stopping()
                if self.session is not None:
                    await self.session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


async def read_body(receive: Any) -> bytes:
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    return body


async def answer_with(
    send: Any, status: int, payload: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    """The whole answer, its content-length added to `headers`."""
    length = (b"content-length", str(len(payload)).encode())
    await send({"type": "http.response.start", "status": status, "headers": [*headers, length]})
    await send({"type": "http.response.body", "body": payload})


def serve(make_app: Callable[[str], Any], description: str | None) -> None:
    """Parse --upstream, --host and --port and serve `make_app(upstream)` with uvicorn as every
    floor is served: uvloop, httptools, no access log."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--upstream", required=True, help="base URL of the upstream")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(
        make_app(args.upstream),
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        lifespan="on",
    )


def main() -> None:
    serve(BareProxy, __doc__.splitlines()[0] if __doc__ else None)


if __name__ == "__main__":
    main()
