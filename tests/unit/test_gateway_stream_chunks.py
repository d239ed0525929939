"""What a streamed call keeps of its chunks, and a gateway start that fails half way."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from faas.integrations.otel import setup_telemetry
from faas.runtime import Runtime
from faas.services.gateway_service.accounting import CallRecord, stream_text
from faas.services.gateway_service.providers.base import StreamEvent, Usage
from faas.services.gateway_service.service import GatewayService
from faas.services.gateway_service.streaming import StreamRun
from faas.shared.config import Settings


def chunk(text: str, usage: Usage | None) -> StreamEvent:
    delta = {"choices": [{"index": 0, "delta": {"content": text}}]}
    return StreamEvent(data=orjson.dumps(delta), has_content=True, usage=usage)


def test_chunks_after_the_first_usage_report_are_kept_for_the_span() -> None:
    """An upstream that repeats usage on every chunk: the call's span still gets the whole
    completion (it used to keep chunks only until usage was known: none here)."""
    call = CallRecord(operation="chat", model="m")
    unused: Any = None  # sending frames needs only the call record
    run = StreamRun(unused, unused, {"messages": []}, call, unused, unused, include_usage=True)
    for i, text in enumerate(["Refunds ", "take ", "14 days."]):
        frame = run._frame(chunk(text, Usage(prompt_tokens=5, completion_tokens=i + 1)))
        assert frame is not None and frame.startswith(b"data: {")
    assert stream_text(run.seen) == "Refunds take 14 days."
    assert call.usage is not None and call.usage.completion_tokens == 3


async def test_a_failed_start_leaves_no_task_running(
    tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    routing = tmp_path / "models.yaml"
    routing.write_text(
        "models:\n  - name: embed-default\n    kind: embedding\n"
        "    deployments:\n      - provider: hash\n"
    )
    settings = make_settings(gateway_models=routing)
    runtime = Runtime.build(settings, telemetry=setup_telemetry("faas-test", set_global=False))
    service = GatewayService(
        settings, kv=runtime.kv, db=runtime.db, events=runtime.events, meter=runtime.telemetry.meter
    )

    async def refuse() -> None:
        raise ConnectionError("the bus refused the subscription")

    service.provider_keys.start = refuse  # type: ignore[method-assign]
    try:
        with pytest.raises(ConnectionError):
            await service.start()
        names = {task.get_name() for task in asyncio.all_tasks()}
        assert not names & {"gateway-routing-reload", "gateway-alerts"}, names
    finally:
        await service.stop()
        await runtime.db.close()
