"""The `client` host's side of the suite: HTTP calls made from inside its namespace, tokens,
and polling a condition."""

from __future__ import annotations

import functools
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from faas.shared.auth import mint_token
from tests.conftest import TEST_SECRET
from tests.multihost.netns import NamespaceThread


class ClientHttp:
    """httpx from the `client` host: every call runs on a thread inside its namespace."""

    def __init__(self, thread: NamespaceThread) -> None:
        self.thread = thread
        self._http = httpx.Client(timeout=30)

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self.thread.call(functools.partial(self._http.request, method, url, **kwargs))

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def put(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("PUT", url, **kwargs)

    def reachable(self, address: str, port: int) -> bool:
        def probe() -> bool:
            try:
                socket.create_connection((address, port), 0.5).close()
                return True
            except OSError:
                return False

        return self.thread.call(probe)

    def close(self) -> None:
        self.thread.call(self._http.close)
        self.thread.close()


def token(tenant: str, *, platform_admin: bool = False) -> dict[str, str]:
    jwt = mint_token(TEST_SECRET, tenant_id=tenant, user_id="mh", platform_admin=platform_admin)
    return {"Authorization": f"Bearer {jwt}"}


def wait_for(
    what: str,
    check: Callable[[], bool],
    timeout_s: float,
    log: Path | None = None,
    *,
    interval_s: float = 0.1,
) -> None:
    """Poll `check` until it holds; fail with the tail of `log` when it never does."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval_s)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    raise AssertionError(f"{what} not within {timeout_s}s\n{tail}")
