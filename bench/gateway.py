"""Gateway benchmark: the faas gateway against a LiteLLM proxy and against calling the upstream
directly, side by side in one run, in front of the same OpenAI-compatible mock upstream.

    .venv/bin/python bench/gateway.py [--quick] [--no-save] [--profile SECONDS]

Configurations (each server pinned to core 0; wrk, the mock upstreams and this script share
core 1):
  direct     wrk → mock upstream
  faas       wrk → `faas serve gateway` (JWT auth, tenant rate limits on, usage events on the
             in-process bus, request log lines on) → mock
  faas+NATS  the same with FAAS_NATS_URL: usage events go out to NATS
  bare       wrk → bench/bare_proxy.py (uvicorn + aiohttp pass-through: no auth, limits or
             usage; the floor for a Python proxy on this stack) → mock
  LiteLLM    wrk → `litellm` proxy (litellm[proxy]==1.80.11 in its own venv, no database,
             master key auth) → mock

Measured with a wrk Lua POST script, non-deterministic requests (temperature 0.7: no response
cache), mock upstream latency 0 ms and 20 ms: added latency (gateway - direct) p50/p99 at
concurrency 1 and 32, requests/s of the one server core, the best requests/s whose p99 stays
<= 50 ms (concurrency 1..64), added time to first token of streams (sequential httpx client),
and RSS after 20k and after 100k requests (or as many as fit in the time cap).

Targets: added p50 <= 0.5 ms at concurrency 1; >= 15x LiteLLM's requests/s per core and server
CPU time per request <= 1/15 of LiteLLM's and <= 2x the bare proxy's; added p99 at
concurrency 32 <= 1/10 of LiteLLM's; RSS growth from 20k to 100k requests < 10 % and RSS below
LiteLLM's.

LiteLLM is installed on first use into bench/.venv-litellm (its own virtualenv, git-ignored).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

from _common import (
    BENCH_DIR,
    LOAD_CPU,
    PYTHON,
    ROOT,
    SERVER_CPU,
    LoadResult,
    clean_env,
    combine,
    environment_lines,
    free_port,
    have_taskset,
    load_tool,
    md_table,
    mint_token,
    percentile,
    pinned,
    publish,
    rss_mb,
    run_load,
    server,
    today,
    tool_version,
    wait_for_quiet,
)
from _gateway_floor import CpuTally, bare_command, floor_table

TENANT = "bench"
REPLY = "Hello from the mock upstream."
LITELLM_VERSION = "1.80.11"  # exact pin: 1.82.7, 1.82.8 and 1.107.0 were compromised upstream
LITELLM_VENV = BENCH_DIR / ".venv-litellm"
MASTER_KEY = "sk-bench-" + secrets.token_hex(12)
UPSTREAM_KEY = "sk-mock-upstream"
NATS_URL = "nats://127.0.0.1:4222"
LATENCIES_MS = (0, 20)
STREAM_DELAY_MS = 10
LEVELS = (1, 2, 4, 8, 16, 32, 64)
P99_BUDGET_MS = 50.0
HIGH_RPM = 1_000_000_000  # tenant limits switched on, never reached
HIGH_TPM = 1_000_000_000  # the most a tenant limit accepts (MAX_RATE)
PROMPT = [{"role": "user", "content": "Say hello in five words."}]

TARGET_ADDED_P50_MS = 0.5
TARGET_RPS_RATIO = 15.0
TARGET_P99_RATIO = 0.1
TARGET_RSS_GROWTH = 0.10


@dataclass(frozen=True, slots=True)
class Mode:
    quick: bool
    warmup_s: float
    rounds: int
    round_s: float
    levels: tuple[int, ...]
    sweep_s: float
    ttft_n: int
    rss_checkpoint: int
    rss_final: int
    rss_cap_s: float  # per faas server
    rss_cap_litellm_s: float  # LiteLLM cannot reach 20k requests in minutes anyway

    @staticmethod
    def of(quick: bool) -> Mode:
        if quick:
            return Mode(True, 1.0, 1, 1.0, (1, 8, 32), 1.0, 20, 2_000, 10_000, 8.0, 8.0)
        return Mode(False, 2.0, 3, 3.0, LEVELS, 3.0, 200, 20_000, 100_000, 180.0, 120.0)


@dataclass
class Target:
    key: str  # "direct" | "faas" | "faas-nats" | "bare" | "litellm"
    label: str
    urls: dict[str, str]  # "0" / "20" / "stream" -> chat completions URL
    headers: dict[str, str]
    pid: int | None = None  # the server process (None for direct)
    served: int = 0  # requests answered so far (for the RSS checkpoints)

    @property
    def is_gateway(self) -> bool:
        return self.key != "direct"

    @property
    def is_faas(self) -> bool:
        return self.key.startswith("faas")


def body_for(setting: str, *, stream: bool = False) -> bytes:
    body: dict[str, Any] = {"model": f"mock-{setting}", "messages": PROMPT, "temperature": 0.7}
    if stream:
        body["stream"] = True
    return orjson.dumps(body)


# -- processes ---------------------------------------------------------------------------------


def ensure_litellm(venv: Path, log: Path) -> Path:
    """bench/.venv-litellm with litellm[proxy]==LITELLM_VERSION; returns its `litellm` script."""
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"creating {venv.relative_to(ROOT)} (litellm[proxy]=={LITELLM_VERSION})")
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", str(venv)], check=True)
        (venv / ".gitignore").write_text("*\n")  # keeps git and ruff out of it
    if installed_litellm(python) != LITELLM_VERSION:
        with log.open("wb") as out:
            done = subprocess.run(
                [str(python), "-m", "pip", "install", f"litellm[proxy]=={LITELLM_VERSION}"],
                stdout=out,
                stderr=subprocess.STDOUT,
                check=False,
            )
        if done.returncode != 0:
            tail = log.read_bytes()[-2000:].decode(errors="replace")
            raise RuntimeError(f"installing litellm[proxy] failed:\n{tail}")
    version = installed_litellm(python)
    if version != LITELLM_VERSION:
        raise RuntimeError(f"{venv} holds litellm {version}, expected {LITELLM_VERSION}")
    return venv / "bin" / "litellm"


def installed_litellm(python: Path) -> str | None:
    if not python.exists():
        return None
    code = "import importlib.metadata as m; print(m.version('litellm'))"
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=False)
    return out.stdout.strip() or None


def mock_command(port: int, latency_ms: float, stream_delay_ms: float) -> list[str]:
    cmd = [PYTHON, "-m", "tests.support.mock_upstream", "--port", str(port)]
    cmd += ["--latency-ms", str(latency_ms), "--stream-delay-ms", str(stream_delay_ms)]
    return pinned(cmd, LOAD_CPU)  # the mock shares the load core with wrk


def faas_command(port: int) -> list[str]:
    script = Path(PYTHON).parent / "faas"
    base = [str(script)] if script.exists() else [PYTHON, "-m", "faas"]
    return pinned(
        [*base, "serve", "gateway", "--host", "127.0.0.1", "--port", str(port)], SERVER_CPU
    )


def faas_models_yaml(mocks: dict[str, str]) -> str:
    lines = ["models:"]
    for setting, base in mocks.items():
        lines += [
            f"  - name: mock-{setting}",
            "    kind: chat",
            "    deployments:",
            "      - provider: openai",
            "        model: mock-model",
            f"        api_base: {base}/v1",
            f"        api_key: {UPSTREAM_KEY}",
        ]
    return "\n".join(lines) + "\n"


def litellm_yaml(mocks: dict[str, str]) -> str:
    lines = ["model_list:"]
    for setting, base in mocks.items():
        lines += [
            f"  - model_name: mock-{setting}",
            "    litellm_params:",
            "      model: openai/mock-model",
            f"      api_base: {base}/v1",
            f"      api_key: {UPSTREAM_KEY}",
            f"      rpm: {HIGH_RPM}",
            f"      tpm: {HIGH_TPM}",
        ]
    lines += [
        "general_settings:",
        f"  master_key: {MASTER_KEY}",
        # LiteLLM's in-memory parallel request limiter counts every request against this.
        "  global_max_parallel_requests: 100000",
    ]
    return "\n".join(lines) + "\n"


def litellm_server(
    stack: ExitStack, litellm: Path, mocks: dict[str, str], work: Path, log: Path
) -> Target:
    """The LiteLLM proxy (one worker, master key, no database) to `mocks`, started in `stack`
    pinned to the server core; its target, with the model of each mock setting."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = work / "litellm.yaml"
    config.write_text(litellm_yaml(mocks))
    cmd = [str(litellm), "--config", str(config), "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--num_workers", "1", "--telemetry", "False"]
    proc = stack.enter_context(
        server(
            pinned(cmd, SERVER_CPU),
            clean_env(LITELLM_LOCAL_MODEL_COST_MAP="True"),
            f"{base}/health/liveliness",
            log,
            cwd=work,
            ready_timeout_s=180,
        )
    )
    urls = {k: f"{base}/v1/chat/completions" for k in mocks}
    return Target("litellm", "LiteLLM", urls, {"Authorization": f"Bearer {MASTER_KEY}"}, proc.pid)


# -- checks ------------------------------------------------------------------------------------


def verify(target: Target) -> None:
    """A request through `target` returns the mock's reply; gateways refuse a missing key."""
    with httpx.Client(timeout=30) as http:
        for setting in (*(str(m) for m in LATENCIES_MS), "stream"):
            got = http.post(
                target.urls[setting],
                content=body_for(setting),
                headers=target.headers | {"content-type": "application/json"},
            )
            target.served += 1
            if got.status_code != 200:
                raise RuntimeError(f"{target.label}: {got.status_code} {got.text[:500]}")
            content = got.json()["choices"][0]["message"]["content"]
            if content != REPLY:
                raise RuntimeError(f"{target.label}: unexpected reply {content!r}")
            if target.is_faas and "x-gateway-overhead-ms" not in got.headers:
                raise RuntimeError(f"{target.label}: no x-gateway-overhead-ms header")
        if target.is_gateway and target.key != "bare":  # the bare proxy checks no key
            anonymous = http.post(
                target.urls["0"],
                content=body_for("0"),
                headers={"content-type": "application/json"},
            )
            if anonymous.status_code not in (401, 403):
                raise RuntimeError(
                    f"{target.label}: a request without a key got {anonymous.status_code}"
                )


async def _count_events(prefix: str, target: Target, n: int) -> int:
    import nats

    client = await nats.connect(NATS_URL)
    seen: list[str] = []

    async def on_message(msg: Any) -> None:
        seen.append(msg.subject)

    await client.subscribe(f"{prefix}.gateway.>", cb=on_message)
    await client.flush()
    async with httpx.AsyncClient(timeout=30) as http:
        for _ in range(n):
            got = await http.post(
                target.urls["0"],
                content=body_for("0"),
                headers=target.headers | {"content-type": "application/json"},
            )
            got.raise_for_status()
            target.served += 1
    deadline = time.monotonic() + 5
    while len(seen) < n and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await client.close()
    return len(seen)


async def _drop_streams(prefix: str) -> None:
    import nats
    from nats.js.errors import NotFoundError

    from faas.integrations.bus.subjects import stream_names

    client = await nats.connect(NATS_URL)
    try:
        js = client.jetstream()
        for name in stream_names(prefix):
            with suppress(NotFoundError):
                await js.delete_stream(name)
    finally:
        await client.close()


def nats_available() -> bool:
    async def ping() -> bool:
        import nats

        try:
            client = await nats.connect(NATS_URL, connect_timeout=2, max_reconnect_attempts=0)
        except Exception:
            return False
        await client.close()
        return True

    return asyncio.run(ping())


# -- measurements ------------------------------------------------------------------------------


Key = tuple[str, int, int]  # target key, upstream latency ms, concurrency


def load(
    target: Target,
    setting: str,
    connections: int,
    duration_s: float,
    *,
    max_requests: int | None = None,
) -> LoadResult:
    result = run_load(
        target.urls[setting],
        connections=connections,
        duration_s=duration_s,
        headers=target.headers,
        body=body_for(setting),
        max_requests=max_requests,
        timeout_s=10,
    )
    target.served += result.requests
    return result


def rotated(targets: Sequence[Target], i: int) -> list[Target]:
    """A different order each round, so drift on a shared machine falls on all alike."""
    k = i % len(targets)
    order = list(targets[k:]) + list(targets[:k])
    return order if i % 2 == 0 else order[::-1]


@dataclass
class Rss:
    idle_mb: float
    checkpoint_requests: int | None = None
    checkpoint_mb: float | None = None
    final_requests: int = 0
    final_mb: float = 0.0
    rps: float = 0.0

    @property
    def growth(self) -> float | None:
        if self.checkpoint_mb is None or self.final_requests <= (self.checkpoint_requests or 0):
            return None
        return self.final_mb / self.checkpoint_mb - 1


def measure_rss(target: Target, mode: Mode) -> Rss:
    """Load at concurrency 32 (0 ms upstream) up to `rss_checkpoint` requests served (or a fifth
    of the time cap, whichever comes first: a slow server still gets a later sample to compare
    with), sample RSS, go on to `rss_final` within the time cap, sample again."""
    assert target.pid is not None
    result = Rss(idle_mb=rss_mb(target.pid))
    cap_s = mode.rss_cap_s if target.is_faas else mode.rss_cap_litellm_s
    started, sent = time.monotonic(), 0
    if target.served < mode.rss_checkpoint:
        goal = mode.rss_checkpoint - target.served
        sent += load(target, "0", 32, cap_s / 5, max_requests=goal).requests
    time.sleep(0.5)
    result.checkpoint_requests = target.served
    result.checkpoint_mb = rss_mb(target.pid)
    left = started + cap_s - time.monotonic()
    if target.served < mode.rss_final and left >= 1:
        goal = mode.rss_final - target.served
        sent += load(target, "0", 32, left, max_requests=goal).requests
    time.sleep(0.5)
    result.final_requests = target.served
    result.final_mb = rss_mb(target.pid)
    result.rps = sent / max(1e-9, time.monotonic() - started - 1.0)
    print(
        f"  {target.label:<10} RSS idle {result.idle_mb:.0f} MB, "
        f"{result.checkpoint_mb:.0f} MB at {result.checkpoint_requests:,} requests, "
        f"{result.final_mb:.0f} MB at {result.final_requests:,} ({result.rps:,.0f} req/s)"
    )
    return result


def measure_latency(targets: Sequence[Target], mode: Mode, cpu: CpuTally) -> dict[Key, LoadResult]:
    samples: dict[Key, list[LoadResult]] = defaultdict(list)
    for latency in LATENCIES_MS:
        setting = str(latency)
        for target in targets:
            load(target, setting, 32, mode.warmup_s)
        for i in range(mode.rounds):
            for target in rotated(targets, i):
                for connections in (1, 32):
                    key = (target.key, latency, connections)

                    def run(
                        t: Target = target, c: int = connections, k: Key = key, s: str = setting
                    ) -> int:
                        samples[k].append(load(t, s, c, mode.round_s))
                        return samples[k][-1].requests

                    cpu.measure(key, target.pid, run)
    results = {key: combine(rounds) for key, rounds in samples.items()}
    for (key, latency, connections), r in results.items():
        rounds = cpu.samples.get((key, latency, connections), [])
        print(
            f"  {key:<10} {latency:>2} ms c={connections:<2} {r.rps:>8,.0f} req/s  "
            f"p50 {r.p50_ms:7.2f} ms  p99 {r.p99_ms:7.2f} ms  errors {r.errors}  "
            "CPU-ms/request by round " + " ".join(f"{v:.3f}" for v in rounds)
        )
    return results


def measure_sweep(targets: Sequence[Target], mode: Mode) -> dict[Key, LoadResult]:
    """Concurrency steps per upstream latency; a target leaves the sweep after two steps in a
    row whose p99 is over the budget (more connections only queue more; two, so that one
    disturbance on a shared machine does not end it)."""
    results: dict[Key, LoadResult] = {}
    for latency in LATENCIES_MS:
        active = list(targets)
        over: Counter[str] = Counter()
        for step, connections in enumerate(mode.levels):
            for target in rotated(active, step):
                r = load(target, str(latency), connections, mode.sweep_s)
                results[(target.key, latency, connections)] = r
                over[target.key] = over[target.key] + 1 if r.p99_ms > P99_BUDGET_MS else 0
                if over[target.key] >= 2:
                    active.remove(target)
            if not active:
                break
    return results


def ttft_once(http: httpx.Client, target: Target) -> float:
    """Seconds from sending a streamed request to the first SSE data line with content."""
    started = time.perf_counter()
    first: float | None = None
    with http.stream(
        "POST",
        target.urls["stream"],
        content=body_for("stream", stream=True),
        headers=target.headers | {"content-type": "application/json"},
    ) as response:
        if response.status_code != 200:
            response.read()
            raise RuntimeError(f"{target.label} stream: {response.status_code} {response.text}")
        for line in response.iter_lines():
            if first is not None or not line.startswith("data:"):
                continue
            payload = line[5:].strip()
            if payload == "[DONE]":
                continue
            choices = orjson.loads(payload).get("choices") or []
            if choices and (choices[0].get("delta") or {}).get("content"):
                first = time.perf_counter() - started
    target.served += 1
    if first is None:
        raise RuntimeError(f"{target.label}: the stream carried no content")
    return first


def measure_ttft(targets: Sequence[Target], n: int) -> dict[str, list[float]]:
    """Sequential streams, one target after the other in a rotating order, `n` each."""
    times: dict[str, list[float]] = defaultdict(list)
    clients = {t.key: httpx.Client(timeout=30) for t in targets}
    try:
        for target in targets:  # warm-up: connections, first-use code paths
            for _ in range(5):
                ttft_once(clients[target.key], target)
        for i in range(n):
            for target in rotated(targets, i):
                times[target.key].append(ttft_once(clients[target.key], target) * 1000)
    finally:
        for client in clients.values():
            client.close()
    for key, values in times.items():
        print(
            f"  {key:<10} TTFT p50 {percentile(values, 50):7.2f} ms  "
            f"p99 {percentile(values, 99):7.2f} ms"
        )
    return times


# -- profile -----------------------------------------------------------------------------------

COMPONENTS: list[tuple[str, str]] = [
    ("faas/", "faas code"),
    ("httpx/", "httpx + httpcore + anyio (upstream client)"),
    ("httpcore/", "httpx + httpcore + anyio (upstream client)"),
    ("anyio/", "httpx + httpcore + anyio (upstream client)"),
    ("h11/", "httpx + httpcore + anyio (upstream client)"),
    ("aiohttp/", "aiohttp (upstream client)"),
    ("opentelemetry/", "OpenTelemetry"),
    ("fastapi/telemetry", "OpenTelemetry"),
    # py-spy shortens paths: opentelemetry's own modules show as metrics/..., trace/...
    ("(metrics/", "OpenTelemetry"),
    ("(attributes/", "OpenTelemetry"),
    ("(trace/", "OpenTelemetry"),
    ("(context/", "OpenTelemetry"),
    ("(sdk/", "OpenTelemetry"),
    ("logging/", "logging"),
    ("pydantic", "pydantic"),
    ("fastapi/", "FastAPI / Starlette"),
    ("starlette/", "FastAPI / Starlette"),
    ("uvicorn/", "uvicorn"),
    ("aiosqlite/", "aiosqlite thread"),
    ("sqlalchemy/", "SQLAlchemy"),
    ("nats/", "nats-py"),
    ("jwt/", "PyJWT"),
    ("orjson", "orjson"),
    ("asyncio/", "asyncio"),
    ("(contextlib.py", "contextlib"),
    ("uvloop", "asyncio"),
    ("concurrent/", "thread pool"),
    ("threading", "thread pool"),
]


# Threads blocked on their queue, which py-spy counts as active: aiosqlite's connection thread
# and the idle workers of a thread pool (asyncio.to_thread, run_cpu).
IDLE_LEAVES = ("(aiosqlite/core.py:59)", "_worker (concurrent/futures/thread.py:81)")


def _component(frame: str) -> str:
    for needle, name in COMPONENTS:
        if needle in frame:
            return name
    return "other"


def _function(frame: str) -> str:
    """`name (path/file.py:123)` -> `name (path/file.py)`."""
    head, _, rest = frame.rpartition(":")
    return head + ")" if rest.rstrip(")").isdigit() else frame


def summarize_profile(raw: Path, top: int = 15) -> str:
    """Self time by function and by library (the leaf frame's), and inclusive time of faas'
    own functions, as shares of py-spy's non-idle samples."""
    own: Counter[str] = Counter()
    lib: Counter[str] = Counter()
    faas_incl: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        if frames[-1].endswith(IDLE_LEAVES):
            continue  # a worker thread blocked on its queue, which py-spy counts as active
        total += n
        leaf = frames[-1]
        own[_function(leaf)] += n
        # Attribute the leaf to the innermost frame that belongs to a known library.
        lib[
            next((_component(f) for f in reversed(frames) if _component(f) != "other"), "other")
        ] += n
        for fn in {_function(f) for f in frames if "faas/" in f}:
            faas_incl[fn] += n
    if not total:
        return "(no samples)"

    def share(count: int) -> str:
        return f"{count / total:.1%}"

    parts = [
        md_table(["Library (leaf frame)", "share"], [[k, share(v)] for k, v in lib.most_common()]),
        md_table(
            ["Function (self)", "share"], [[f"`{k}`", share(v)] for k, v in own.most_common(top)]
        ),
        md_table(
            ["faas function (inclusive)", "share"],
            [[f"`{k}`", share(v)] for k, v in faas_incl.most_common(top)],
        ),
    ]
    return f"{total:,} samples\n\n" + "\n\n".join(parts)


def profile_faas(target: Target, seconds: float, out: Path, connections: int) -> str:
    """py-spy (on the load core) records the faas server while wrk loads it at `connections`
    with the 0 ms upstream."""
    assert target.pid is not None
    py_spy = Path(PYTHON).parent / "py-spy"
    if not py_spy.exists():
        found = shutil.which("py-spy")
        if found is None:
            return "(py-spy not installed: `pip install py-spy`, or put it on PATH)"
        py_spy = Path(found)
    cmd = [str(py_spy), "record", "-p", str(target.pid), "-d", str(round(seconds))]
    cmd += ["-r", "100", "-f", "raw", "-o", str(out)]
    spy = subprocess.Popen(pinned(cmd, LOAD_CPU), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(0.5)
    result = load(target, "0", connections, seconds + 1)
    _, err = spy.communicate(timeout=seconds + 30)
    if spy.returncode != 0 or not out.exists():
        return f"(py-spy failed: {err.decode(errors='replace')[-500:]})"
    print(f"  profiled {target.label} at {result.rps:,.0f} req/s; raw stacks in {out}")
    return (
        f"Concurrency {connections} ({result.rps:,.0f} req/s under the profiler), "
        + summarize_profile(out)
    )


# -- report ------------------------------------------------------------------------------------


def verdict(ok: bool | None) -> str:
    if ok is None:
        return "n/a"
    return "yes" if ok else "**no**"


def fmt(value: float | None, spec: str = ".2f", unit: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{unit}"


@dataclass
class Results:
    targets: list[Target]
    latency: dict[Key, LoadResult]
    sweep: dict[Key, LoadResult]
    ttft: dict[str, list[float]]
    rss: dict[str, Rss]
    nats_events: tuple[int, int] | None
    cpu: CpuTally = field(default_factory=CpuTally)
    profile: str | None = None
    notes: list[str] = field(default_factory=list)

    def added(self, key: str, latency: int, connections: int, q: str) -> float | None:
        gw = self.latency.get((key, latency, connections))
        direct = self.latency.get(("direct", latency, connections))
        if gw is None or direct is None:
            return None
        return float(getattr(gw, q)) - float(getattr(direct, q))

    def peak_rps(self, key: str) -> float | None:
        """Requests/s of the one server core: the best of every 0 ms run."""
        runs = [r.rps for (k, lat, _), r in self.latency.items() if k == key and lat == 0]
        runs += [r.rps for (k, lat, _), r in self.sweep.items() if k == key and lat == 0]
        if key in self.rss:
            runs.append(self.rss[key].rps)
        return max(runs) if runs else None

    def best_under_budget(self, key: str, latency: int) -> tuple[float, int] | None:
        fits = [
            (r.rps, c)
            for (k, lat, c), r in self.sweep.items()
            if k == key and lat == latency and r.p99_ms <= P99_BUDGET_MS and not r.errors
        ]
        return max(fits) if fits else None

    def added_ttft(self, key: str, q: float) -> float | None:
        if key not in self.ttft or "direct" not in self.ttft:
            return None
        return percentile(self.ttft[key], q) - percentile(self.ttft["direct"], q)


def _met(value: float | None, ok: Callable[[float], bool]) -> bool | None:
    return None if value is None else ok(value)


def _ratio(value: float | None, base: float | None, spec: str) -> str:
    return "" if value is None or not base else f" ({value / base:{spec}}x)"


def target_rows(res: Results, faas_keys: list[str]) -> list[list[str]]:
    keys = [*faas_keys, "litellm"]
    rows: list[list[str]] = []

    def row(measure: str, values: dict[str, str], target: str, met: Sequence[bool | None]) -> None:
        rows.append(
            [measure, *(values[k] for k in keys), target, " / ".join(verdict(m) for m in met)]
        )

    for latency in LATENCIES_MS:
        p50 = {k: res.added(k, latency, 1, "p50_ms") for k in keys}
        row(
            f"added p50, concurrency 1, {latency} ms upstream",
            {k: fmt(v, ".2f", " ms") for k, v in p50.items()},
            f"≤ {TARGET_ADDED_P50_MS:.1f} ms",
            [_met(p50[k], lambda v: v <= TARGET_ADDED_P50_MS) for k in faas_keys],
        )
    rps = {k: res.peak_rps(k) for k in keys}
    lite_rps = rps["litellm"]
    row(
        "requests/s per core (0 ms upstream, best run)",
        {
            k: fmt(v, ",.0f") + ("" if k == "litellm" else _ratio(v, lite_rps, ".1f"))
            for k, v in rps.items()
        },
        f"≥ {TARGET_RPS_RATIO:.0f}x LiteLLM",
        [
            _met(rps[k], lambda v: bool(lite_rps) and v >= TARGET_RPS_RATIO * (lite_rps or 0))
            if lite_rps
            else None
            for k in faas_keys
        ],
    )
    for latency in LATENCIES_MS:
        p99 = {k: res.added(k, latency, 32, "p99_ms") for k in keys}
        lite_p99 = p99["litellm"] or 0.0
        row(
            f"added p99, concurrency 32, {latency} ms upstream",
            {
                k: fmt(v, ".1f", " ms") + ("" if k == "litellm" else _ratio(v, lite_p99, ".2f"))
                for k, v in p99.items()
            },
            f"≤ {TARGET_P99_RATIO:.1f}x LiteLLM",
            [
                None if (v := p99[k]) is None or not lite_p99 else v <= TARGET_P99_RATIO * lite_p99
                for k in faas_keys
            ],
        )
    growth = {k: res.rss[k].growth if k in res.rss else None for k in keys}
    row(
        "RSS growth from the checkpoint to the last request",
        {
            k: fmt(None if g is None else g * 100, "+.1f", " %")
            + (f" (to {res.rss[k].final_requests / 1000:.0f}k)" if k in res.rss else "")
            for k, g in growth.items()
        },
        f"< {TARGET_RSS_GROWTH:.0%}",
        [_met(growth[k], lambda v: v < TARGET_RSS_GROWTH) for k in faas_keys],
    )
    final = {k: res.rss[k].final_mb if k in res.rss else None for k in keys}
    lite_mb = final["litellm"]
    row(
        "RSS after the last request",
        {k: fmt(v, ".0f", " MB") for k, v in final.items()},
        "below LiteLLM's",
        [_met(final[k], lambda v: v < (lite_mb or 0)) if lite_mb else None for k in faas_keys],
    )
    return rows


def report(res: Results, mode: Mode, setup: dict[str, str]) -> str:
    labels = {t.key: t.label for t in res.targets}
    faas_keys = [t.key for t in res.targets if t.is_faas]
    parts = [
        f"## Gateway — {today()}{' (--quick)' if mode.quick else ''}",
        "\n".join(environment_lines(setup)),
        md_table(
            ["Measure", *(labels[k] for k in faas_keys), "LiteLLM", "Target", "Met (faas)"],
            target_rows(res, faas_keys),
        ),
        floor_table(
            [t.key for t in res.targets if t.is_gateway],
            labels,
            res.cpu,
            res.peak_rps,
            lambda key, c, q: res.added(key, 0, c, q),
        ),
    ]
    rows = []
    for latency in LATENCIES_MS:
        for connections in (1, 32):
            for t in res.targets:
                r = res.latency.get((t.key, latency, connections))
                if r is None:
                    continue
                a50 = res.added(t.key, latency, connections, "p50_ms") if t.is_gateway else None
                a99 = res.added(t.key, latency, connections, "p99_ms") if t.is_gateway else None
                rows.append(
                    [
                        f"{latency} ms",
                        str(connections),
                        t.label,
                        f"{r.rps:,.0f}",
                        f"{r.p50_ms:.2f}",
                        f"{r.p99_ms:.2f}",
                        fmt(a50),
                        fmt(a99),
                        str(r.errors),
                    ]
                )
    parts.append(
        md_table(
            [
                "Upstream",
                "Conc.",
                "Config",
                "req/s",
                "p50 ms",
                "p99 ms",
                "added p50 ms",
                "added p99 ms",
                "errors",
            ],
            rows,
        )
    )
    sweep_rows = []
    for t in res.targets:
        cells = [t.label]
        for latency in LATENCIES_MS:
            best = res.best_under_budget(t.key, latency)
            cells.append("none" if best is None else f"{best[0]:,.0f} (c={best[1]})")
        cells.append(fmt(res.peak_rps(t.key), ",.0f"))
        sweep_rows.append(cells)
    parts.append(
        md_table(
            [
                "Config",
                *(
                    f"max req/s at p99 ≤ {P99_BUDGET_MS:.0f} ms, {lat} ms upstream"
                    for lat in LATENCIES_MS
                ),
                "peak req/s (0 ms upstream)",
            ],
            sweep_rows,
        )
    )
    ttft_rows = [
        [
            t.label,
            fmt(percentile(res.ttft[t.key], 50)),
            fmt(percentile(res.ttft[t.key], 99)),
            fmt(res.added_ttft(t.key, 50)) if t.is_gateway else "",
            fmt(res.added_ttft(t.key, 99)) if t.is_gateway else "",
        ]
        for t in res.targets
        if t.key in res.ttft
    ]
    parts.append(
        md_table(
            ["Config", "TTFT p50 ms", "TTFT p99 ms", "added TTFT p50 ms", "added TTFT p99 ms"],
            ttft_rows,
        )
    )
    rss_rows = [
        [
            labels[k],
            f"{r.idle_mb:.0f}",
            "n/a"
            if r.checkpoint_mb is None
            else f"{r.checkpoint_mb:.0f} at {r.checkpoint_requests:,}",
            f"{r.final_mb:.0f} at {r.final_requests:,}",
            fmt(None if r.growth is None else r.growth * 100, "+.1f", " %"),
            f"{r.rps:,.0f}",
        ]
        for k, r in res.rss.items()
    ]
    parts.append(
        md_table(
            [
                "Config",
                "RSS idle MB",
                "RSS MB at checkpoint (requests)",
                "RSS MB at end (requests)",
                "growth",
                "req/s during",
            ],
            rss_rows,
        )
    )
    if res.profile:
        parts.append(
            "Where the faas gateway's time goes (py-spy, 100 Hz, 0 ms upstream, faas with the "
            "in-process bus; shares of the non-idle samples of all threads):\n\n" + res.profile
        )
    if res.notes:
        parts.append("\n".join(f"- Note: {n}" for n in res.notes))
    return "\n\n".join(parts) + "\n"


# -- main --------------------------------------------------------------------------------------


def git_revision() -> str:
    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return out.stdout.strip()

    rev = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "src")
    return rev + (" with uncommitted changes under src/" if dirty else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="short runs: a smoke test")
    parser.add_argument("--no-save", action="store_true", help="print only, do not append")
    parser.add_argument("--no-litellm", action="store_true", help="skip the LiteLLM proxy")
    parser.add_argument("--no-nats", action="store_true", help="skip the faas + NATS config")
    parser.add_argument(
        "--profile", type=float, default=None, help="py-spy seconds (default: 15; --quick: 0)"
    )
    parser.add_argument("--max-load", type=float, default=1.0, help="wait for a load below")
    parser.add_argument(
        "--wait-minutes", type=float, default=None, help="for a quiet machine (default 20; quick 0)"
    )
    args = parser.parse_args()
    mode = Mode.of(args.quick)
    profile_s = args.profile if args.profile is not None else (0.0 if args.quick else 15.0)
    wait_min = args.wait_minutes if args.wait_minutes is not None else (0 if args.quick else 20)
    if have_taskset():
        os.sched_setaffinity(0, {LOAD_CPU})  # this script's client work stays off the server core
    notes: list[str] = []
    work = Path(tempfile.mkdtemp(prefix="faas-bench-gw-"))
    litellm: Path | None = None
    if not args.no_litellm:
        litellm = ensure_litellm(LITELLM_VENV, work / "pip-litellm.log")
    use_nats = not args.no_nats and nats_available()
    if not args.no_nats and not use_nats:
        notes.append(f"NATS at {NATS_URL} unreachable: the faas + NATS config was skipped")
    if wait_min:
        wait_for_quiet(args.max_load, wait_min * 60)
    load_before = os.getloadavg()
    revision = git_revision()  # the code the servers load now (others may commit meanwhile)
    started = time.monotonic()
    print(f"work dir {work}; load average {load_before[0]:.2f}")

    prefix = f"benchgw{int(time.time())}{os.getpid()}"
    secret = secrets.token_urlsafe(48)
    mock_ports = {"0": free_port(), "20": free_port(), "stream": free_port()}
    mocks = {k: f"http://127.0.0.1:{p}" for k, p in mock_ports.items()}
    models = work / "faas-models.yaml"
    models.write_text(faas_models_yaml(mocks))
    faas_env = {
        "FAAS_JWT_SECRET": secret,
        "FAAS_GATEWAY_MODELS": str(models),
        "FAAS_GATEWAY_DEFAULT_RPM": str(HIGH_RPM),
        "FAAS_GATEWAY_DEFAULT_TPM": str(HIGH_TPM),
    }
    token = mint_token(clean_env(FAAS_DATA_DIR=str(work / "token"), **faas_env), TENANT)
    chat = "/v1/chat/completions"
    targets: list[Target] = [
        Target(
            "direct",
            "direct",
            {k: base + chat for k, base in mocks.items()},
            {"Authorization": f"Bearer {UPSTREAM_KEY}"},
        )
    ]
    logs: dict[str, Path] = {}
    results: Results
    with ExitStack() as stack:
        for setting, port in mock_ports.items():
            upstream_ms = 0.0 if setting == "stream" else float(setting)
            delay = STREAM_DELAY_MS if setting == "stream" else 0.0
            stack.enter_context(
                server(
                    mock_command(port, upstream_ms, delay),
                    clean_env(PYTHONPATH=str(ROOT)),
                    f"{mocks[setting]}/v1/models",
                    work / f"mock-{setting}.log",
                    cwd=ROOT,
                )
            )
        faas_configs: list[tuple[str, str, dict[str, str]]] = [("faas", "faas", {})]
        if use_nats:
            faas_configs.append(
                ("faas-nats", "faas+NATS", {"FAAS_NATS_URL": NATS_URL, "FAAS_NATS_PREFIX": prefix})
            )
        for key, label, extra in faas_configs:
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            logs[key] = work / f"{key}.log"
            env = clean_env(FAAS_DATA_DIR=str(work / key), **faas_env, **extra)
            proc = stack.enter_context(
                server(faas_command(port), env, f"{base}/readyz", logs[key], ready_timeout_s=90)
            )
            targets.append(
                Target(
                    key,
                    label,
                    {k: base + chat for k in mocks},
                    {"Authorization": f"Bearer {token}"},
                    proc.pid,
                )
            )
        port = free_port()
        logs["bare"] = work / "bare.log"
        proc = stack.enter_context(
            server(
                bare_command(port, mocks["0"]),
                clean_env(),
                f"http://127.0.0.1:{port}/v1/models",
                logs["bare"],
                cwd=ROOT,
            )
        )
        # One bare proxy per upstream setting would triple its processes; it forwards the path
        # as is, so the other settings reach their mocks through their own bare proxy ports.
        bare_urls = {"0": f"http://127.0.0.1:{port}{chat}"}
        for setting in ("20", "stream"):
            extra_port = free_port()
            stack.enter_context(
                server(
                    bare_command(extra_port, mocks[setting]),
                    clean_env(),
                    f"http://127.0.0.1:{extra_port}/v1/models",
                    work / f"bare-{setting}.log",
                    cwd=ROOT,
                )
            )
            bare_urls[setting] = f"http://127.0.0.1:{extra_port}{chat}"
        targets.append(
            Target("bare", "bare proxy", bare_urls, {"Authorization": f"Bearer {UPSTREAM_KEY}"})
        )
        targets[-1].pid = proc.pid
        if litellm is not None:
            logs["litellm"] = work / "litellm.log"
            targets.append(litellm_server(stack, litellm, mocks, work, logs["litellm"]))
        for target in targets:
            verify(target)
        nats_events = None
        if use_nats:
            faas_nats = next(t for t in targets if t.key == "faas-nats")
            got = asyncio.run(_count_events(prefix, faas_nats, 20))
            nats_events = (got, 20)
            print(f"  faas+NATS: {got} of 20 usage events seen on NATS ({prefix}.gateway.>)")
            if got < 20:
                raise RuntimeError("faas+NATS: usage events did not reach NATS")
        print(f"servers up and verified ({time.monotonic() - started:.0f} s)")

        print(
            f"RSS: up to {mode.rss_final:,} requests per server, "
            f"at most {mode.rss_cap_s:.0f} s per faas server, {mode.rss_cap_litellm_s:.0f} s for "
            "LiteLLM"
        )
        rss = {t.key: measure_rss(t, mode) for t in targets if t.is_gateway}
        print(f"latency: {mode.rounds} rounds of {mode.round_s:.0f} s per config, c=1 and c=32")
        cpu = CpuTally()
        latency = measure_latency(targets, mode, cpu)
        print(f"max req/s at p99 <= {P99_BUDGET_MS:.0f} ms: concurrency {mode.levels}")
        sweep = measure_sweep(targets, mode)
        print(f"time to first token: {mode.ttft_n} sequential streams per config")
        # The bare proxy buffers whole answers: its time to first token would be a whole stream.
        ttft = measure_ttft([t for t in targets if t.key != "bare"], mode.ttft_n)
        results = Results(targets, latency, sweep, ttft, rss, nats_events, cpu)
        if profile_s > 0:
            faas = next(t for t in targets if t.key == "faas")
            stamp = time.strftime("%Y%m%d-%H%M%S")
            summaries = []
            for connections in (32, 1):
                out = BENCH_DIR / "results" / f"gateway-profile-{stamp}-c{connections}.txt"
                out.parent.mkdir(parents=True, exist_ok=True)
                print(f"profiling faas for {profile_s:.0f} s at concurrency {connections}")
                summaries.append(profile_faas(faas, profile_s, out, connections))
                print(summaries[-1])
            results.profile = "\n\n".join(summaries)
    if use_nats:
        asyncio.run(_drop_streams(prefix))
    for key, path in logs.items():
        if key.startswith("faas") and b'"msg":"request"' not in path.read_bytes():
            raise RuntimeError(f"{key}: no request log lines; log_requests must be on")

    load_after = os.getloadavg()
    elapsed = time.monotonic() - started
    results.notes = [
        *notes,
        f"1-minute load average at the start {load_before[0]:.2f} (5-min {load_before[1]:.2f}), "
        f"at the end {load_after[0]:.2f}; the benchmark itself keeps both cores busy",
        f"run took {elapsed / 60:.1f} min",
    ]
    if any(r.errors for r in [*latency.values(), *sweep.values()]):
        results.notes.append("some requests failed or timed out: see the errors column")
    lite_version = installed_litellm(LITELLM_VENV / "bin" / "python") if litellm else None
    wrk = (tool_version(["wrk", "-v"]) or "wrk").split(" [")[0].replace("debian/", "")
    if load_tool() != "wrk":
        wrk = "python asyncio load generator (wrk not installed)"
    pinning = (
        f"servers pinned to core {SERVER_CPU}; wrk, the mock upstreams and the stream client "
        f"share core {LOAD_CPU} (taskset)"
        if have_taskset()
        else "no taskset: processes not pinned"
    )
    setup = {
        "faas": f"{revision}; `faas serve gateway` (uvicorn, one worker), JWT auth with a "
        f"`faas token` bearer token, tenant RPM {HIGH_RPM:.0e} / TPM {HIGH_TPM:.0e} (limits "
        "checked and counted, never reached; in-memory limit store), usage events on "
        "(in-process bus; faas+NATS: published to NATS "
        + (f"({nats_events[0]}/{nats_events[1]} seen by a subscriber)" if nats_events else "")
        + "), request log lines to a file, OpenTelemetry defaults (no exporter)",
        "LiteLLM": f"litellm[proxy] {lite_version} in bench/.venv-litellm, `litellm --config` "
        "one worker, master key auth, no database (no virtual keys, spend not stored), "
        "LITELLM_LOCAL_MODEL_COST_MAP=True, global_max_parallel_requests 100000 (its in-memory "
        "parallel request limiter), deployment rpm/tpm set high, default logging"
        if litellm
        else "skipped",
        "Bare proxy": "bench/bare_proxy.py: uvicorn (uvloop, httptools, no access log) and one "
        "aiohttp session forwarding the body as is, no auth, limits, usage or logging; one "
        "process per upstream setting, the 0 ms one measured for CPU",
        "Upstream": "tests.support.mock_upstream, one process per setting (0 ms, 20 ms, and "
        f"0 ms with {STREAM_DELAY_MS} ms between stream chunks); faas and LiteLLM use the "
        "OpenAI-compatible provider to it",
        "Load": f"{wrk}, one thread, Lua POST of a chat completion (temperature 0.7: never "
        f"cached), 10 s timeout; latency: {mode.rounds} rounds of {mode.round_s:.0f} s per "
        "config and concurrency in a rotating order after a warm-up, p50/p99 the median of the "
        "rounds'; added = gateway - direct at the same setting; sweep "
        f"{mode.sweep_s:.0f} s per step; {pinning}",
        "TTFT": f"httpx client, {mode.ttft_n} sequential streams per config (interleaved), time "
        "to the first SSE data line with content",
        "RSS": "psutil, server process and children, at concurrency 32, 0 ms upstream, run first; "
        f"checkpoint at {mode.rss_checkpoint:,} requests or a fifth of the time cap, whichever "
        f"came first, end at {mode.rss_final:,} or the cap "
        f"(counting every request the server answered); at most {mode.rss_cap_s:.0f} s per faas "
        f"server, {mode.rss_cap_litellm_s:.0f} s for LiteLLM",
    }
    shutil.rmtree(work, ignore_errors=True)  # kept when the run fails, for its logs
    section = report(results, mode, setup)
    print()
    publish(section, save=not args.no_save)


if __name__ == "__main__":
    main()
