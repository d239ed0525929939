"""Server-side set-up on NATS: making sure the server has read what a client sent, and creating
the JetStream streams the bus keeps its jobs, dead letters and events in."""

from __future__ import annotations

import logging
from typing import Final

from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError

from faas.integrations.bus.base import DEDUP_WINDOW_S

log = logging.getLogger("faas.bus")

CONFIRM_TIMEOUT_S: Final = 5  # nats-py's flush() takes whole seconds
DLQ_MAX_AGE_S: Final = 7 * 24 * 3600.0
_STREAM_CONFIG_CHANGED: Final = 10058  # JetStream: name in use with a different configuration


async def server_barrier(client: Client, timeout_s: int = CONFIRM_TIMEOUT_S) -> None:
    """Return once the server has processed every command this client sent before the call
    (a SUB, say, so that messages anyone publishes afterwards reach it).

    One `flush()` is not enough: nats-py writes its PING straight to the socket, ahead of the
    commands still queued for its flusher task, so the PONG can come back before the server
    has read a SUB sent just before. The first round trip lets the flusher hand the queue to
    the socket; the second PING goes out behind it, and the server answers in order.
    """
    await client.flush(timeout=timeout_s)
    await client.flush(timeout=timeout_s)


async def add_stream(js: JetStreamContext, config: StreamConfig) -> None:
    """Create the stream, or bring an existing one to `config` where JetStream allows it."""
    try:
        await js.add_stream(config)
    except BadRequestError as exc:
        if exc.err_code != _STREAM_CONFIG_CHANGED:
            raise
        try:
            await js.update_stream(config)
        except BadRequestError as update_exc:
            # e.g. a retention change, which JetStream refuses: keep the existing stream.
            log.warning("stream %s kept as it is: %s", config.name, update_exc)


def stream_config(
    name: str,
    wire_subjects: list[str],
    retention: RetentionPolicy,
    max_age_s: float | None = None,
) -> StreamConfig:
    """A file-backed stream with the bus's duplicate window.

    The bus keeps three kinds: the jobs work queue (a message leaves once acked or termed),
    the dead letters (kept `DLQ_MAX_AGE_S` for inspection and replay) and event streams (kept
    until every durable consumer acknowledged them, or they age out).
    """
    return StreamConfig(
        name=name,
        subjects=wire_subjects,
        retention=retention,
        storage=StorageType.FILE,
        max_age=max_age_s,
        duplicate_window=DEDUP_WINDOW_S,
    )
