"""One contract for every message bus: the same tests run in process and against NATS."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import nats
import pytest
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, Sum
from opentelemetry.sdk.trace import TracerProvider

from faas.integrations.bus import JobDelivery, Message, MessageBus
from faas.integrations.bus.memory import InProcessBus
from faas.integrations.bus.memory_broker import InProcessBroker
from faas.integrations.bus.nats import NatsBus
from faas.integrations.bus.subjects import event_stream_name, stream_names
from faas.shared.exceptions import DependencyUnavailable, UpstreamTimeout

KIND = "ingestion.process_file"
FAST: dict[str, Any] = {"ack_wait_s": 2.0, "retry_base_s": 0.05, "max_attempts": 3}


@dataclass
class Buses:
    """Builds started buses on one broker (one NATS server) under a fresh prefix."""

    prefix: str
    build: Callable[..., MessageBus]
    started: list[MessageBus] = field(default_factory=list)

    async def make(self, **kwargs: Any) -> MessageBus:
        bus = self.build(**{"prefix": self.prefix, **FAST, **kwargs})
        await bus.start()
        self.started.append(bus)
        return bus


@pytest.fixture(params=["inprocess", "nats"])
async def buses(request: pytest.FixtureRequest) -> AsyncIterator[Buses]:
    prefix = f"t{uuid.uuid4().hex[:12]}"
    url = ""
    if request.param == "inprocess":
        broker = InProcessBroker()

        def build(**kwargs: Any) -> MessageBus:
            return InProcessBus(broker=broker, close_grace_s=1.0, **kwargs)

    else:
        url = request.getfixturevalue("nats_url")

        def build(**kwargs: Any) -> MessageBus:
            return NatsBus(url, fetch_timeout_s=0.5, close_grace_s=1.0, **kwargs)

    kit = Buses(prefix, build)
    yield kit
    for bus in kit.started:
        await bus.close()
    if url:
        nc = await nats.connect(url)
        js = nc.jetstream()
        for name in (*stream_names(prefix), event_stream_name(prefix, "usage")):
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await js.delete_stream(name)
        await nc.close()


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def collector() -> tuple[list[Message], Callable[[Message], Awaitable[None]]]:
    got: list[Message] = []

    async def handler(message: Message) -> None:
        got.append(message)

    return got, handler


async def count_is(items: list[Any], n: int) -> bool:
    return len(items) >= n


# --- events -------------------------------------------------------------------------------


async def test_publish_subscribe_keeps_headers_and_strips_prefix(buses: Buses) -> None:
    bus = await buses.make()
    unprefixed = await buses.make(prefix="")
    got, handler = collector()
    raw, raw_handler = collector()
    await bus.subscribe("cache.invalidated.acme", handler)
    await unprefixed.subscribe(f"{buses.prefix}.cache.>", raw_handler)
    headers = {
        "Content-Type": "application/json",
        "X-Tenant-ID": "acme",
        "X-User-ID": "u1",
        "X-Correlation-ID": "corr-1",
        "X-Request-ID": "req-1",
    }
    await bus.publish("cache.invalidated.acme", b'{"key":"k1"}', headers)
    await eventually(lambda: count_is(got, 1))
    await eventually(lambda: count_is(raw, 1))
    message = got[0]
    assert message.subject == "cache.invalidated.acme"
    assert message.data == b'{"key":"k1"}'
    assert message.reply is None
    for name, value in headers.items():
        assert message.headers[name] == value
    assert raw[0].subject == f"{buses.prefix}.cache.invalidated.acme"


async def test_other_prefixes_do_not_see_the_events(buses: Buses) -> None:
    bus = await buses.make()
    other = await buses.make(prefix=f"{buses.prefix}x")
    mine, mine_handler = collector()
    theirs, their_handler = collector()
    await bus.subscribe("gateway.usage.>", mine_handler)
    await other.subscribe("gateway.usage.>", their_handler)
    await bus.publish("gateway.usage.acme", b"1")
    await eventually(lambda: count_is(mine, 1))
    await asyncio.sleep(0.1)
    assert theirs == []


async def test_wildcards_match_as_in_nats(buses: Buses) -> None:
    bus = await buses.make()
    star, star_handler = collector()
    tail, tail_handler = collector()
    await bus.subscribe("rag.*.acme", star_handler)
    await bus.subscribe("rag.>", tail_handler)
    for subject in ("rag.indexed.acme", "rag.indexed.other", "rag.a.b.acme", "rag"):
        await bus.publish(subject, b"x")
    await eventually(lambda: count_is(tail, 3))
    await asyncio.sleep(0.1)
    assert sorted(m.subject for m in tail) == [
        "rag.a.b.acme",
        "rag.indexed.acme",
        "rag.indexed.other",
    ]
    assert [m.subject for m in star] == ["rag.indexed.acme"]


async def test_invalid_subjects_are_refused(buses: Buses) -> None:
    bus = await buses.make()
    _, handler = collector()
    for subject in ("", "a..b", "a.*", "a b", "a.>.b"):
        for _ in range(2):  # valid subjects are remembered; a refusal never is
            with pytest.raises(ValueError):
                await bus.publish(subject, b"x")
    with pytest.raises(ValueError):
        await bus.subscribe("a.>.b", handler)
    await bus.subscribe("a.*", handler)  # a valid pattern, checked with wildcards allowed
    with pytest.raises(ValueError):
        await bus.publish("a.*", b"x")  # is still no subject to publish on


async def test_queue_group_delivers_each_message_once(buses: Buses) -> None:
    first = await buses.make()
    second = await buses.make()
    one, one_handler = collector()
    two, two_handler = collector()
    everyone, plain_handler = collector()
    await first.subscribe("orders.created", one_handler, queue="workers")
    await second.subscribe("orders.created", two_handler, queue="workers")
    await second.subscribe("orders.created", plain_handler)
    for i in range(20):
        await first.publish("orders.created", str(i).encode())
    await eventually(lambda: count_is(everyone, 20))
    await eventually(lambda: count_is(one + two, 20))
    await asyncio.sleep(0.1)
    assert sorted(int(m.data) for m in one + two) == list(range(20))


async def test_slow_handlers_run_concurrently(buses: Buses) -> None:
    """Each handler waits until all five are running at once: handlers run one by one would
    never get there (no timing involved)."""
    bus = await buses.make()
    inside: list[bytes] = []
    all_in = asyncio.Event()
    finished: list[bytes] = []

    async def slow(message: Message) -> None:
        inside.append(message.data)
        if len(inside) == 5:
            all_in.set()
        await all_in.wait()
        finished.append(message.data)

    await bus.subscribe("agent.step.acme", slow, concurrency=5)
    for i in range(5):
        await bus.publish("agent.step.acme", str(i).encode())
    await eventually(lambda: count_is(finished, 5), timeout=30)
    assert sorted(finished) == [str(i).encode() for i in range(5)]


async def test_a_failing_handler_does_not_end_the_subscription(buses: Buses) -> None:
    bus = await buses.make()
    got: list[bytes] = []

    async def flaky(message: Message) -> None:
        if message.data == b"bad":
            raise RuntimeError("boom")
        got.append(message.data)

    await bus.subscribe("ml.predicted.acme", flaky)
    await bus.publish("ml.predicted.acme", b"bad")
    await bus.publish("ml.predicted.acme", b"good")
    await eventually(lambda: count_is(got, 1))
    assert got == [b"good"]


async def test_unsubscribe_stops_delivery(buses: Buses) -> None:
    bus = await buses.make()
    got, handler = collector()
    sub = await bus.subscribe("llmops.run.acme", handler)
    await bus.publish("llmops.run.acme", b"1")
    await eventually(lambda: count_is(got, 1))
    await sub.unsubscribe()
    await bus.publish("llmops.run.acme", b"2")
    await asyncio.sleep(0.2)
    assert [m.data for m in got] == [b"1"]


async def test_request_reply(buses: Buses) -> None:
    server = await buses.make()
    client = await buses.make()

    async def render(message: Message) -> bytes:
        return b"hello " + message.data + b" from " + message.headers["X-Tenant-ID"].encode()

    await server.subscribe("prompt.render", render, queue="prompt")
    answer = await client.request(
        "prompt.render", b"bob", headers={"X-Tenant-ID": "acme"}, timeout_s=2
    )
    assert answer.data == b"hello bob from acme"


async def test_request_timeout_and_no_responders(buses: Buses) -> None:
    bus = await buses.make()

    never = asyncio.Event()

    async def silent(message: Message) -> None:
        await never.wait()

    await bus.subscribe("gateway.slow", silent)
    # The handler never answers: only the request's own timeout can end the wait (the outer
    # bound, far above it, turns a broken timeout into a failure instead of a hang).
    with pytest.raises(UpstreamTimeout):
        await asyncio.wait_for(bus.request("gateway.slow", b"", timeout_s=0.2), 30)
    never.set()
    with pytest.raises(DependencyUnavailable):
        await bus.request("nobody.listens.here", b"", timeout_s=0.5)


async def test_trace_context_propagates_to_handlers(buses: Buses) -> None:
    tracer = TracerProvider().get_tracer("test")
    bus = await buses.make(tracer=tracer)
    seen: list[int] = []
    headers_seen: list[dict[str, str]] = []

    async def handler(message: Message) -> None:
        seen.append(trace.get_current_span().get_span_context().trace_id)
        headers_seen.append(message.headers)

    async def job(delivery: JobDelivery) -> None:
        seen.append(trace.get_current_span().get_span_context().trace_id)

    await bus.subscribe("rag.indexed.acme", handler)
    await bus.consume([KIND], job)
    with tracer.start_as_current_span("request") as parent:
        await bus.publish("rag.indexed.acme", b"x", {"X-Tenant-ID": "acme"})
        await bus.submit(KIND, b"job", job_id=uuid.uuid4().hex)
    await eventually(lambda: count_is(seen, 2))
    trace_id = parent.get_span_context().trace_id
    assert seen == [trace_id, trace_id]
    assert headers_seen[0]["traceparent"].split("-")[1] == f"{trace_id:032x}"
    assert headers_seen[0]["X-Tenant-ID"] == "acme"


async def test_metrics_count_published_and_consumed(buses: Buses) -> None:
    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("test")
    bus = await buses.make(meter=meter)
    got, handler = collector()
    await bus.subscribe("cache.set.acme", handler)
    await bus.publish("cache.set.acme", b"1")
    await bus.publish("cache.set.acme", b"2")
    await eventually(lambda: count_is(got, 2))
    await asyncio.sleep(0.05)
    data = reader.get_metrics_data()
    assert data is not None
    totals: dict[str, float] = {}
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                assert isinstance(metric.data, Sum)
                totals[metric.name] = sum(point.value for point in metric.data.data_points)
    assert totals["faas.bus.published"] == 2
    assert totals["faas.bus.consumed"] == 2


# --- jobs ---------------------------------------------------------------------------------


@dataclass
class Run:
    job_id: str
    kind: str
    data: bytes
    attempt: int
    headers: dict[str, str]
    at: float


def recorder() -> tuple[list[Run], Callable[[JobDelivery], Awaitable[None]]]:
    runs: list[Run] = []

    async def handler(delivery: JobDelivery) -> None:
        runs.append(
            Run(
                delivery.job_id,
                delivery.kind,
                delivery.data,
                delivery.attempt,
                delivery.headers,
                time.monotonic(),
            )
        )

    return runs, handler


async def test_job_runs_once_and_is_acked(buses: Buses) -> None:
    bus = await buses.make()
    runs, handler = recorder()
    await bus.consume([KIND], handler)
    await bus.submit(KIND, b"payload", job_id="job-1", headers={"X-Tenant-ID": "acme"})
    await eventually(lambda: count_is(runs, 1))

    async def drained() -> bool:
        return await bus.queue_depth(KIND) == 0

    await eventually(drained)
    await asyncio.sleep(0.3)
    assert [(r.job_id, r.kind, r.data, r.attempt) for r in runs] == [("job-1", KIND, b"payload", 1)]
    assert runs[0].headers["X-Tenant-ID"] == "acme"
    assert runs[0].headers["Nats-Msg-Id"] == "job-1"


async def test_duplicate_job_id_runs_once(buses: Buses) -> None:
    bus = await buses.make()
    await bus.submit(KIND, b"first", job_id="same")
    await bus.submit(KIND, b"second", job_id="same")
    assert await bus.queue_depth(KIND) == 1
    runs, handler = recorder()
    await bus.consume([KIND], handler)
    await eventually(lambda: count_is(runs, 1))
    await asyncio.sleep(0.3)
    assert [r.data for r in runs] == [b"first"]


async def test_a_raising_handler_is_retried_with_the_next_attempt(buses: Buses) -> None:
    bus = await buses.make()
    attempts: list[int] = []

    async def flaky(delivery: JobDelivery) -> None:
        attempts.append(delivery.attempt)
        if delivery.attempt == 1:
            raise RuntimeError("transient")

    await bus.consume([KIND], flaky)
    await bus.submit(KIND, b"x", job_id="retry-me")
    await eventually(lambda: count_is(attempts, 2))

    async def drained() -> bool:
        return await bus.queue_depth() == 0

    await eventually(drained)
    await asyncio.sleep(0.2)
    assert attempts == [1, 2]


async def test_always_failing_job_is_dead_lettered(buses: Buses) -> None:
    bus = await buses.make()
    dead, dead_handler = collector()
    await bus.subscribe(f"dlq.{KIND}", dead_handler)
    attempts: list[tuple[int, int]] = []

    async def broken(delivery: JobDelivery) -> None:
        attempts.append((delivery.attempt, delivery.max_attempts))
        raise ValueError("cannot parse file")

    await bus.consume([KIND], broken)
    await bus.submit(KIND, b"bad file", job_id="doomed", headers={"X-Tenant-ID": "acme"})
    await eventually(lambda: count_is(dead, 1))
    assert attempts == [(1, 3), (2, 3), (3, 3)]
    letter = dead[0]
    assert letter.subject == f"dlq.{KIND}"
    assert letter.data == b"bad file"
    assert "cannot parse file" in letter.headers["X-Failure-Reason"]
    assert letter.headers["X-Tenant-ID"] == "acme"
    assert letter.headers["Nats-Msg-Id"] == "doomed"

    async def drained() -> bool:
        return await bus.queue_depth(KIND) == 0

    await eventually(drained)
    await asyncio.sleep(0.2)
    assert len(attempts) == 3


async def test_fail_dead_letters_at_once_with_the_reason(buses: Buses) -> None:
    bus = await buses.make()
    dead, dead_handler = collector()
    await bus.subscribe("dlq.>", dead_handler)
    runs: list[int] = []

    async def reject(delivery: JobDelivery) -> None:
        runs.append(delivery.attempt)
        await delivery.fail("unsupported\nfile type")

    await bus.consume([KIND], reject)
    await bus.submit(KIND, b"x", job_id="rejected")
    await eventually(lambda: count_is(dead, 1))
    await asyncio.sleep(0.2)
    assert runs == [1]
    assert dead[0].headers["X-Failure-Reason"] == "unsupported file type"


async def test_retry_later_delays_the_next_attempt(buses: Buses) -> None:
    bus = await buses.make()
    runs: list[Run] = []

    async def later(delivery: JobDelivery) -> None:
        runs.append(Run(delivery.job_id, "", b"", delivery.attempt, {}, time.monotonic()))
        if delivery.attempt == 1:
            await delivery.retry_later(0.6)

    await bus.consume([KIND], later)
    await bus.submit(KIND, b"x", job_id="later")
    await eventually(lambda: count_is(runs, 2))
    assert [r.attempt for r in runs] == [1, 2]
    assert runs[1].at - runs[0].at >= 0.5


async def test_retry_later_on_the_last_attempt_dead_letters(buses: Buses) -> None:
    bus = await buses.make(max_attempts=2)
    dead, dead_handler = collector()
    await bus.subscribe(f"dlq.{KIND}", dead_handler)
    runs: list[int] = []

    async def again(delivery: JobDelivery) -> None:
        runs.append(delivery.attempt)
        await delivery.retry_later(0.01)

    await bus.consume([KIND], again)
    await bus.submit(KIND, b"x", job_id="again")
    await eventually(lambda: count_is(dead, 1))
    assert runs == [1, 2]
    assert dead[0].headers["X-Failure-Reason"]


async def test_two_buses_share_a_kind(buses: Buses) -> None:
    first = await buses.make()
    second = await buses.make()
    done: list[tuple[str, str]] = []

    def worker(name: str) -> Callable[[JobDelivery], Awaitable[None]]:
        async def handle(delivery: JobDelivery) -> None:
            await asyncio.sleep(0.05)
            done.append((name, delivery.job_id))

        return handle

    await first.consume([KIND], worker("first"), concurrency=1)
    await second.consume([KIND], worker("second"), concurrency=1)
    ids = [f"job-{i}" for i in range(10)]
    for job_id in ids:
        await first.submit(KIND, b"x", job_id=job_id)
    await eventually(lambda: count_is(done, 10))
    await asyncio.sleep(0.3)
    assert sorted(job_id for _, job_id in done) == sorted(ids)
    assert {name for name, _ in done} == {"first", "second"}


async def test_one_consume_call_serves_several_kinds(buses: Buses) -> None:
    bus = await buses.make()
    runs, handler = recorder()
    await bus.consume(["ml.train", "ml.predict_batch"], handler)
    await bus.submit("ml.train", b"t", job_id="t1")
    await bus.submit("ml.predict_batch", b"p", job_id="p1")
    await eventually(lambda: count_is(runs, 2))
    assert sorted((r.kind, r.job_id) for r in runs) == [
        ("ml.predict_batch", "p1"),
        ("ml.train", "t1"),
    ]


async def test_queue_depth_counts_pending_jobs(buses: Buses) -> None:
    bus = await buses.make()
    assert await bus.queue_depth() == 0
    for i in range(3):
        await bus.submit("rag.reindex", b"x", job_id=f"a{i}")
    for i in range(2):
        await bus.submit("agent.run", b"x", job_id=f"b{i}")
    assert await bus.queue_depth("rag.reindex") == 3
    assert await bus.queue_depth("agent.run") == 2
    assert await bus.queue_depth() == 5
    runs, handler = recorder()
    await bus.consume(["rag.reindex"], handler)
    await eventually(lambda: count_is(runs, 3))

    async def reindexed() -> bool:
        return await bus.queue_depth("rag.reindex") == 0

    await eventually(reindexed)
    assert await bus.queue_depth() == 2


async def test_connected_and_ping(buses: Buses) -> None:
    bus = await buses.make()
    assert bus.connected
    assert await bus.ping()
    assert bus.dropped == 0
    assert bus.backend in ("nats", "inprocess")


# --- durable streams ------------------------------------------------------------------------


class BatchCollector:
    """A `BatchHandler` recording every batch; it raises while `failing` is set."""

    def __init__(self) -> None:
        self.batches: list[list[Message]] = []
        self.failing = 0  # raise this many more times
        self.calls = 0

    async def __call__(self, messages: Any) -> None:
        self.calls += 1
        if self.failing:
            self.failing -= 1
            raise RuntimeError("database down")
        self.batches.append(list(messages))

    @property
    def ids(self) -> list[str]:
        return [m.headers["Nats-Msg-Id"] for batch in self.batches for m in batch]


async def publish_usage(bus: MessageBus, ids: range | list[int], tenant: str = "acme") -> None:
    for i in ids:
        await bus.publish(f"usage.made.{tenant}", f"event {i}".encode(), {"Nats-Msg-Id": f"e{i}"})


async def test_stream_delivers_batches_in_order_and_keeps_subjects(buses: Buses) -> None:
    bus = await buses.make()
    got = BatchCollector()
    await bus.consume_stream("usage", ["usage.made.*"], "llmops", got, batch=50)
    await publish_usage(bus, range(120))
    await bus.publish("usage.other.acme", b"not for the stream", {"Nats-Msg-Id": "x"})
    await eventually(lambda: _true(len(got.ids) >= 120))
    await asyncio.sleep(0.2)
    assert got.ids == [f"e{i}" for i in range(120)]
    assert max(len(b) for b in got.batches) <= 50
    first = got.batches[0][0]
    assert first.subject == "usage.made.acme" and first.data == b"event 0"


async def test_stream_drops_duplicate_message_ids(buses: Buses) -> None:
    bus = await buses.make()
    got = BatchCollector()
    await bus.consume_stream("usage", ["usage.made.*"], "llmops", got)
    await publish_usage(bus, [1, 2, 1, 3, 2])
    await eventually(lambda: _true(len(got.ids) >= 3))
    await asyncio.sleep(0.3)
    assert got.ids == ["e1", "e2", "e3"]


async def test_a_failed_batch_is_redelivered_until_handled(buses: Buses) -> None:
    bus = await buses.make()
    got = BatchCollector()
    got.failing = 2
    await bus.consume_stream("usage", ["usage.made.*"], "llmops", got)
    await publish_usage(bus, range(5))
    await eventually(lambda: _true(len(got.ids) >= 5))
    assert got.calls >= 3
    assert sorted(got.ids) == [f"e{i}" for i in range(5)]


async def test_events_published_while_the_consumer_is_away_wait_for_it(buses: Buses) -> None:
    bus = await buses.make()
    first = BatchCollector()
    sub = await bus.consume_stream("usage", ["usage.made.*"], "llmops", first)
    await publish_usage(bus, range(3))
    await eventually(lambda: _true(len(first.ids) >= 3))
    await sub.unsubscribe()
    await publish_usage(bus, range(3, 8))  # nobody consuming: the stream keeps them
    await asyncio.sleep(0.2)
    second = BatchCollector()
    await bus.consume_stream("usage", ["usage.made.*"], "llmops", second)
    await eventually(lambda: _true(len(second.ids) >= 5))
    await asyncio.sleep(0.2)
    assert first.ids == ["e0", "e1", "e2"]
    assert second.ids == [f"e{i}" for i in range(3, 8)]


async def test_consumers_of_one_durable_share_the_stream(buses: Buses) -> None:
    one, two = await buses.make(), await buses.make()
    a, b = BatchCollector(), BatchCollector()
    await one.consume_stream("usage", ["usage.made.*"], "llmops", a, batch=5)
    await two.consume_stream("usage", ["usage.made.*"], "llmops", b, batch=5)
    await publish_usage(one, range(200))
    await eventually(lambda: _true(len(a.ids) + len(b.ids) >= 200))
    await asyncio.sleep(0.3)
    assert sorted(a.ids + b.ids) == sorted(f"e{i}" for i in range(200))


async def _true(value: bool) -> bool:
    return value
