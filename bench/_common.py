"""Shared helpers for the benchmarks in `bench/`: processes, ports, tokens, load generation,
machine facts and the markdown report appended to docs/benchmarks.md.

Run as a script, this module is also the fallback load generator (when `wrk` is missing):
    python bench/_common.py loadgen URL --connections 32 --duration 10 [--header 'K: V']
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from urllib.parse import urlsplit

import httpx

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "bench"
RESULTS = ROOT / "docs" / "benchmarks.md"
PYTHON = sys.executable
KEY_PACKAGES = ("fastapi", "starlette", "uvicorn", "pydantic", "redis", "orjson", "uvloop")
SERVER_CPU = 0
LOAD_CPU = 1

RESULTS_INTRO = """# Benchmarks

Benchmarks live in `bench/` and are run by hand: `make bench` (or
`.venv/bin/python bench/<name>.py`, most accept `--quick` for a short smoke run). Each run prints
a table and appends a dated section below with the machine, the versions and the targets.

The numbers come from a shared 2-core machine: absolute figures drift from run to run, so every
benchmark compares its configurations side by side in one run, and the **ratios** matter more
than the absolutes. Benchmarks are never timed assertions in the test suite.
"""


# -- processes ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def have_taskset() -> bool:
    return shutil.which("taskset") is not None and (os.cpu_count() or 1) >= 2


def pinned(cmd: Sequence[str], cpu: int) -> list[str]:
    """`cmd` pinned to one core with taskset when it is available."""
    return ["taskset", "-c", str(cpu), *cmd] if have_taskset() else list(cmd)


def clean_env(**extra: str) -> dict[str, str]:
    """The current environment without FAAS_* / OTEL_* (measure the defaults), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FAAS_", "OTEL_"))}
    env.update(extra)
    return env


def mint_token(env: dict[str, str], tenant: str, ttl: str = "2h") -> str:
    """A real bearer token from `faas token`, signed with the data dir's development secret."""
    result = subprocess.run(
        [PYTHON, "-m", "faas", "token", "--tenant", tenant, "--ttl", ttl],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"faas token failed: {result.stderr.strip()}")
    return result.stdout.strip()


def wait_http_ok(
    url: str, proc: subprocess.Popen[bytes], timeout_s: float = 30.0, interval_s: float = 0.02
) -> float:
    """Poll `url` until it answers 200; the monotonic time it did. Raises if `proc` dies."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client(timeout=1.0) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args!r} exited early with {proc.returncode}")
            try:
                if client.get(url).status_code == 200:
                    return time.monotonic()
            except httpx.TransportError:
                pass
            time.sleep(interval_s)
    raise RuntimeError(f"{url} did not answer 200 within {timeout_s}s")


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 15.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


@contextmanager
def server(
    cmd: Sequence[str],
    env: dict[str, str],
    ready_url: str,
    log_path: Path,
    *,
    cwd: Path | None = None,
    ready_timeout_s: float = 30.0,
) -> Iterator[subprocess.Popen[bytes]]:
    """Start `cmd`, wait for `ready_url` to answer 200, stop it on exit. Output goes to
    `log_path` (a file, as a real deployment's log sink would be), shown if it fails."""
    with log_path.open("wb") as log:
        proc = subprocess.Popen(list(cmd), env=env, stdout=log, stderr=subprocess.STDOUT, cwd=cwd)
        try:
            wait_http_ok(ready_url, proc, timeout_s=ready_timeout_s)
            yield proc
        except Exception:
            stop_process(proc)
            tail = log_path.read_bytes()[-3000:].decode(errors="replace")
            print(f"--- server output ({log_path}) ---\n{tail}", file=sys.stderr)
            raise
        finally:
            stop_process(proc)


def rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants, in MB."""
    import psutil

    root = psutil.Process(pid)
    total = 0
    for proc in [root, *root.children(recursive=True)]:
        with suppress(psutil.NoSuchProcess):
            total += proc.memory_info().rss
    return total / 1024 / 1024


def wait_for_quiet(max_load: float, timeout_s: float, poll_s: float = 15.0) -> float:
    """Wait until the 1-minute load average is below `max_load` (others share the machine),
    at most `timeout_s`; returns the load average it started with."""
    deadline = time.monotonic() + timeout_s
    load = os.getloadavg()[0]
    while load >= max_load and time.monotonic() < deadline:
        print(f"  load average {load:.2f} >= {max_load:.2f}: waiting for a quieter machine")
        time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))
        load = os.getloadavg()[0]
    return load


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile, `q` in [0, 100]."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[rank]


# -- load generation ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoadResult:
    requests: int
    duration_s: float
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    tool: str
    # With `combine`: the slowest and fastest round's req/s (how much the machine drifted).
    rps_range: tuple[float, float] | None = None


_WRK_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _wrk_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not match:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(match.group(1)) * _WRK_UNITS[match.group(2)]


def parse_wrk(output: str) -> LoadResult:
    # wrk pads seconds ("1.03s "): allow trailing blanks.
    percentiles = dict(re.findall(r"^\s+(50|99)(?:\.0+)?%\s+(\S+)\s*$", output, re.MULTILINE))
    done = re.search(r"(\d+) requests in ([\d.]+)(ms|s|m)", output)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if not (done and rps and "50" in percentiles and "99" in percentiles):
        raise ValueError(f"cannot parse wrk output:\n{output}")
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", output))
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    return LoadResult(
        requests=int(done.group(1)),
        duration_s=_wrk_ms(done.group(2) + done.group(3)) / 1000,
        rps=float(rps.group(1)),
        p50_ms=_wrk_ms(percentiles["50"]),
        p99_ms=_wrk_ms(percentiles["99"]),
        errors=errors,
        tool="wrk",
    )


def combine(rounds: Sequence[LoadResult]) -> LoadResult:
    """Several load rounds of one config as one: req/s over all of them, p50/p99 the median
    of the rounds' percentiles (wrk does not expose raw latencies to merge)."""
    requests = sum(r.requests for r in rounds)
    duration = sum(r.duration_s for r in rounds)
    return LoadResult(
        requests=requests,
        duration_s=duration,
        rps=requests / duration if duration else 0.0,
        p50_ms=statistics.median(r.p50_ms for r in rounds),
        p99_ms=statistics.median(r.p99_ms for r in rounds),
        errors=sum(r.errors for r in rounds),
        tool=rounds[0].tool,
        rps_range=(min(r.rps for r in rounds), max(r.rps for r in rounds)),
    )


def load_tool() -> str:
    return "wrk" if shutil.which("wrk") else "python"


def wrk_script(body: bytes | None = None, max_requests: int | None = None) -> str:
    """A wrk Lua script: POST `body` as JSON, and/or stop after `max_requests` responses
    (count it with one wrk thread, `-t1`, as `run_load` does)."""
    lines: list[str] = []
    if body is not None:
        text = body.decode()
        if "]==]" in text:
            raise ValueError("the body cannot hold the Lua long-string delimiter ]==]")
        lines += [
            'wrk.method = "POST"',
            f"wrk.body = [==[{text}]==]",
            'wrk.headers["Content-Type"] = "application/json"',
        ]
    if max_requests is not None:
        lines += [
            f"local limit = {int(max_requests)}",
            "local seen = 0",
            "function response(status, headers, body)",
            "  seen = seen + 1",
            "  if seen >= limit then wrk.thread:stop() end",
            "end",
        ]
    return "\n".join(lines) + "\n"


def run_load(
    url: str,
    *,
    connections: int,
    duration_s: float,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    max_requests: int | None = None,
    timeout_s: float | None = None,
) -> LoadResult:
    """GET `url` (or POST `body` as JSON) over `connections` keep-alive connections for
    `duration_s`, or until `max_requests` answers if that comes first, from a separate process
    pinned to the load core: wrk when installed (with a Lua script for POST or a request
    count), else the asyncio generator below. `timeout_s`: wrk's per-request timeout (2 s by
    default; a timed-out request counts as an error)."""
    header_args: list[str] = []
    for name, value in (headers or {}).items():
        header_args += ["-H", f"{name}: {value}"]
    seconds = max(1, round(duration_s))
    if load_tool() == "wrk":
        cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", *header_args]
        if timeout_s is not None:
            cmd += ["--timeout", f"{max(1, round(timeout_s))}s"]
        if body is None and max_requests is None:
            out = subprocess.run(
                pinned([*cmd, url], LOAD_CPU), capture_output=True, text=True, check=True
            )
            return parse_wrk(out.stdout)
        with tempfile.NamedTemporaryFile("w", suffix=".lua", prefix="wrk-") as script:
            script.write(wrk_script(body, max_requests))
            script.flush()
            out = subprocess.run(
                pinned([*cmd, "-s", script.name, url], LOAD_CPU),
                capture_output=True,
                text=True,
                check=True,
            )
        return parse_wrk(out.stdout)
    cmd = [PYTHON, str(Path(__file__).resolve()), "loadgen", url]
    cmd += ["--connections", str(connections), "--duration", str(seconds)]
    for name, value in (headers or {}).items():
        cmd += ["--header", f"{name}: {value}"]
    if max_requests is not None:
        cmd += ["--max-requests", str(max_requests)]
    with tempfile.NamedTemporaryFile("wb", suffix=".json", prefix="loadgen-") as body_file:
        if body is not None:
            body_file.write(body)
            body_file.flush()
            cmd += ["--body-file", body_file.name]
        out = subprocess.run(pinned(cmd, LOAD_CPU), capture_output=True, text=True, check=True)
    fields = json.loads(out.stdout)
    fields["rps_range"] = None
    return LoadResult(**fields)


async def _loadgen(
    url: str,
    connections: int,
    duration_s: float,
    headers: dict[str, str],
    body: bytes | None = None,
    max_requests: int | None = None,
) -> LoadResult:
    """Minimal HTTP/1.1 keep-alive GET (or JSON POST) loop on raw asyncio streams (httpx would
    be the bottleneck on one core). Expects Content-Length framed responses."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    if body is None:
        request = f"GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\n{extra}\r\n".encode()
    else:
        extra += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        request = f"POST {target} HTTP/1.1\r\nHost: {host}:{port}\r\n{extra}\r\n".encode()
        request += body
    latencies: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + duration_s

    async def worker() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while time.perf_counter() < stop_at and (
                max_requests is None or len(latencies) < max_requests
            ):
                t0 = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                if length:
                    await reader.readexactly(length)
                latencies.append(time.perf_counter() - t0)
                if not head.startswith((b"HTTP/1.1 2", b"HTTP/1.1 3")):
                    errors += 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    n = len(latencies)
    return LoadResult(
        requests=n,
        duration_s=elapsed,
        rps=n / elapsed,
        p50_ms=latencies[n // 2] * 1000 if n else 0.0,
        p99_ms=latencies[min(n - 1, int(n * 0.99))] * 1000 if n else 0.0,
        errors=errors,
        tool="python-asyncio",
    )


# -- machine facts and the report --------------------------------------------------------------


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def ram_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return 0.0


def package_versions(names: Sequence[str] = KEY_PACKAGES) -> dict[str, str]:
    versions: dict[str, str] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def tool_version(cmd: Sequence[str]) -> str | None:
    if shutil.which(cmd[0]) is None:
        return None
    out = subprocess.run(list(cmd), capture_output=True, text=True, check=False)
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if text else None


def environment_lines(extra: dict[str, str] | None = None) -> list[str]:
    """Markdown bullet lines: date, machine, Python, key packages, plus `extra`."""
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    versions = ", ".join(f"{k} {v}" for k, v in package_versions().items())
    lines = [
        f"- Date: {now}",
        f"- Machine: {cpu_model()}, {os.cpu_count()} cores, {ram_gib():.1f} GiB RAM, "
        f"{platform.system()} {platform.release()}",
        f"- Python {platform.python_version()} ({platform.python_implementation()})",
        f"- Packages: {versions}",
    ]
    lines += [f"- {k}: {v}" for k, v in (extra or {}).items()]
    return lines


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def append_results(section: str, path: Path = RESULTS) -> None:
    """Append a section to docs/benchmarks.md, creating it with its intro if missing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    existing = path.read_text() if path.exists() else RESULTS_INTRO
    path.write_text(existing.rstrip("\n") + "\n\n" + section.strip("\n") + "\n")


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def publish(section: str, *, save: bool) -> None:
    """Print a report section and, when `save`, append it to docs/benchmarks.md."""
    print(section)
    if save:
        append_results(section)
        print("appended to docs/benchmarks.md")


def today() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")


def _main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="fallback HTTP GET load generator")
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("loadgen")
    gen.add_argument("url")
    gen.add_argument("--connections", type=int, default=32)
    gen.add_argument("--duration", type=float, default=10.0)
    gen.add_argument("--header", action="append", default=[])
    gen.add_argument("--body-file", type=Path, default=None, help="POST this file as JSON")
    gen.add_argument("--max-requests", type=int, default=None)
    args = parser.parse_args(argv)
    headers = dict(h.split(": ", 1) for h in args.header)
    body = args.body_file.read_bytes() if args.body_file else None
    coro = _loadgen(args.url, args.connections, args.duration, headers, body, args.max_requests)
    try:
        import uvloop

        result = uvloop.run(coro)
    except ImportError:
        result = asyncio.run(coro)
    print(json.dumps(dataclasses.asdict(result)))


if __name__ == "__main__":
    _main()
