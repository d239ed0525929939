"""What one request costs at concurrency 1 as the upstream gets slower: faas's gateway and the
bare proxy, CPU-ms per request and added p50, at upstream latencies of 0, 2, 5 and 20 ms.

    .venv/bin/python bench/gateway_wake.py [--rounds 2] [--seconds 4] [--no-save]

At concurrency 1 a server sleeps while the upstream answers; the slower the upstream, the
longer the sleep, and a request's work then runs on a core that went idle in between. This
measures how much that costs each server, side by side: one mock upstream per latency, faas
(bench/gateway.py's configuration) routing a model to each, one bare proxy per mock, all servers
on one core, wrk and the mocks on the other; each round measures every latency for both servers.
Added p50: the server's p50 minus the mock's own p50 at that latency, called directly.
Appends a section to docs/benchmarks.md unless --no-save.
"""

from __future__ import annotations

import argparse
import os
import secrets
import tempfile
from contextlib import ExitStack
from pathlib import Path
from statistics import median

import gateway as gw
from _common import (
    LOAD_CPU,
    ROOT,
    clean_env,
    environment_lines,
    free_port,
    md_table,
    publish,
    server,
    today,
)
from _gateway_floor import bare_command, cpu_seconds

LATENCIES_MS = (0, 2, 5, 20)
CHAT = "/v1/chat/completions"
Cell = dict[str, list[float]]  # "cpu" / "p50" -> per-round values


def measure(rounds: int, seconds: float) -> dict[tuple[str, int], Cell]:
    work = Path(tempfile.mkdtemp(prefix="gwwake-"))
    secret = secrets.token_urlsafe(48)
    found: dict[tuple[str, int], Cell] = {}
    with ExitStack() as stack:
        mocks: dict[str, str] = {}
        for latency in LATENCIES_MS:
            port = free_port()
            mocks[str(latency)] = base = f"http://127.0.0.1:{port}"
            stack.enter_context(
                server(
                    gw.mock_command(port, float(latency), 0.0),
                    clean_env(PYTHONPATH=str(ROOT)),
                    f"{base}/v1/models",
                    work / f"mock-{latency}.log",
                    cwd=ROOT,
                )
            )
        models = work / "models.yaml"
        models.write_text(gw.faas_models_yaml(mocks))
        faas_env = {
            "FAAS_JWT_SECRET": secret,
            "FAAS_GATEWAY_MODELS": str(models),
            "FAAS_GATEWAY_DEFAULT_RPM": str(gw.HIGH_RPM),
            "FAAS_GATEWAY_DEFAULT_TPM": str(gw.HIGH_TPM),
        }
        token = gw.mint_token(clean_env(FAAS_DATA_DIR=str(work / "token"), **faas_env), gw.TENANT)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        proc = stack.enter_context(
            server(
                gw.faas_command(port),
                clean_env(FAAS_DATA_DIR=str(work / "faas"), **faas_env),
                base + "/readyz",
                work / "faas.log",
                cwd=ROOT,
            )
        )
        urls = {setting: base + CHAT for setting in mocks}
        faas = gw.Target("faas", "faas", urls, {"Authorization": f"Bearer {token}"}, proc.pid)
        upstream_key = {"Authorization": f"Bearer {gw.UPSTREAM_KEY}"}
        direct_urls = {setting: upstream + CHAT for setting, upstream in mocks.items()}
        direct = gw.Target("direct", "direct", direct_urls, upstream_key)
        bare: dict[str, gw.Target] = {}
        for setting, upstream in mocks.items():
            port = free_port()
            proxy = f"http://127.0.0.1:{port}"
            proc = stack.enter_context(
                server(
                    bare_command(port, upstream),
                    clean_env(),
                    proxy + "/v1/models",
                    work / f"bare-{setting}.log",
                    cwd=ROOT,
                )
            )
            bare[setting] = gw.Target(
                "bare", "bare", {setting: proxy + CHAT}, upstream_key, proc.pid
            )
        for i in range(rounds):
            for latency in LATENCIES_MS:
                setting = str(latency)
                direct_p50 = gw.load(direct, setting, 1, seconds).p50_ms
                pair = (faas, bare[setting]) if i % 2 == 0 else (bare[setting], faas)
                for target in pair:
                    assert target.pid is not None
                    gw.load(target, setting, 1, 1.0)  # warm-up
                    before = cpu_seconds(target.pid)
                    result = gw.load(target, setting, 1, seconds)
                    if result.errors:
                        raise SystemExit(f"{target.key} {latency} ms: {result.errors} errors")
                    cpu = 1000 * (cpu_seconds(target.pid) - before) / max(1, result.requests)
                    cell = found.setdefault((target.key, latency), {"cpu": [], "p50": []})
                    cell["cpu"].append(cpu)
                    cell["p50"].append(result.p50_ms - direct_p50)
                    print(f"round {i} {target.key:<5} {latency:>2} ms: {cpu:.3f} CPU-ms/request")
    return found


def report(found: dict[tuple[str, int], Cell], rounds: int, seconds: float) -> str:
    rows = []
    for latency in LATENCIES_MS:
        faas, bare = found[("faas", latency)], found[("bare", latency)]
        faas_cpu, bare_cpu = median(faas["cpu"]), median(bare["cpu"])
        rows.append(
            [
                f"{latency} ms",
                f"{faas_cpu:.3f}",
                f"{bare_cpu:.3f}",
                f"{faas_cpu / bare_cpu:.2f}x",
                f"{median(faas['p50']):.2f}",
                f"{median(bare['p50']):.2f}",
            ]
        )
    header = [
        "upstream latency",
        "faas CPU-ms / request",
        "bare proxy CPU-ms / request",
        "faas / bare",
        "faas added p50 ms",
        "bare proxy added p50 ms",
    ]
    lines = [
        f"## Gateway at concurrency 1 as the upstream slows: faas and the bare proxy ({today()})",
        "",
        *environment_lines(),
        f"- {rounds} rounds; in each, per upstream latency: the mock called directly, then faas "
        f"and the bare proxy (order alternating by round), {seconds:.0f} s each at concurrency 1 "
        "after 1 s of warm-up; medians of the rounds; added p50 = server p50 - direct p50",
        f"- Load average (1 min) at the end: {os.getloadavg()[0]:.2f}",
        "",
        md_table(header, rows),
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--no-save", action="store_true", help="print only, do not append")
    args = parser.parse_args()
    os.sched_setaffinity(0, {LOAD_CPU})
    found = measure(args.rounds, args.seconds)
    publish(report(found, args.rounds, args.seconds), save=not args.no_save)


if __name__ == "__main__":
    main()
