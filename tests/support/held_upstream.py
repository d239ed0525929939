"""A mock upstream whose chat completions wait until the test lets them go, so a request is
provably still in flight while the test sends another (no sleeps, no race with the clock)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from tests.support.mock_upstream import MockUpstream, MockUpstreamApp


class HeldUpstreamApp(MockUpstreamApp):
    def __init__(self) -> None:
        super().__init__()
        self.arrived = asyncio.Event()
        self.release = asyncio.Event()
        self.held = 0  # chat completions that arrived, released or not

    async def _api(self, scope: Any, path: str, method: str, body: bytes, send: Any) -> None:
        if path == "/v1/chat/completions":
            self.held += 1
            self.arrived.set()
            await self.release.wait()
        await super()._api(scope, path, method, body, send)


@asynccontextmanager
async def held_upstream(**controls: Any) -> AsyncIterator[tuple[MockUpstream, HeldUpstreamApp]]:
    """The upstream served on a free port, and its app (`arrived`, `release`); released on exit
    so a test that fails midway does not leave a request hanging."""
    upstream = MockUpstream(**controls)
    app = HeldUpstreamApp()
    app.controls = upstream.app.controls
    upstream.app = app
    async with upstream:
        try:
            yield upstream, app
        finally:
            app.release.set()
