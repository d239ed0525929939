"""Each API surface of the gateway against its OpenAI chat route: the latency a surface adds on
top of chat (goal: within 10 %) and the gateway's CPU time per request, in one run.

    .venv/bin/python bench/surfaces.py [--requests N] [--no-save]

`faas serve gateway` (JWT auth, limits and usage events on, as deployed) in front of the mock
upstream (tests/support/mock_upstream.py, 0 ms latency), each its own process. One sequential
client (concurrency 1) sends N requests per surface, in rounds that rotate the surfaces' order
so that drift on a noisy machine lands on all of them alike; `direct` is the mock upstream
called without the gateway, the floor. Added latency = surface p50 - direct p50; the ratio
compares it with the chat route's. CPU ms/request is the gateway process's user+system time
over the surface's requests.

A surface is one row of SURFACES: name, path, body and headers (`{token}` in a header value is
replaced by the bearer token; without headers, `Authorization: Bearer {token}` is sent).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from _common import (
    PYTHON,
    append_results,
    clean_env,
    environment_lines,
    free_port,
    md_table,
    mint_token,
    server,
    today,
)

TENANT = "bench-surfaces"
UPSTREAM_KEY = "sk-bench"
HIGH_RPM = HIGH_TPM = 1_000_000_000  # tenant limits switched on, never reached (MAX_RATE)
ASK = [{"role": "user", "content": "Say hello in five words."}]
# temperature 0.7: never answered from the response cache.
CHAT_BODY = {"model": "chat-default", "messages": ASK, "max_tokens": 16, "temperature": 0.7}
RESPONSES_BODY = {
    "model": "chat-default",
    "input": ASK[0]["content"],
    "max_output_tokens": 16,
    "temperature": 0.7,
}


@dataclass(frozen=True)
class Surface:
    name: str
    path: str
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    direct: bool = False  # sent to the mock upstream, not to faas


SURFACES: list[Surface] = [
    Surface("direct (mock upstream)", "/v1/chat/completions", CHAT_BODY, direct=True),
    Surface("OpenAI chat", "/v1/chat/completions", CHAT_BODY),
    Surface(
        "OpenAI completions",
        "/v1/completions",
        {
            "model": "chat-default",
            "prompt": "Say hello in five words.",
            "max_tokens": 16,
            "temperature": 0.7,
        },
    ),
    Surface(
        "Anthropic messages",
        "/v1/messages",
        {"model": "chat-default", "messages": ASK, "max_tokens": 16, "temperature": 0.7},
        headers={"x-api-key": "{token}", "anthropic-version": "2023-06-01"},
    ),
    # Stored (the default: one key/value write per call) and not.
    Surface("OpenAI responses", "/v1/responses", RESPONSES_BODY),
    Surface("OpenAI responses, store: false", "/v1/responses", RESPONSES_BODY | {"store": False}),
]
BASELINE = "OpenAI chat"


def models_yaml(upstream: str) -> str:
    return (
        "models:\n  - name: chat-default\n    deployments:\n      - provider: openai\n"
        f"        model: mock-model\n        api_base: {upstream}/v1\n"
        f"        api_key: {UPSTREAM_KEY}\n"
    )


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    cpu_s: float = 0.0


def run(surfaces: list[Surface], requests: int, rounds: int, work: Path) -> dict[str, Tally]:
    up_port, faas_port = free_port(), free_port()
    upstream = f"http://127.0.0.1:{up_port}"
    faas_url = f"http://127.0.0.1:{faas_port}"
    models = work / "models.yaml"
    models.write_text(models_yaml(upstream))
    faas_env = {
        "FAAS_JWT_SECRET": "bench-surfaces-" + "s" * 40,
        "FAAS_GATEWAY_MODELS": str(models),
        "FAAS_GATEWAY_DEFAULT_RPM": str(HIGH_RPM),
        "FAAS_GATEWAY_DEFAULT_TPM": str(HIGH_TPM),
    }
    env = clean_env(FAAS_DATA_DIR=str(work / "data"), **faas_env)
    token = mint_token(env, TENANT)
    mock = [PYTHON, "-m", "tests.support.mock_upstream", "--port", str(up_port)]
    faas = [PYTHON, "-m", "faas", "serve", "gateway", "--host", "127.0.0.1"]
    faas += ["--port", str(faas_port)]
    root = Path(__file__).resolve().parent.parent
    tallies = {s.name: Tally() for s in surfaces}
    with (
        server(mock, clean_env(), f"{upstream}/_stats", work / "mock.log", cwd=root),
        server(faas, env, f"{faas_url}/readyz", work / "faas.log", ready_timeout_s=90) as proc,
        httpx.Client(timeout=30) as http,
    ):
        for surface in surfaces:  # warm up every path once and check it answers
            response = send(http, surface, upstream if surface.direct else faas_url, token)
            if response.status_code != 200:
                raise RuntimeError(f"{surface.name}: {response.status_code} {response.text}")
        per_round = max(1, requests // rounds)
        for index in range(rounds):
            shift = index % len(surfaces)
            for surface in surfaces[shift:] + surfaces[:shift]:
                base = upstream if surface.direct else faas_url
                tally = tallies[surface.name]
                cpu_before = cpu_seconds(proc.pid)
                for _ in range(per_round):
                    started = time.perf_counter()
                    response = send(http, surface, base, token)
                    tally.latencies.append(time.perf_counter() - started)
                    if response.status_code != 200:
                        raise RuntimeError(f"{surface.name}: {response.status_code}")
                tally.cpu_s += cpu_seconds(proc.pid) - cpu_before
    return tallies


def send(http: httpx.Client, surface: Surface, base: str, token: str) -> httpx.Response:
    headers = surface.headers or {"Authorization": "Bearer {token}"}
    filled = {name: value.replace("{token}", token) for name, value in headers.items()}
    return http.post(base + surface.path, json=surface.body, headers=filled)


def report(surfaces: list[Surface], tallies: dict[str, Tally]) -> str:
    p50 = {name: statistics.median(t.latencies) * 1000 for name, t in tallies.items()}
    floor = p50[surfaces[0].name] if surfaces[0].direct else 0.0
    base_added = p50[BASELINE] - floor
    rows = []
    for surface in surfaces:
        tally = tallies[surface.name]
        n = len(tally.latencies)
        added = p50[surface.name] - floor
        ms = sorted(x * 1000 for x in tally.latencies)
        rows.append(
            [
                surface.name,
                surface.path,
                str(n),
                f"{p50[surface.name]:.2f}",
                f"{ms[int(0.99 * (n - 1))]:.2f}",
                "—" if surface.direct else f"{added:.2f}",
                "—" if surface.direct else f"{added / base_added:.2f}x",
                "—" if surface.direct else f"{1000 * tally.cpu_s / n:.2f}",
            ]
        )
    header = [
        "surface",
        "path",
        "requests",
        "p50 ms",
        "p99 ms",
        "added p50 ms",
        "added vs chat",
        "gateway CPU ms/req",
    ]
    return md_table(header, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="per surface")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="faas-surfaces-") as tmp:
        tallies = run(SURFACES, args.requests, args.rounds, Path(tmp))
    extra = {
        "Load average (1 min) before/after": f"{load_before:.2f} / {os.getloadavg()[0]:.2f}",
        "Setup": "faas serve gateway + mock upstream (0 ms), each one process, "
        "one sequential httpx client",
    }
    section = (
        f"## {today()} — API surfaces vs the OpenAI chat route (bench/surfaces.py)\n\n"
        + "\n".join(environment_lines(extra))
        + "\n\n"
        + report(SURFACES, tallies)
        + "\n\nGoal (issue 16): each surface's added latency within 10 % of the chat "
        "route's (`added vs chat` <= 1.10x)."
    )
    sys.stdout.write(section + "\n")
    if not args.no_save:
        append_results(section)


if __name__ == "__main__":
    main()
