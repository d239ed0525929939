"""Foundation benchmark: `faas up` cold start and idle memory, and the platform's cost on a
cache GET hit compared side by side with a bare FastAPI app doing the same store call.

    .venv/bin/python bench/foundation.py [--quick]

Targets: cold start to the first 200 on /readyz <= 3 s (median of 5), idle RSS <= 200 MB,
platform middleware cost (1 - faas req/s / bare req/s) <= 30 % per kv backend.

The module also holds the two app factories the benchmark serves with
`uvicorn foundation:faas_app --factory` and `uvicorn foundation:bare_app --factory`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import ExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import httpx
import orjson
import psutil
from fastapi import FastAPI, Query
from fastapi import Path as PathParam
from starlette.responses import JSONResponse, Response

from _common import (
    BENCH_DIR,
    LOAD_CPU,
    PYTHON,
    SERVER_CPU,
    LoadResult,
    clean_env,
    combine,
    environment_lines,
    free_port,
    have_taskset,
    load_tool,
    md_table,
    median,
    mint_token,
    pinned,
    publish,
    run_load,
    server,
    stop_process,
    today,
    tool_version,
    wait_http_ok,
)
from faas.app import build_app
from faas.backends.kv import build_kv
from faas.services.cache_service.models import KEY_RE, Name
from faas.services.cache_service.service import data_key
from faas.shared.config import Settings
from faas.shared.logging import configure_logging

TENANT = "bench"
KEY = "hello"
NAMESPACE = "default"
# A small JSON value (~200 bytes), stored as the cache service stores it: encoded JSON bytes.
VALUE = {
    "answer": "The quick brown fox jumps over the lazy dog.",
    "model": "bench-model",
    "tokens": {"prompt": 12, "completion": 34},
    "tags": ["a", "b", "c"],
    "score": 0.875,
}
REDIS_URL = "redis://127.0.0.1:6379/15"
CONCURRENCY = 32
TARGET_COLD_S = 3.0
TARGET_RSS_MB = 200.0
TARGET_COST = 0.30


# -- the apps uvicorn serves (imported in the server process) ----------------------------------


def faas_app() -> FastAPI:
    """The cache service as faas serves it: every platform middleware, JWT auth, request log
    lines on (the default, part of the cost), settings otherwise from FAAS_* (data dir, Redis)."""
    settings = Settings(auth="jwt", log_requests=True)
    configure_logging(settings.log_level)
    return build_app(settings, ["cache"])


def bare_app() -> FastAPI:
    """The same store call and JSON shape with no faas middleware, identity or envelope code;
    the key/value store is built exactly as faas builds it (memory, or Redis if FAAS_REDIS_URL)."""
    kv = build_kv(Settings())

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await kv.set(data_key(TENANT, NAMESPACE, KEY), orjson.dumps(VALUE))
        yield
        await kv.close()

    app = FastAPI(lifespan=lifespan)

    @app.get("/readyz")
    async def readyz() -> Response:
        return JSONResponse({"status": "ready"}, status_code=200 if await kv.ping() else 503)

    @app.get("/api/v1/cache/{key}")
    async def cache_get(
        key: Annotated[str, PathParam(pattern=KEY_RE.pattern)],
        namespace: Annotated[Name, Query()] = NAMESPACE,
    ) -> Response:
        entry = await kv.get_entry(data_key(TENANT, namespace, key))
        data = {
            "key": key,
            "namespace": namespace,
            "found": entry is not None,
            "value": orjson.Fragment(entry.value) if entry is not None else None,
            "ttl_remaining_s": entry.ttl_remaining_s if entry is not None else None,
        }
        body = {
            "success": True,
            "data": data,
            "message": None,
            "correlation_id": None,
            "request_id": None,
            "timestamp": datetime.now(UTC).isoformat(),
            "metadata": {},
        }
        return Response(orjson.dumps(body), media_type="application/json")

    return app


# -- 1. cold start and idle memory of `faas up` ------------------------------------------------


@dataclass(frozen=True, slots=True)
class ColdStart:
    seconds: list[float]
    rss_mb: list[float]


def faas_command() -> list[str]:
    script = Path(PYTHON).parent / "faas"
    return [str(script)] if script.exists() else [PYTHON, "-m", "faas"]


def measure_cold_start(runs: int, work: Path) -> ColdStart:
    seconds: list[float] = []
    rss: list[float] = []
    for i in range(runs):
        data_dir = work / f"cold-{i}"  # fresh: no secret, no database yet
        port = free_port()
        env = clean_env(FAAS_DATA_DIR=str(data_dir))
        log_path = work / f"cold-{i}.log"
        with log_path.open("wb") as log:
            started = time.monotonic()
            cmd = [*faas_command(), "up", "--port", str(port)]
            proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
            try:
                ready = wait_http_ok(f"http://127.0.0.1:{port}/readyz", proc, interval_s=0.01)
                seconds.append(ready - started)
                time.sleep(2.0)
                rss.append(psutil.Process(proc.pid).memory_info().rss / 1024 / 1024)
            except Exception:
                tail = log_path.read_bytes()[-2000:].decode(errors="replace")
                print(f"--- faas up output ---\n{tail}", file=sys.stderr)
                raise
            finally:
                stop_process(proc)
        print(f"  cold start {i + 1}/{runs}: {seconds[-1]:.2f} s, idle RSS {rss[-1]:.0f} MB")
    return ColdStart(seconds, rss)


# -- 2. cache GET hit under load ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Config:
    app: str  # "faas" | "bare"
    backend: str  # "memory" | "redis"

    @property
    def label(self) -> str:
        return f"{self.app} / {self.backend}"


def redis_available() -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_timeout=1).ping())
    except redis.RedisError:
        return False


def clear_redis() -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    for pattern in (f"faas:{TENANT}:*", f"faas-meta:{TENANT}:*"):
        keys = list(client.scan_iter(match=pattern, count=1000))
        if keys:
            client.delete(*keys)
    client.close()


def server_command(app: str, port: int) -> list[str]:
    cmd = [PYTHON, "-m", "uvicorn", f"foundation:{app}_app", "--factory"]
    cmd += ["--app-dir", str(BENCH_DIR), "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--no-access-log", "--loop", "uvloop", "--http", "httptools"]
    return pinned([*cmd, "--log-level", "warning"], SERVER_CPU)


def seed_and_check(config: Config, base: str, headers: dict[str, str]) -> None:
    with httpx.Client(base_url=base, headers=headers, timeout=10) as http:
        if config.app == "faas":
            http.post("/api/v1/cache", json={"key": KEY, "value": VALUE}).raise_for_status()
        got = http.get(f"/api/v1/cache/{KEY}")
        got.raise_for_status()
        data = got.json()["data"]
        if not data["found"] or data["value"] != VALUE:
            raise RuntimeError(f"{config.label}: the seeded key is not a hit: {got.text}")


def measure_backend(
    backend: str, work: Path, token: str, *, warmup_s: float, rounds: int, round_s: float
) -> dict[Config, LoadResult]:
    """Serve the bare and the faas app side by side (both on the server core, only one under
    load at a time) and alternate short load rounds between them (A B B A ...), so background
    load on a shared machine falls on both alike."""
    extra = {"FAAS_DATA_DIR": str(work / "load")}
    if backend == "redis":
        extra["FAAS_REDIS_URL"] = REDIS_URL
    headers = {"Authorization": f"Bearer {token}"}
    configs = [Config("bare", backend), Config("faas", backend)]
    urls: dict[Config, str] = {}
    logs: dict[Config, Path] = {}
    with ExitStack() as stack:
        for config in configs:
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            logs[config] = work / f"{config.app}-{backend}.log"
            stack.enter_context(
                server(
                    server_command(config.app, port),
                    clean_env(**extra),
                    f"{base}/readyz",
                    logs[config],
                )
            )
            seed_and_check(config, base, headers)
            urls[config] = f"{base}/api/v1/cache/{KEY}"
        for config in configs:
            run_load(urls[config], connections=CONCURRENCY, duration_s=warmup_s, headers=headers)
        samples: dict[Config, list[LoadResult]] = {c: [] for c in configs}
        for i in range(rounds):
            for config in configs if i % 2 == 0 else reversed(configs):
                samples[config].append(
                    run_load(
                        urls[config], connections=CONCURRENCY, duration_s=round_s, headers=headers
                    )
                )
    faas = Config("faas", backend)
    if b'"msg":"request"' not in logs[faas].read_bytes():
        raise RuntimeError(f"{faas.label}: no request log lines; log_requests must be on")
    results = {config: combine(samples[config]) for config in configs}
    for config, result in results.items():
        print(
            f"  {config.label:<14} {result.rps:>9,.0f} req/s  p50 {result.p50_ms:6.2f} ms  "
            f"p99 {result.p99_ms:6.2f} ms  errors {result.errors}"
        )
    return results


# -- 3. report ---------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "yes" if ok else "**no**"


def cost(results: dict[Config, LoadResult], backend: str) -> float | None:
    faas = results.get(Config("faas", backend))
    bare = results.get(Config("bare", backend))
    if faas is None or bare is None or bare.rps <= 0:
        return None
    return 1 - faas.rps / bare.rps


def report(
    cold: ColdStart,
    results: dict[Config, LoadResult],
    *,
    quick: bool,
    warmup_s: float,
    rounds: int,
    round_s: float,
    notes: list[str],
) -> str:
    duration_s = rounds * round_s
    cold_s = median(cold.seconds)
    rss_mb = median(cold.rss_mb)
    targets = [
        [
            f"`faas up` cold start to first 200 on /readyz (median of {len(cold.seconds)})",
            f"{cold_s:.2f} s (min {min(cold.seconds):.2f}, max {max(cold.seconds):.2f})",
            f"≤ {TARGET_COLD_S:.0f} s",
            verdict(cold_s <= TARGET_COLD_S),
        ],
        [
            "`faas up` idle RSS (ready + 2 s, median)",
            f"{rss_mb:.0f} MB",
            f"≤ {TARGET_RSS_MB:.0f} MB",
            verdict(rss_mb <= TARGET_RSS_MB),
        ],
    ]
    for backend in ("memory", "redis"):
        value = cost(results, backend)
        if value is not None:
            targets.append(
                [
                    f"platform middleware cost, {backend} kv (1 - faas / bare req/s)",
                    f"{value:.0%}",
                    f"≤ {TARGET_COST:.0%}",
                    verdict(value <= TARGET_COST),
                ]
            )
    load_rows = [
        [
            config.label,
            f"{r.rps:,.0f}",
            f"{r.rps_range[0]:,.0f} to {r.rps_range[1]:,.0f}" if r.rps_range else "",
            f"{r.p50_ms:.2f}",
            f"{r.p99_ms:.2f}",
            str(r.errors),
        ]
        for config, r in results.items()
    ]
    pinning = (
        f"server pinned to core {SERVER_CPU}, load generator to core {LOAD_CPU} (taskset)"
        if have_taskset()
        else "no taskset: processes not pinned"
    )
    tool = (tool_version(["wrk", "-v"]) or "wrk").split(" [")[0].replace("debian/", "")
    if load_tool() != "wrk":
        tool = "python asyncio load generator (wrk not installed)"
    setup = {
        "Load": f"cache GET hit, {CONCURRENCY} keep-alive connections, {tool}; bare and faas "
        f"alternate in {rounds} rounds of {round_s:.0f} s each ({duration_s:.0f} s per config) "
        f"after a {warmup_s:.0f} s warm-up; req/s over all rounds, p50/p99 the median of the "
        f"rounds'; uvicorn one worker, uvloop, httptools, access log off; {pinning}; Redis "
        f"{REDIS_URL} (unpinned)",
        "faas app": "`build_app(Settings(auth='jwt', log_requests=True), ['cache'])`, JSON "
        "request log to a file, OpenTelemetry defaults (no exporter), real bearer token",
        "bare app": "plain FastAPI, same route parameters, same `kv.get_entry` on the same "
        "store class, same JSON envelope shape, no middleware",
    }
    mode = " (--quick)" if quick else ""
    parts = [
        f"## Foundation — {today()}{mode}",
        "\n".join(environment_lines(setup)),
        md_table(["Measure", "Result", "Target", "Met"], targets),
        md_table(
            ["Config (app / kv)", "req/s", "req/s by round", "p50 ms", "p99 ms", "errors"],
            load_rows,
        ),
    ]
    if notes:
        parts.append("\n".join(f"- Note: {n}" for n in notes))
    return "\n\n".join(parts) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="short runs: a smoke test")
    parser.add_argument("--no-save", action="store_true", help="print only, do not append")
    args = parser.parse_args()
    runs, warmup_s, rounds, round_s = (3, 1.0, 3, 1.0) if args.quick else (5, 2.0, 5, 2.0)
    # Other work on a shared machine skews everything: record how busy it was beforehand.
    notes = [f"1-minute load average before the benchmark started: {os.getloadavg()[0]:.2f}"]
    work = Path(tempfile.mkdtemp(prefix="faas-bench-"))
    try:
        print(f"cold start of `faas up` ({runs} runs)")
        cold = measure_cold_start(runs, work)

        backends = ["memory"]
        if redis_available():
            backends.append("redis")
            clear_redis()
        else:
            notes.append(f"Redis at {REDIS_URL} unreachable: Redis configs skipped")
        env = clean_env(FAAS_DATA_DIR=str(work / "load"))
        token = mint_token(env, TENANT)
        print(
            f"cache GET hit, concurrency {CONCURRENCY}, {rounds} alternating rounds of "
            f"{round_s:.0f} s per config ({load_tool()})"
        )
        results: dict[Config, LoadResult] = {}
        for backend in backends:
            results |= measure_backend(
                backend, work, token, warmup_s=warmup_s, rounds=rounds, round_s=round_s
            )
        if any(r.errors for r in results.values()):
            notes.append("some requests failed: see the errors column")
        if "redis" in backends:
            clear_redis()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    section = report(
        cold,
        results,
        quick=args.quick,
        warmup_s=warmup_s,
        rounds=rounds,
        round_s=round_s,
        notes=notes,
    )
    print()
    publish(section, save=not args.no_save)


if __name__ == "__main__":
    main()
