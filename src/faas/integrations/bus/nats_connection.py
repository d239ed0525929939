"""`NatsConnection`: the bus's one nats-py client. The first connect is retried with backoff in
the background while the server is down (so a service starts without NATS); after that nats-py
reconnects by itself, with our backoff between servers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from nats.aio.client import Client, Server
from nats.js import JetStreamContext

from faas.shared.backoff import backoff
from faas.shared.exceptions import DependencyUnavailable

log = logging.getLogger("faas.bus")

# Called with the client once connected (first time) or reconnected.
OnConnect = Callable[[Client], Awaitable[None]]


class NatsConnection:
    def __init__(
        self,
        servers: list[str],
        *,
        name: str,
        connect_timeout_s: float,
        reconnect_wait_s: float,
        reconnect_max_wait_s: float,
        on_connect: OnConnect,
        on_reconnect: OnConnect,
    ) -> None:
        self.servers = servers
        self.name = name
        self.connect_timeout_s = connect_timeout_s
        self.reconnect_wait_s = reconnect_wait_s
        self.reconnect_max_wait_s = reconnect_max_wait_s
        self._on_connect = on_connect
        self._on_reconnect = on_reconnect
        self.client: Client | None = None
        self._js: JetStreamContext | None = None
        self._ready = asyncio.Event()
        self._closing = False
        self._connect_task: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self.client is not None and self.client.is_connected

    async def wait_ready(self) -> None:
        """Wait until connected (again)."""
        await self._ready.wait()

    def require_client(self) -> Client:
        client = self.client
        if client is None or not client.is_connected:
            raise DependencyUnavailable("NATS is not connected")
        return client

    def jetstream(self) -> JetStreamContext:
        self.require_client()
        assert self._js is not None
        return self._js

    async def ping(self) -> bool:
        client = self.client
        if client is None or not client.is_connected:
            return False
        try:
            await client.flush(timeout=1)
        except Exception:
            return False
        return True

    async def start(self) -> None:
        """Connect; when NATS is unreachable keep trying in the background instead of failing."""
        if self.client is not None or self._connect_task is not None:
            return
        self._closing = False
        if not await self._try_connect():
            log.warning("NATS at %s is unreachable; retrying in the background", self._where())
            self._connect_task = asyncio.create_task(self._connect_loop(), name="nats-connect")

    async def _try_connect(self) -> bool:
        client = Client()
        options: dict[str, Any] = {
            "servers": self.servers,
            "name": self.name,
            "connect_timeout": self.connect_timeout_s,
            # nats-py's connect() retries forever at a fixed interval unless told to give up;
            # we retry (with backoff) ourselves and switch its reconnect logic on once connected.
            "allow_reconnect": False,
            "max_reconnect_attempts": 1,
            "reconnect_time_wait": 0,  # reconnect delays come from _next_server
            "reconnect_to_server_handler": self._next_server,
            "error_cb": self._on_error,
            "disconnected_cb": self._on_disconnected,
            "reconnected_cb": self._on_reconnected,
        }
        try:
            await client.connect(**options)
        except Exception as exc:
            log.debug("NATS connect failed: %s", exc)
            with contextlib.suppress(Exception):
                await client.close()
            return False
        client.options["allow_reconnect"] = True
        client.options["max_reconnect_attempts"] = -1
        self.client = client
        self._js = client.jetstream()
        self._ready.set()
        url = client.connected_url
        log.info("connected to NATS at %s", f"{url.hostname}:{url.port}" if url else "?")
        await self._on_connect(client)
        return True

    def _where(self) -> str:
        """The servers without their credentials, for logs."""
        return ", ".join(urlsplit(server).netloc.rpartition("@")[2] for server in self.servers)

    def _delay(self, failures: int) -> float:
        base = backoff(failures, base_s=self.reconnect_wait_s, cap_s=self.reconnect_max_wait_s)
        return base * random.uniform(0.8, 1.2)

    async def _connect_loop(self) -> None:
        attempts = 1
        while not self._closing:
            await asyncio.sleep(self._delay(attempts - 1))
            if await self._try_connect():
                log.info("connected to NATS after %d attempts", attempts + 1)
                return
            attempts += 1
            if attempts % 10 == 0:
                log.warning("NATS still unreachable after %d attempts", attempts)

    def _next_server(
        self, servers: list[Server], _info: dict[str, Any]
    ) -> tuple[Server | None, float]:
        """Reconnect backoff: the least-tried server, after a delay growing with its failures."""
        server = min(servers, key=lambda s: s.reconnects)
        return server, self._delay(server.reconnects)

    async def _on_error(self, exc: Exception) -> None:
        log.debug("NATS error: %r", exc)

    async def _on_disconnected(self) -> None:
        if self.client is None:  # a failed first connect, or close()
            return
        self._ready.clear()
        if not self._closing:
            log.warning("disconnected from NATS; buffering events until it is back")

    async def _on_reconnected(self) -> None:
        self._ready.set()
        log.info("reconnected to NATS")
        if self.client is not None:
            await self._on_reconnect(self.client)

    async def stop_connecting(self) -> None:
        """No more connect attempts from here on (the bus is closing)."""
        self._closing = True
        if self._connect_task is not None:
            self._connect_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connect_task
            self._connect_task = None

    def detach(self) -> Client | None:
        """Forget the client (the caller closes it with `close_client`)."""
        client, self.client, self._js = self.client, None, None
        self._ready.clear()
        return client


async def close_client(client: Client | None) -> None:
    """Flush what the client still holds, then close it; errors are moot at this point."""
    if client is None:
        return
    if client.is_connected:
        with contextlib.suppress(Exception):
            await client.flush(timeout=2)
    with contextlib.suppress(Exception):
        await client.close()
