"""What LLM tracing costs the gateway: chat completions through the whole app (middlewares,
auth, limits, usage event) in one process, side by side in one run, rounds interleaved (order
rotated), each measurement in a fresh process.

    .venv/bin/python bench/gateway_tracing.py [--requests 2000] [--rounds 4] [--no-save]

Configurations (the `mock` provider answers in-process, so the gateway's own work dominates):
  off        no exporter: the no-op tracer (the default; the GenAI hook is not even installed)
  spans      an exporter, the GenAI hook removed: SERVER spans only (tracing before Step 13)
  genai      an exporter and the gateway's `chat <model>` span per call
  content    the same with FAAS_TRACE_CONTENT=true (redacted prompt and completion events)

The exporter drops what it gets (SimpleSpanProcessor, synchronous): the cost measured is
building and ending spans in the request's path, not OTLP encoding (a batch processor does that
on its own thread in production). CPU time is the process's (client included), per request.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from _common import append_results, environment_lines, md_table, median, today
from faas.app import create_service_app
from faas.integrations.otel import setup_telemetry
from faas.runtime import Runtime
from faas.services import BUILDERS
from faas.shared.auth import mint_token
from faas.shared.config import Settings

SECRET = "bench-secret-" + "x" * 40
CONFIGS = ("off", "spans", "genai", "content")
WARMUP = 200
BODY = {
    "model": "chat-default",
    "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Write to ada@example.com about the refund policy, please."},
    ],
    "temperature": 0.7,
    "max_tokens": 64,
}


class DroppingExporter(SpanExporter):
    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += len(spans)
        return SpanExportResult.SUCCESS


async def measure(config: str, data: Path, requests: int) -> tuple[float, float, int]:
    routing = data / "models.yaml"
    routing.write_text(
        "models:\n  - name: chat-default\n    deployments:\n      - provider: mock\n"
    )
    settings = Settings(
        data_dir=data,
        jwt_secret=SECRET,
        log_requests=False,
        gateway_models=routing,
        gateway_default_rpm=10**8,
        gateway_default_tpm=10**9,
        trace_content=config == "content",
    )
    exporter = DroppingExporter()
    telemetry = setup_telemetry(
        "bench", span_exporter=None if config == "off" else exporter, set_global=False, env={}
    )
    runtime = Runtime.build(settings, telemetry=telemetry)
    gateway = BUILDERS["gateway"](runtime)
    if config == "spans":
        gateway.pipeline.dispatch.recorder.on_settled = None  # type: ignore[attr-defined]
    app = create_service_app([gateway], runtime)
    token = mint_token(SECRET, tenant_id="bench", user_id="u")
    headers = {"Authorization": f"Bearer {token}"}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            for _ in range(WARMUP):
                await client.post("/v1/chat/completions", json=BODY, headers=headers)
            gc.collect()
            cpu, wall = time.process_time(), time.perf_counter()
            for _ in range(requests):
                response = await client.post("/v1/chat/completions", json=BODY, headers=headers)
                assert response.status_code == 200, response.text
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    telemetry.shutdown()
    return cpu / requests * 1e6, requests / wall, exporter.spans


def one(config: str, requests: int) -> tuple[float, float, int]:
    """One measurement in a fresh process: no runtime of an earlier one left to collect."""
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            [sys.executable, __file__, "--one", config, "--requests", str(requests), "--data", tmp],
            capture_output=True,
            text=True,
            check=True,
            env=os.environ | {"LITELLM_LOCAL_MODEL_COST_MAP": "True"},
        ).stdout
    cpu_us, rps, exported = json.loads(out.strip().splitlines()[-1])
    return float(cpu_us), float(rps), int(exported)


async def main(requests: int, rounds: int, save: bool) -> None:
    results: dict[str, list[tuple[float, float]]] = {c: [] for c in CONFIGS}
    spans: dict[str, int] = {}
    load_before = os.getloadavg()[0]
    for round_ in range(rounds):
        shift = round_ % len(CONFIGS)  # each configuration in every position once
        for config in CONFIGS[shift:] + CONFIGS[:shift]:
            cpu_us, rps, exported = one(config, requests)
            results[config].append((cpu_us, rps))
            spans[config] = exported
            print(f"round {round_} {config:8s} {cpu_us:8.1f} CPU-us/req {rps:8.0f} req/s")
    load_after = os.getloadavg()[0]
    base = median([c for c, _ in results["off"]])
    rows = []
    for config in CONFIGS:
        cpu = median([c for c, _ in results[config]])
        rps = median([r for _, r in results[config]])
        rows.append(
            [
                config,
                f"{cpu:.0f}",
                f"{cpu - base:+.0f}",
                f"{cpu / base:.3f}",
                f"{rps:.0f}",
                f"{spans[config] / (requests + WARMUP):.1f}",
            ]
        )
    table = md_table(["config", "CPU-us/req", "vs off", "ratio", "req/s", "spans/req"], rows)
    print(table)
    section = "\n".join(
        [
            f"## {today()} — LLM tracing overhead (bench/gateway_tracing.py)",
            "",
            f"{requests} sequential chat completions per configuration and round, {rounds} rounds "
            "interleaved (order rotated), each in a fresh process (client included), `mock` "
            "provider; medians. "
            f"Load average {load_before:.2f} before, {load_after:.2f} after.",
            "",
            table,
            "",
            *environment_lines(),
            "",
        ]
    )
    if save:
        append_results(section)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--no-save", action="store_true")
    parser.add_argument("--one", choices=CONFIGS, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(asyncio.run(measure(args.one, args.data, args.requests))))
    else:
        asyncio.run(main(args.requests, args.rounds, not args.no_save))
