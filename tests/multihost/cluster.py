"""faas deployed across the hosts of `netns.Network`, the way a cluster runs it:

    infra   PostgreSQL+pgvector, Redis, NATS JetStream (its second address), `faas serve llmops`
    svc     `faas serve prompt`, and a mock OpenAI upstream
    app1/2  `faas serve` gateway, rag, agent, ingestion (two replicas, the same settings)
    edge    a round-robin TCP proxy per service port in front of app1 and app2
    work1/2 `faas worker` (ingestion and the test job kinds)
    client  where the test's HTTP calls come from

Every faas process shares one FAAS_DATA_DIR: it stands for the shared volume a real
deployment needs, since an upload stored by ingestion on an app host is read by a worker on
another host. Apps run no job worker (FAAS_RUN_WORKER=false): jobs run on the work hosts.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

from faas.services import REGISTRY
from tests.conftest import TEST_SECRET
from tests.multihost.client import ClientHttp, token, wait_for
from tests.multihost.infra import (
    NATS_PORT,
    PG_PORT,
    REDIS_PORT,
    start_nats,
    start_postgres,
    start_redis,
    stop_postgres,
)
from tests.multihost.netns import Host, NamespaceThread, Network
from tests.multihost.submit import SUBMITTER
from tests.support.faas_process import OFFLINE_MODELS

ROOT = Path(__file__).resolve().parents[2]
SUBNET = "10.77.0"
HOSTS: dict[str, str | tuple[str, ...]] = {
    "infra": ("2", "3"),  # .3 is NATS alone, so a test can cut one host from NATS only
    "svc": "4",
    "app1": "11",
    "app2": "12",
    "edge": "20",
    "work1": "31",
    "work2": "32",
    "client": "40",
}
APP_SERVICES = ("gateway", "rag", "agent", "ingestion")
PORTS = {name: REGISTRY.port(name) for name in (*APP_SERVICES, "prompt", "llmops")}
UPSTREAM_PORT = 9100
# The agent's calls to other services: short timeout, a breaker that opens after two
# failures and tries again two seconds later, so the breaker proof takes seconds; and no reuse
# of its system prompt's render, so that every chat turn calls the prompt service on `svc`
# (the proof cuts that host off; with the default 5 s reuse the turns right after a first
# one would not notice).
AGENT_CLIENT = {
    "FAAS_CLIENT_TIMEOUT_S": "1",
    "FAAS_BREAKER_FAILURES": "2",
    "FAAS_BREAKER_COOLDOWN_S": "2",
    "FAAS_PROMPT_CLIENT_CACHE_TTL_S": "0",
}
JOB_ACK_WAIT_S = 3
TERMINAL_JOB_STATES = ("succeeded", "failed", "cancelled")
PAGE = 200  # the API's largest page


def routing_file(upstream: str) -> str:
    """The offline models, plus `metered`: the svc host's mock upstream at a known price (only
    output tokens are billed, and it always reports 400 of them, its deployment's maximum: what
    admission reserves is what the call then costs)."""
    return (
        OFFLINE_MODELS
        + f"""\
  - name: metered
    deployments:
      - provider: openai
        model: mock-model
        api_base: {upstream}/v1
        api_key: sk-up
        timeout_s: 60
        max_output_tokens: 400
        price: {{input_per_1k: 0.0, output_per_1k: 0.1}}
"""
    )


@dataclass
class Cluster:
    net: Network
    base: Path
    http: ClientHttp
    env: dict[str, str]
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    worker_logs: dict[str, Path] = field(default_factory=dict)
    postgres: subprocess.Popen[bytes] | None = None
    figures: list[str] = field(default_factory=list)

    def __getitem__(self, host: str) -> Host:
        return self.net[host]

    def url(self, host: str, service: str) -> str:
        return f"http://{self.net[host].address}:{PORTS[service]}"

    @property
    def nats_address(self) -> str:
        return self.net["infra"].extra_addresses[0]

    @property
    def upstream(self) -> str:
        return f"http://{self.net['svc'].address}:{UPSTREAM_PORT}"

    @property
    def data_dir(self) -> Path:
        return Path(self.env["FAAS_DATA_DIR"])

    def record(self, line: str) -> None:
        """A figure for the suite's summary (and FAAS_MULTIHOST_REPORT)."""
        self.figures.append(line)
        print(line)

    def faas(self, host: str, args: list[str], name: str, **extra: str) -> subprocess.Popen[bytes]:
        """`faas ARGS` on `host`, with the cluster's settings plus `extra`."""
        return self.net[host].popen(
            [sys.executable, "-m", "faas", *args],
            env=self.env | extra,
            log=self.log(name),
            cwd=ROOT,
        )

    def log(self, name: str) -> Path:
        return self.base / "logs" / f"{name}.log"

    def serve(self, host: str, service: str, **extra: str) -> None:
        address = self.net[host].address
        self.faas(host, ["serve", service, "--host", address], f"{host}-{service}", **extra)

    def start_worker(self, host: str, concurrency: int = 4) -> subprocess.Popen[bytes]:
        name = f"{host}-worker-{len(self.net[host].processes)}"
        proc = self.faas(
            host,
            ["worker", "--concurrency", str(concurrency)],
            name,
            FAAS_SERVICES="ingestion",
            FAAS_RAG_URL=f"http://{self.net['edge'].address}:{PORTS['rag']}",
            FAAS_JOB_MODULES="tests.jobkinds",
        )
        self.workers[host] = proc
        self.worker_logs[host] = self.log(name)
        return proc

    def wait_worker(self, host: str, timeout_s: float = 90) -> None:
        proc, log = self.workers[host], self.worker_logs[host]
        wait_for(
            f"the worker on {host}",
            lambda: proc.poll() is None and "consuming" in log.read_text(errors="replace"),
            timeout_s,
            log,
        )

    def wait_ready(self, host: str, service: str, timeout_s: float = 120) -> None:
        url = f"{self.url(host, service)}/readyz"

        def ready() -> bool:
            try:
                return self.http.get(url, timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(f"{service} on {host}", ready, timeout_s, self.log(f"{host}-{service}"))

    def submit(self, host: str, kind: str, count: int, payload: dict[str, Any]) -> list[str]:
        """`count` jobs submitted from `host` (a process there, as a service would)."""
        done = subprocess.run(
            [
                *self.net[host].enter(),
                *(sys.executable, "-m", "tests.multihost.submit", kind, str(count)),
                orjson.dumps(payload).decode(),
            ],
            env=self.env | {"FAAS_JOB_MODULES": "tests.jobkinds"},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        ids: list[str] = orjson.loads(done.stdout.strip().splitlines()[-1])
        return ids

    def finished_jobs(self, job_ids: list[str], timeout_s: float) -> list[dict[str, Any]]:
        """The views of jobs submitted with `submit`, once all are finished (read from app1,
        one list call per poll)."""
        url = f"{self.url('app1', 'ingestion')}/api/v1/jobs"
        wanted = set(job_ids)
        views: dict[str, dict[str, Any]] = {}

        def all_done() -> bool:
            offset, items = 0, None
            while items is None or len(items) == PAGE:
                params = {"limit": PAGE, "offset": offset}
                page = self.http.get(url, params=params, headers=token(SUBMITTER.tenant_id))
                assert page.status_code == 200, page.text
                items = page.json()["data"]["items"]
                for view in items:
                    if view["job_id"] in wanted and view["status"] in TERMINAL_JOB_STATES:
                        views[view["job_id"]] = view
                offset += PAGE
            return len(views) == len(wanted)

        wait_for(f"{len(wanted)} jobs", all_done, timeout_s, interval_s=0.25)
        return [views[job_id] for job_id in job_ids]


def base_env(data_dir: Path, infra: str, nats: str, routing: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAAS_")}
    return env | {
        "PYTHONPATH": str(ROOT),
        "FAAS_DATA_DIR": str(data_dir),
        "FAAS_DATABASE_URL": f"postgresql+asyncpg://postgres@{infra}:{PG_PORT}/postgres",
        "FAAS_VECTOR_URL": f"postgresql://postgres@{infra}:{PG_PORT}/postgres",
        "FAAS_REDIS_URL": f"redis://{infra}:{REDIS_PORT}/0",
        "FAAS_NATS_URL": f"nats://{nats}:{NATS_PORT}",
        "FAAS_JWT_SECRET": TEST_SECRET,
        "FAAS_GATEWAY_MODELS": str(routing),
        "FAAS_MIGRATE_ON_START": "false",
        "FAAS_RUN_WORKER": "false",
        "FAAS_LOG_REQUESTS": "false",
        "FAAS_JOB_ACK_WAIT_S": str(JOB_ACK_WAIT_S),
    }


def start_infra(cluster: Cluster) -> None:
    infra = cluster["infra"]
    cluster.postgres = start_postgres(infra, cluster.base, f"{SUBNET}.0/24")
    start_redis(infra, cluster.base)
    start_nats(infra, cluster.nats_address, cluster.base)
    for address, port in [
        (infra.address, PG_PORT),
        (infra.address, REDIS_PORT),
        (cluster.nats_address, NATS_PORT),
    ]:
        wait_for(f"{address}:{port}", lambda: cluster.http.reachable(address, port), 60)  # noqa: B023
    migrated = subprocess.run(
        [*infra.enter(), sys.executable, "-m", "faas", "migrate"],
        env=cluster.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert migrated.returncode == 0, migrated.stderr[-3000:]


def start_services(cluster: Cluster) -> None:
    """Everything after infra, started at once (start-up is CPU-bound: ~3 s each), then
    waited for."""
    edge, svc = cluster["edge"].address, cluster["svc"].address
    cluster.serve("infra", "llmops")
    cluster.serve("svc", "prompt", FAAS_GATEWAY_URL=f"http://{edge}:{PORTS['gateway']}")
    cluster["svc"].popen(
        [
            sys.executable,
            "-m",
            "tests.support.mock_upstream",
            "--host",
            svc,
            "--port",
            str(UPSTREAM_PORT),
        ],
        env=cluster.env,
        log=cluster.log("svc-upstream"),
        cwd=ROOT,
    )
    apps = [cluster[h].address for h in ("app1", "app2")]
    routes = [f"{PORTS[s]}=" + ",".join(f"{a}:{PORTS[s]}" for a in apps) for s in APP_SERVICES]
    cluster["edge"].popen(
        [sys.executable, "-m", "tests.multihost.proxy", edge, *routes],
        env=cluster.env,
        log=cluster.log("edge-proxy"),
        cwd=ROOT,
    )
    for host in ("app1", "app2"):
        own = cluster[host].address
        local = {
            "FAAS_GATEWAY_URL": f"http://{own}:{PORTS['gateway']}",
            "FAAS_RAG_URL": f"http://{own}:{PORTS['rag']}",
            "FAAS_PROMPT_URL": f"http://{svc}:{PORTS['prompt']}",
        }
        for service in APP_SERVICES:
            extra = local | (AGENT_CLIENT if service == "agent" else {})
            cluster.serve(host, service, **extra)
    for host in ("work1", "work2"):
        cluster.start_worker(host)
    cluster.wait_ready("infra", "llmops")
    cluster.wait_ready("svc", "prompt")
    for host in ("app1", "app2"):
        for service in APP_SERVICES:
            cluster.wait_ready(host, service)
    for host in ("work1", "work2"):
        cluster.wait_worker(host)
    wait_for("the mock upstream", lambda: cluster.http.reachable(svc, UPSTREAM_PORT), 30)
    wait_for("the edge", lambda: cluster.http.reachable(edge, PORTS["gateway"]), 30)


@contextlib.contextmanager
def running_cluster() -> Iterator[Cluster]:
    """The whole deployment; torn down (processes killed, namespaces deleted) even on failure."""
    net = Network(HOSTS, subnet=SUBNET)
    # Not pytest's tmp dirs (0700): PostgreSQL runs as another user and must enter this one.
    base = Path(tempfile.mkdtemp(prefix="faas-multihost-"))
    base.chmod(0o755)
    (base / "logs").mkdir()
    http: ClientHttp | None = None
    cluster: Cluster | None = None
    try:
        net.build()
        http = ClientHttp(NamespaceThread(net["client"]))
        routing = base / "models.yaml"
        upstream = f"http://{net['svc'].address}:{UPSTREAM_PORT}"
        routing.write_text(routing_file(upstream))
        nats = net["infra"].extra_addresses[0]
        env = base_env(base / "shared-data", net["infra"].address, nats, routing)
        cluster = Cluster(net, base, http, env)
        start_infra(cluster)
        start_services(cluster)
        yield cluster
    finally:
        if http is not None:
            http.close()
        for host in net.hosts.values():
            if host.name != "infra":
                host.kill_all()  # the clients first: PostgreSQL then stops at once
        if cluster is not None and cluster.postgres is not None:
            stop_postgres(cluster.postgres)
        net.teardown()
        if os.environ.get("FAAS_MULTIHOST_KEEP_LOGS") != "1":
            shutil.rmtree(base, ignore_errors=True)
