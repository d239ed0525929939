"""faas's gateway beside two floors, in server CPU-ms per answered chat completion: the bare
pass-through proxy (bench/bare_proxy.py) and the lean gateway (bench/lean_gateway.py, the bare
proxy plus part of faas's per-request work written as one function); and beside faas's own
gateway service answering the chat route from one ASGI function (bench/core_gateway.py), which
splits faas's cost into its HTTP layer and its service.

    .venv/bin/python bench/gateway_floor_probe.py [--rounds 7] [--seconds 5] [--litellm]
        [--concurrency 32] [--no-save]

One mock upstream (0 ms), the servers pinned to one core as in bench/gateway.py (the same
faas configuration: JWT auth, tenant limits on, usage events on the in-process bus), wrk at
`--concurrency` (32) on the other core; rounds alternate the servers' order. CPU per request is the
server process's user + system seconds over the requests it answered (steadier than requests/s
on a shared machine). `--litellm` adds the LiteLLM proxy (bench/gateway.py's, installed into
bench/.venv-litellm on first use) to the rounds: the issue's "CPU time per request <= 1/15 of
LiteLLM's" row, from as many requests per server as the floors get. Each round also records the
CPU the idle servers used meanwhile (they share the loaded server's core), and each server's
added p50: its p50 minus the mock's own, called directly at the same concurrency at the start of
the round. `--concurrency 1` reads the floors for the added-p50 row: what the bare proxy and the
lean gateway add to one request at a time, beside faas (at 32 the added p50 is mostly each
server's queue, not its latency). Appends a section to docs/benchmarks.md unless --no-save.
"""

from __future__ import annotations

import argparse
import os
import secrets
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from statistics import median

import gateway as gw
from _common import (
    BENCH_DIR,
    LOAD_CPU,
    PYTHON,
    ROOT,
    SERVER_CPU,
    clean_env,
    environment_lines,
    free_port,
    md_table,
    pinned,
    publish,
    server,
    today,
)
from _gateway_floor import TARGET_CPU_VS_LITELLM, bare_command, cpu_seconds

CHAT = "/v1/chat/completions"


def core_command(port: int) -> list[str]:
    script = str(BENCH_DIR / "core_gateway.py")
    return pinned([PYTHON, script, "--port", str(port)], SERVER_CPU)


def lean_command(port: int, upstream: str) -> list[str]:
    script = str(BENCH_DIR / "lean_gateway.py")
    return pinned([PYTHON, script, "--upstream", upstream, "--port", str(port)], SERVER_CPU)


@dataclass
class Probe:
    cpu: dict[str, list[float]]  # CPU-ms per answered request, per round
    idle: dict[str, list[float]]  # CPU-ms per second while another server was loaded
    added: dict[str, list[float]]  # p50 ms minus the mock's own p50 called directly, per round
    loads: list[float]  # 1-minute load average after each round


def measure(rounds: int, seconds: float, with_litellm: bool, concurrency: int = 32) -> Probe:
    work = Path(tempfile.mkdtemp(prefix="gwfloor-"))
    secret = secrets.token_urlsafe(48)
    mock_port = free_port()
    mock = f"http://127.0.0.1:{mock_port}"
    models = work / "models.yaml"
    models.write_text(gw.faas_models_yaml({"0": mock}))
    faas_env = {
        "FAAS_JWT_SECRET": secret,
        "FAAS_GATEWAY_MODELS": str(models),
        "FAAS_GATEWAY_DEFAULT_RPM": str(gw.HIGH_RPM),
        "FAAS_GATEWAY_DEFAULT_TPM": str(gw.HIGH_TPM),
    }
    token = gw.mint_token(clean_env(FAAS_DATA_DIR=str(work / "token"), **faas_env), gw.TENANT)
    bearer = {"Authorization": f"Bearer {token}"}
    loads: list[float] = []
    with ExitStack() as stack:
        stack.enter_context(
            server(
                gw.mock_command(mock_port, 0.0, 0.0),
                clean_env(PYTHONPATH=str(ROOT)),
                f"{mock}/v1/models",
                work / "mock.log",
                cwd=ROOT,
            )
        )
        targets: list[gw.Target] = []
        for key, command, env in (
            ("faas", gw.faas_command, clean_env(FAAS_DATA_DIR=str(work / "faas"), **faas_env)),
            ("core", core_command, clean_env(FAAS_DATA_DIR=str(work / "core"), **faas_env)),
            ("lean", lambda p: lean_command(p, mock), clean_env(FAAS_JWT_SECRET=secret)),
            ("bare", lambda p: bare_command(p, mock), clean_env()),
        ):
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            ready = {"faas": "/readyz", "core": "/readyz", "lean": "/livez"}.get(key, "/v1/models")
            proc = stack.enter_context(
                server(command(port), env, base + ready, work / f"{key}.log", cwd=ROOT)
            )
            targets.append(gw.Target(key, key, {"0": base + CHAT}, bearer, proc.pid))
        if with_litellm:
            litellm = gw.ensure_litellm(gw.LITELLM_VENV, work / "pip-litellm.log")
            targets.append(gw.litellm_server(stack, litellm, {"0": mock}, work, work / "lite.log"))
        upstream_key = {"Authorization": f"Bearer {gw.UPSTREAM_KEY}"}
        direct = gw.Target("direct", "direct", {"0": mock + CHAT}, upstream_key)
        for target in targets:
            gw.load(target, "0", concurrency, 2.0)  # warm-up
        cpu: dict[str, list[float]] = {t.key: [] for t in targets}
        idle: dict[str, list[float]] = {t.key: [] for t in targets}
        added: dict[str, list[float]] = {t.key: [] for t in targets}
        for i in range(rounds):
            called = gw.load(direct, "0", concurrency, seconds)
            if called.errors:
                raise SystemExit(f"the mock called directly: {called.errors} errors in round {i}")
            direct_p50 = called.p50_ms
            for target in targets if i % 2 == 0 else targets[::-1]:
                before = {t.key: cpu_seconds(_pid(t)) for t in targets}
                started = time.monotonic()
                result = gw.load(target, "0", concurrency, seconds)
                elapsed = time.monotonic() - started
                if result.errors:
                    raise SystemExit(f"{target.key}: {result.errors} errors in round {i}")
                for other in targets:
                    used = cpu_seconds(_pid(other)) - before[other.key]
                    if other is target:
                        cpu[other.key].append(1000 * used / max(1, result.requests))
                        added[other.key].append(result.p50_ms - direct_p50)
                    else:
                        idle[other.key].append(1000 * used / elapsed)
            loads.append(os.getloadavg()[0])
            print(f"round {i}: " + "  ".join(f"{k} {v[-1]:.3f}" for k, v in cpu.items()))
    return Probe(cpu, idle, added, loads)


def _spread(values: list[float], spec: str) -> str:
    """Median [lowest, highest]."""
    return f"{spec.format(median(values))} [{spec.format(min(values))}, {spec.format(max(values))}]"


def _pid(target: gw.Target) -> int:
    assert target.pid is not None
    return target.pid


def report(probe: Probe, rounds: int, seconds: float, concurrency: int = 32) -> str:
    cpu = probe.cpu
    bare = median(cpu["bare"])
    rows = []
    labels = [
        ("bare", "bare proxy"),
        ("lean", "lean gateway (bench/lean_gateway.py)"),
        ("core", "faas's gateway service in one ASGI function (bench/core_gateway.py)"),
        ("faas", "faas gateway"),
    ]
    if "litellm" in cpu:
        labels.append(("litellm", "LiteLLM proxy"))
    for key, label in labels:
        values = cpu[key]
        per_round = [v / b for v, b in zip(values, cpu["bare"], strict=True)]
        rows.append(
            [
                label,
                _spread(values, "{:.3f}"),
                f"{median(values) / bare:.2f}x",
                f"{min(per_round):.2f} to {max(per_round):.2f}",
                f"{median(probe.idle[key]):.1f}",
                _spread(probe.added[key], "{:.3f}"),
            ]
        )
    title = ", and LiteLLM" if "litellm" in cpu else ""
    header = [
        "server",
        "CPU-ms per request",
        "vs bare",
        "per-round ratio to bare",
        "idle CPU-ms/s while others ran (median)",
        "added p50 ms",
    ]
    lines = [
        f"## Gateway against two floors (bare proxy, lean gateway), its service alone{title}, "
        "concurrency "
        f"{concurrency} ({today()})",
        "",
        *environment_lines(),
        f"- {rounds} rounds of {seconds:.0f} s per server at concurrency {concurrency}, 0 ms "
        "upstream, order alternating; median [lowest, highest] of the rounds; added p50: the "
        "server's p50 minus the mock's, called directly at the start of the round",
        "- Load average (1 min) after each round: " + ", ".join(f"{x:.2f}" for x in probe.loads),
        "",
        md_table(header, rows),
    ]
    if "litellm" in cpu:
        faas, lite = cpu["faas"], cpu["litellm"]
        pairs = [v / f for f, v in zip(faas, lite, strict=True)]
        lines += [
            "",
            f"- LiteLLM's CPU per request / faas's: {median(lite) / median(faas):.1f}x "
            f"(goal >= {TARGET_CPU_VS_LITELLM:.0f}x); per round {min(pairs):.1f}x to "
            f"{max(pairs):.1f}x, median {median(pairs):.1f}x",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--litellm", action="store_true", help="add the LiteLLM proxy")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--no-save", action="store_true", help="print only, do not append")
    args = parser.parse_args()
    os.sched_setaffinity(0, {LOAD_CPU})
    probe = measure(args.rounds, args.seconds, args.litellm, args.concurrency)
    section = report(probe, args.rounds, args.seconds, args.concurrency)
    publish(section, save=not args.no_save)


if __name__ == "__main__":
    main()
