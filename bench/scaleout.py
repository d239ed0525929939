"""Scale-out across hosts: the multi-host suite's deployment (tests/multihost: one network
namespace per host, PostgreSQL, Redis and NATS on `infra`, two app replicas behind a
round-robin edge, two worker hosts), measured two ways:

- jobs/s with 1 and 2 worker hosts on I/O-bound jobs (`testjobs.slow_effect`: it sleeps);
- gateway requests/s through 1 and 2 app replicas when the bottleneck is the upstream's
  latency. What caps one replica's concurrency to an upstream is the OpenAI-compatible
  provider's connection pool: 1,024 connections per upstream per process
  (`_MAX_CONNECTIONS` in gateway_service/providers/openai.py; the routing file has no
  concurrency setting, and a deployment's `rpm`/`tpm` are counted per process). Calls beyond
  it must not queue inside the replica: they wait for a pool connection unfairly (newcomers
  overtake), aiohttp counts that wait in its connect timeout (`min(timeout_s, 10)`), and the
  timeout counts against the deployment's breaker, so an overloaded replica takes a healthy
  upstream out of rotation for the cooldown (every call 503s). The edge therefore holds each
  replica to 1,024 connections (HAProxy's `maxconn`) and queues the rest in order. With a
  10 s upstream and 2,048 callers, one replica completes ~1024/10 calls a second whatever
  its CPU, and a second adds its own 1,024.

It first runs the suite itself (`pytest tests/multihost`) and reports the figures its proofs
printed. Needs root (network namespaces). Appends a "Scale-out" section to docs/benchmarks.md.

    .venv/bin/python bench/scaleout.py [--quick] [--skip-suite]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import aiohttp
import psutil

from _common import ROOT, append_results, environment_lines, md_table, today, wait_for_quiet

if str(ROOT) not in sys.path:  # the topology lives in tests/multihost
    sys.path.insert(0, str(ROOT))

from tests.multihost.client import token
from tests.multihost.cluster import PORTS, Cluster, running_cluster
from tests.multihost.netns import unusable_reason

JOB_KIND = "testjobs.slow_effect"
POOL = 1024  # the gateway's connections to one upstream (`_MAX_CONNECTIONS`, providers/openai.py)
EDGE_PORTS = {1: 9001, 2: 9002}  # replicas -> the bench's edge listener
CPU_GROUPS = ("apps", "workers", "infra", "edge+svc", "client")
QUIET_LOAD = 2.5  # other work on this shared machine: wait for it to calm down before a run


@dataclass
class Run:
    scenario: str
    hosts: int
    done: int
    seconds: float
    cpu_s: dict[str, float]
    load: float
    errors: int = 0
    statuses: str = ""

    @property
    def rate(self) -> float:
        return self.done / self.seconds


def cpu_seconds(cluster: Cluster) -> dict[str, float]:
    """user+system CPU seconds of every process in each host, so far (this process is the
    client host's)."""
    used: dict[str, float] = {}
    for name, host in cluster.net.hosts.items():
        pids = subprocess.run(
            ["ip", "netns", "pids", host.netns], capture_output=True, text=True
        ).stdout.split()
        total = 0.0
        for pid in pids:
            try:
                times = psutil.Process(int(pid)).cpu_times()
            except psutil.Error:
                continue
            total += times.user + times.system
        used[name] = total
    own = psutil.Process().cpu_times()
    used["client"] += own.user + own.system
    return used


def spent(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    groups = {"apps": ("app1", "app2"), "workers": ("work1", "work2"), "infra": ("infra",)}
    groups |= {"edge+svc": ("edge", "svc"), "client": ("client",)}
    return {
        group: sum(max(0.0, after.get(h, 0) - before.get(h, 0)) for h in hosts)
        for group, hosts in groups.items()
    }


# -- jobs --------------------------------------------------------------------------------------


def use_workers(cluster: Cluster, hosts: list[str], concurrency: int) -> None:
    """Exactly `hosts` run a worker (with `concurrency`); the others run none."""
    for host, proc in list(cluster.workers.items()):
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)
        del cluster.workers[host]
    for host in hosts:
        cluster.start_worker(host, concurrency)
    for host in hosts:
        cluster.wait_worker(host)


def stamp(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def jobs_run(cluster: Cluster, hosts: list[str], count: int, sleep_s: float, conc: int) -> Run:
    use_workers(cluster, hosts, conc)
    workdir = cluster.data_dir / f"bench-jobs-{len(hosts)}"
    workdir.mkdir()
    before = cpu_seconds(cluster)
    ids = cluster.submit("app1", JOB_KIND, count, {"dir": str(workdir), "sleep_s": sleep_s})
    views = cluster.finished_jobs(ids, timeout_s=600)
    cpu = spent(before, cpu_seconds(cluster))
    ok = [v for v in views if v["status"] == "succeeded"]
    # From the first start to the last finish, as the jobs themselves recorded it.
    seconds = max(stamp(v["finished_at"]) for v in ok) - min(stamp(v["started_at"]) for v in ok)
    return Run("jobs", len(hosts), len(ok), seconds, cpu, os.getloadavg()[0], count - len(ok))


# -- requests ----------------------------------------------------------------------------------


async def closed_loop(
    url: str,
    headers: dict[str, str],
    callers: int,
    ramp_s: float,
    duration_s: float,
    warmup_s: float,
) -> tuple[int, Counter[int]]:
    """`callers` each sending one chat after another, starting evenly over `ramp_s` (so
    they do not move in lockstep); the 200s completed between warm-up and the end, and every
    status seen."""
    body = {"model": "metered", "messages": [{"role": "user", "content": "hello"}]}
    start = time.monotonic()
    window = (start + warmup_s, start + duration_s)
    completed: list[float] = []
    statuses: Counter[int] = Counter()
    timeout = aiohttp.ClientTimeout(total=300)
    # A connection per call, so calls queue at the edge in arrival order.
    connector = aiohttp.TCPConnector(limit=callers, force_close=True)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def caller(delay_s: float) -> None:
            await asyncio.sleep(delay_s)
            while time.monotonic() < window[1]:
                try:
                    async with session.post(url, json=body, headers=headers) as answer:
                        await answer.read()
                        statuses[answer.status] += 1
                        if answer.status != 200:
                            continue
                except aiohttp.ClientError:
                    statuses[0] += 1
                    continue
                completed.append(time.monotonic())

        tasks = [asyncio.create_task(caller(i * ramp_s / callers)) for i in range(callers)]
        await asyncio.sleep(duration_s)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return sum(window[0] <= t <= window[1] for t in completed), statuses


def requests_run(
    cluster: Cluster,
    replicas: int,
    callers: int,
    latency_s: float,
    duration_s: float,
    warmup_s: float,
) -> Run:
    url = f"http://{cluster['edge'].address}:{EDGE_PORTS[replicas]}/v1/chat/completions"
    headers = token(f"bench-{replicas}")
    before = cpu_seconds(cluster)
    done, statuses = cluster.http.thread.call(
        asyncio.run, closed_loop(url, headers, callers, latency_s, duration_s, warmup_s)
    )
    cpu = spent(before, cpu_seconds(cluster))
    errors = sum(n for status, n in statuses.items() if status != 200)
    seen = ", ".join(f"{status}: {n}" for status, n in sorted(statuses.items()))
    window = duration_s - warmup_s
    return Run("requests", replicas, done, window, cpu, os.getloadavg()[0], errors, seen)


def bench_edge(cluster: Cluster) -> None:
    """Two more listeners on the edge, in front of app1 alone and of both replicas, each
    replica taking at most `POOL` connections at once (the rest wait at the edge, in order)."""
    edge, apps = cluster["edge"].address, [cluster[h].address for h in ("app1", "app2")]
    gateway = PORTS["gateway"]
    routes = [f"{EDGE_PORTS[1]}={apps[0]}:{gateway}"]
    routes += [f"{EDGE_PORTS[2]}={apps[0]}:{gateway},{apps[1]}:{gateway}"]
    cluster["edge"].popen(
        [*(sys.executable, "-m", "tests.multihost.proxy"), edge, *routes, f"--maxconn={POOL}"],
        env=cluster.env,
        log=cluster.log("edge-bench"),
        cwd=ROOT,
    )
    deadline = time.monotonic() + 30
    while not all(cluster.http.reachable(edge, port) for port in EDGE_PORTS.values()):
        if time.monotonic() > deadline:
            raise RuntimeError("the bench's edge did not start")
        time.sleep(0.1)


# -- report ------------------------------------------------------------------------------------


def run_suite() -> list[str]:
    """The multi-host suite, for the figures its proofs print."""
    with tempfile.NamedTemporaryFile(suffix=".txt") as report:
        env = os.environ | {
            "FAAS_MULTIHOST_REPORT": report.name,
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        }
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "tests/multihost", "-q", "-p", "no:cacheprovider"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
        print(done.stdout[-3000:])
        if done.returncode != 0:
            raise RuntimeError("the multi-host suite failed: fix it before measuring")
        return Path(report.name).read_text().splitlines()


def rows(runs: list[Run], ideal_per_host: dict[str, float]) -> list[list[str]]:
    table = []
    for run in runs:
        base = next(r for r in runs if r.scenario == run.scenario and r.hosts == 1)
        ideal = ideal_per_host[run.scenario] * run.hosts
        cpu = run.cpu_s
        table.append(
            [
                f"{run.scenario} ({'worker hosts' if run.scenario == 'jobs' else 'app replicas'})",
                str(run.hosts),
                str(run.done),
                f"{run.seconds:.1f}",
                f"{run.rate:.1f}",
                f"{run.rate / ideal:.0%}",
                f"{run.rate / base.rate:.2f}x",
                " / ".join(f"{cpu[group]:.1f}" for group in CPU_GROUPS),
                f"{run.load:.2f}",
                str(run.errors),
            ]
        )
    return table


def report(
    runs: list[Run], figures: list[str], settings: dict[str, str], ideal: tuple[int, float, float]
) -> str:
    concurrency, sleep_s, latency_s = ideal
    header = ["scenario", "hosts", "done", "s", "per s", "of ideal", "ratio"]
    header += [f"CPU-s {' / '.join(CPU_GROUPS)}", "load 1m", "errors"]
    notes = [
        "Jobs: `testjobs.slow_effect` (sleeps, then appends a line), submitted from app1, "
        "run by `faas worker` on 1 or 2 worker hosts; rate from the first start to the last "
        "finish the jobs recorded.",
        "Requests: `POST /v1/chat/completions` through the edge (TCP round-robin) to 1 or 2 "
        "gateway replicas, model `metered` on the mock upstream (svc host) answering after a "
        "fixed latency; a closed loop of callers from the client host; rate over the window "
        "after warm-up. A replica's cap is its provider connection pool: 1,024 connections "
        "per upstream per process (`_MAX_CONNECTIONS`, providers/openai.py, not configurable). "
        "The edge holds each replica to 1,024 connections (`--maxconn`, like HAProxy's) and "
        "queues further callers in order: queued inside a replica they wait unfairly for a "
        "pool connection, and after 10 s (aiohttp's connect timeout, `min(timeout_s, 10)`) "
        "fail as connect errors that open the deployment's breaker, so every call 503s for "
        "the cooldown (measured: 2,048 callers on one replica, 7 s upstream: half the calls 503).",
        f"Ideal rates: jobs {concurrency / sleep_s:g}/s per worker host (concurrency / job "
        f"time); calls {POOL / latency_s:g}/s per replica (pool / upstream latency). A ratio "
        "above 2 means the 1-host run fell further short of its ideal than the 2-host run.",
        "All hosts share this machine's 2 cores: CPU-s shows the headroom left, so the ratio "
        "measures the replicas, not the machine.",
    ]
    section = [f"## Scale-out — {today()}", "", *environment_lines(settings), ""]
    ideal_per_host = {"jobs": concurrency / sleep_s, "requests": POOL / latency_s}
    section += [md_table(header, rows(runs, ideal_per_host)), ""]
    section += [f"- {note}" for note in notes]
    if figures:
        section += ["", "The multi-host suite's proofs (tests/multihost), this run:", ""]
        section += [f"- {line}" for line in figures]
    return "\n".join(section)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--skip-suite", action="store_true", help="do not run tests/multihost")
    parser.add_argument("--no-append", action="store_true", help="print, do not append")
    args = parser.parse_args()
    reason = unusable_reason()
    if reason is not None:
        sys.exit(reason)
    figures = [] if args.skip_suite else run_suite()
    jobs, sleep_s, concurrency = (48, 0.5, 8) if args.quick else (480, 1.0, 16)
    # Two pools' worth of callers (2 x 1,024): the client never caps the 2-replica run.
    latency_s, callers = (2.0, 300) if args.quick else (10.0, 2 * POOL)
    duration_s, warmup_s = (20.0, 6.0) if args.quick else (70.0, 25.0)
    settings = {
        "Jobs": f"{jobs} per run, {sleep_s:g} s each, --concurrency {concurrency} per worker",
        "Requests": f"upstream latency {latency_s:g} s, {callers} callers, "
        f"{duration_s:g} s per run of which {warmup_s:g} s warm-up",
    }
    runs: list[Run] = []
    with running_cluster() as cluster:
        for hosts in (["work1"], ["work1", "work2"]):
            wait_for_quiet(QUIET_LOAD, timeout_s=120)
            runs.append(jobs_run(cluster, hosts, jobs, sleep_s, concurrency))
            print(runs[-1])
        use_workers(cluster, [], concurrency)
        bench_edge(cluster)
        control = {"latency_ms": latency_s * 1000}
        assert cluster.http.post(f"{cluster.upstream}/_control", json=control).status_code == 200
        for replicas in (1, 2):
            time.sleep(3 * latency_s)  # the calls the gateways still hold finish first
            wait_for_quiet(QUIET_LOAD, timeout_s=120)
            runs.append(requests_run(cluster, replicas, callers, latency_s, duration_s, warmup_s))
            print(runs[-1])
    section = report(runs, figures, settings, (concurrency, sleep_s, latency_s))
    print(section)
    if not args.no_append:
        append_results(section)


if __name__ == "__main__":
    main()
