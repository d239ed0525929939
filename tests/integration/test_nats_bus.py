"""What only `NatsBus` does: the offline buffer, reconnects, heartbeats of long jobs and the
max-deliveries dead letter."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import nats
import pytest

from faas.integrations.bus import JobDelivery, Message
from faas.integrations.bus.nats import NatsBus
from faas.integrations.bus.subjects import stream_names
from faas.shared.exceptions import DependencyUnavailable
from tests.conftest import require_binary

pytestmark = pytest.mark.integration

KIND = "ingestion.process_file"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


class LocalServer:
    """A throwaway nats-server (core NATS only) on a port of its own."""

    def __init__(self, binary: str, port: int) -> None:
        self.binary = binary
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None
        self.extra: list[str] = []  # e.g. ["-js", "-sd", DIR] for JetStream

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "-a", "127.0.0.1", "-p", str(self.port), *self.extra],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("nats-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def local_server() -> Iterator[LocalServer]:
    server = LocalServer(require_binary("nats-server"), free_port())
    yield server
    server.stop()


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def cleanup(nats_url: str, prefix: str) -> AsyncIterator[list[NatsBus]]:
    """Buses to close after the test; then the prefix's streams are deleted."""
    buses: list[NatsBus] = []
    yield buses
    for bus in buses:
        await bus.close()
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    for name in stream_names(prefix):
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await js.delete_stream(name)
    await nc.close()


async def started(buses: list[NatsBus], url: str, prefix: str, **kwargs: Any) -> NatsBus:
    bus = NatsBus(url, prefix, fetch_timeout_s=0.5, **kwargs)
    await bus.start()
    buses.append(bus)
    return bus


async def test_unreachable_nats_buffers_events_and_counts_drops() -> None:
    bus = NatsBus(f"nats://127.0.0.1:{free_port()}", "t", buffer_size=3, reconnect_wait_s=0.05)
    await bus.start()
    try:
        assert not bus.connected
        assert not await bus.ping()
        for i in range(5):
            await bus.publish("cache.invalidated.acme", str(i).encode())
        assert bus.buffered == 3
        assert bus.dropped == 2
        with pytest.raises(DependencyUnavailable):
            await bus.submit(KIND, b"x", job_id="j")
        with pytest.raises(DependencyUnavailable):
            await bus.request("prompt.render", b"x")
        with pytest.raises(DependencyUnavailable):
            await bus.queue_depth()
    finally:
        await bus.close()


async def test_buffered_events_are_flushed_in_order_on_connect_and_reconnect(
    local_server: LocalServer,
) -> None:
    bus = NatsBus(
        f"nats://127.0.0.1:{local_server.port}",
        "t",
        reconnect_wait_s=0.05,
        reconnect_max_wait_s=0.3,
    )
    await bus.start()
    got: list[bytes] = []

    async def handler(message: Message) -> None:
        got.append(message.data)

    try:
        await bus.subscribe("events.>", handler, concurrency=1)
        for i in range(3):
            await bus.publish("events.offline", str(i).encode())
        assert bus.buffered == 3
        local_server.start()

        async def received(n: int) -> bool:
            return len(got) >= n

        await eventually(lambda: received(3))
        assert got == [b"0", b"1", b"2"]
        assert bus.connected and bus.buffered == 0

        local_server.stop()

        async def disconnected() -> bool:
            return not bus.connected

        await eventually(disconnected)
        await bus.publish("events.later", b"3")
        await bus.publish("events.later", b"4")
        assert bus.buffered == 2
        local_server.start()
        await eventually(lambda: received(5))
        assert got == [b"0", b"1", b"2", b"3", b"4"]
        assert bus.dropped == 0
    finally:
        await bus.close()


async def test_heartbeats_keep_a_long_job_from_redelivery(
    nats_url: str, prefix: str, cleanup: list[NatsBus]
) -> None:
    # Heartbeats 20 times per ack window: a loaded CI box cannot starve them into a redelivery.
    bus = await started(cleanup, nats_url, prefix, ack_wait_s=1.0, heartbeat_s=0.05)
    runs: list[int] = []
    finished = asyncio.Event()

    async def long_job(delivery: JobDelivery) -> None:
        runs.append(delivery.attempt)
        await asyncio.sleep(2.5)
        finished.set()

    await bus.consume([KIND], long_job)
    await bus.submit(KIND, b"x", job_id="long")
    await asyncio.wait_for(finished.wait(), 30)

    async def drained() -> bool:
        return await bus.queue_depth(KIND) == 0

    await eventually(drained)
    await asyncio.sleep(1.2)
    assert runs == [1]


async def test_job_of_a_worker_lost_on_its_last_attempt_is_dead_lettered(
    nats_url: str, prefix: str, cleanup: list[NatsBus]
) -> None:
    settings: dict[str, Any] = {"max_attempts": 1, "ack_wait_s": 1.0, "close_grace_s": 0.1}
    doomed = await started(cleanup, nats_url, prefix, **settings)
    survivor = await started(cleanup, nats_url, prefix, **settings)
    dead: list[Message] = []

    async def on_dead(message: Message) -> None:
        dead.append(message)

    await survivor.subscribe(f"dlq.{KIND}", on_dead)
    running = asyncio.Event()

    async def hang(delivery: JobDelivery) -> None:
        running.set()
        await asyncio.Event().wait()

    survivor_runs: list[int] = []

    async def record(delivery: JobDelivery) -> None:
        survivor_runs.append(delivery.attempt)

    await doomed.consume([KIND], hang)
    await doomed.submit(KIND, b"payload", job_id="lost", headers={"X-Tenant-ID": "acme"})
    await asyncio.wait_for(running.wait(), 5)
    await survivor.consume([KIND], record)
    assert doomed.client is not None
    await doomed.client.close()  # the worker "dies": no ack, no nak, no more heartbeats

    async def dead_lettered() -> bool:
        return len(dead) >= 1

    await eventually(dead_lettered)
    assert dead[0].data == b"payload"
    assert dead[0].headers["X-Tenant-ID"] == "acme"
    assert dead[0].headers["X-Failure-Reason"] == "not acknowledged after 1 deliveries"
    assert survivor_runs == []

    async def removed() -> bool:
        return await survivor.queue_depth(KIND) == 0

    await eventually(removed)


async def test_stopping_during_the_last_attempt_dead_letters_the_job(
    nats_url: str, prefix: str, cleanup: list[NatsBus]
) -> None:
    worker = await started(cleanup, nats_url, prefix, max_attempts=1, close_grace_s=0.1)
    watcher = await started(cleanup, nats_url, prefix)
    dead: list[Message] = []

    async def on_dead(message: Message) -> None:
        dead.append(message)

    await watcher.subscribe(f"dlq.{KIND}", on_dead)
    running = asyncio.Event()

    async def hang(delivery: JobDelivery) -> None:
        running.set()
        await asyncio.Event().wait()

    await worker.consume([KIND], hang)
    await worker.submit(KIND, b"x", job_id="stopped")
    await asyncio.wait_for(running.wait(), 5)
    await worker.close()

    async def dead_lettered() -> bool:
        return len(dead) >= 1

    await eventually(dead_lettered)
    assert "worker stopped" in dead[0].headers["X-Failure-Reason"]

    async def removed() -> bool:
        return await watcher.queue_depth(KIND) == 0

    await eventually(removed)


async def test_dead_letters_are_kept_in_the_dlq_stream(
    nats_url: str, prefix: str, cleanup: list[NatsBus]
) -> None:
    bus = await started(cleanup, nats_url, prefix, max_attempts=1)
    done = asyncio.Event()

    async def reject(delivery: JobDelivery) -> None:
        await delivery.fail("no")
        done.set()

    await bus.consume([KIND], reject)
    await bus.submit(KIND, b"kept", job_id="kept")
    await asyncio.wait_for(done.wait(), 5)
    nc = await nats.connect(nats_url)
    try:
        stored = await nc.jetstream().get_last_msg(bus.dlq_stream, f"{prefix}.dlq.{KIND}")
        assert stored.data == b"kept"
        assert stored.headers is not None and stored.headers["X-Failure-Reason"] == "no"
    finally:
        await nc.close()


async def test_a_stream_consumer_resumes_after_a_server_restart(
    local_server: LocalServer, tmp_path: Any
) -> None:
    """The pull request in flight dies with the server; the consumer notices (no answer by the
    request's deadline), pulls again once reconnected, and nothing is lost or doubled."""
    local_server.extra = ["-js", "-sd", str(tmp_path / "js")]
    local_server.start()
    bus = NatsBus(
        f"nats://127.0.0.1:{local_server.port}",
        "t",
        fetch_timeout_s=0.5,
        reconnect_wait_s=0.05,
        reconnect_max_wait_s=0.3,
    )
    await bus.start()
    got: list[bytes] = []

    async def handler(messages: Any) -> None:
        got.extend(m.data for m in messages)

    async def received(n: int) -> bool:
        return len(got) >= n

    try:
        await bus.consume_stream("usage", ["usage.made.*"], "llmops", handler, batch=10)
        for i in range(3):
            await bus.publish("usage.made.acme", str(i).encode(), {"Nats-Msg-Id": f"e{i}"})
        await eventually(lambda: received(3))

        local_server.stop()

        async def disconnected() -> bool:
            return not bus.connected

        await eventually(disconnected)
        for i in range(3, 6):  # buffered by the bus, sent on reconnect, kept by the stream
            await bus.publish("usage.made.acme", str(i).encode(), {"Nats-Msg-Id": f"e{i}"})
        local_server.start()
        await eventually(lambda: received(6), timeout=15.0)
        await asyncio.sleep(0.5)
        assert got == [str(i).encode() for i in range(6)]
    finally:
        await bus.close()
