"""`faas up --split` with every service, on embedded defaults (one SQLite file in the data dir,
an in-memory cache and an in-process bus per process): each child answers on its own port, and
the paths that cross services go over real HTTP between processes. Jobs run in the process of
the service that submitted them and are readable from any process (the job table is shared).

Nine children importing their stacks on two cores took ~34 s to be ready; the wait allows 3x.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from faas.services import DEFAULT_PORTS, SERVICE_NAMES
from tests.e2e.test_agent_split import port_block
from tests.e2e.test_faas_up import faas, faas_env, stop, wait_ready
from tests.support.faas_process import OFFLINE_MODELS

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(360)]

READY_TIMEOUT_S = 100
NOTES = b"# Launch notes\n\nThe launch code name is BLUEBIRD. Lift-off is at dawn from pad 39A.\n"


class Split:
    def __init__(self, tmp_path: Path) -> None:
        (tmp_path / "models.yaml").write_text(OFFLINE_MODELS)
        self.env = faas_env(tmp_path / "data") | {
            "FAAS_GATEWAY_MODELS": str(tmp_path / "models.yaml")
        }
        offset = port_block()
        self.urls = {n: f"http://127.0.0.1:{DEFAULT_PORTS[n] + offset}" for n in SERVICE_NAMES}
        self.log = tmp_path / "faas.log"
        with self.log.open("wb") as sink:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "faas", "up", "--split", "--port-offset", str(offset)],
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=sink,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]

    def wait_ready(self) -> None:
        started = time.monotonic()
        for name, url in self.urls.items():
            left = READY_TIMEOUT_S - (time.monotonic() - started)
            try:
                wait_ready(url, self.proc, timeout_s=max(1.0, left))
            except AssertionError as exc:
                raise AssertionError(f"{name}: {exc}\n{self.output()}") from None

    def client(self, name: str, token: str) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"}
        return httpx.Client(base_url=self.urls[name], headers=headers, timeout=30)


@pytest.fixture
def split(tmp_path: Path) -> Iterator[Split]:
    running = Split(tmp_path)
    try:
        yield running
    finally:
        code = stop(running.proc)
        assert code == 0, f"the supervisor exited with {code}\n{running.output()}"


def data(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, (response.request.url, response.text)
    return response.json()["data"]


def wait_job(http: httpx.Client, job_id: str, timeout_s: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        job: dict[str, Any] = data(http.get(f"/api/v1/jobs/{job_id}"))
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.2)


def test_every_service_runs_in_its_own_process_and_they_reach_each_other(split: Split) -> None:
    split.wait_ready()
    for name, url in split.urls.items():
        ready = httpx.get(f"{url}/readyz").json()
        assert ready["services"] == [name] and ready["status"] == "ready", ready
        assert ready["backends"] == {"database": "sqlite", "kv": "memory", "bus": "inprocess"}
    token = faas("token", "--tenant", "acme", "--user", "ann", env=split.env)
    admin = faas("token", "--tenant", "acme", "--user", "ann", "--scope", "admin", env=split.env)
    http = {name: split.client(name, token) for name in SERVICE_NAMES}
    try:
        # gateway and cache on their own
        chat = http["gateway"].post(
            "/v1/chat/completions",
            json={"model": "chat-default", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert chat.status_code == 200, chat.text
        assert chat.json()["choices"][0]["message"]["content"].startswith("[mock]")
        data(http["cache"].post("/api/v1/cache", json={"key": "k", "value": 1}), 201)
        assert data(http["cache"].get("/api/v1/cache/k"))["value"] == 1

        # prompt: a versioned template rendered
        template = {"name": "greet", "content": "Hello {{ name }}!", "labels": ["production"]}
        data(http["prompt"].post("/api/v1/prompts/templates", json=template), 201)
        rendered = data(
            http["prompt"].post(
                "/api/v1/prompts/render", json={"name": "greet", "variables": {"name": "Ada"}}
            )
        )
        assert rendered["rendered"] == "Hello Ada!"

        # ingestion (a job in the ingestion process) → rag → gateway, over HTTP; the job is
        # read back from another process
        upload = http["ingestion"].post(
            "/api/v1/ingestion/upload", files={"files": ("launch.md", NOTES, "text/markdown")}
        )
        accepted = data(upload, 202)["files"][0]
        job = wait_job(http["cache"], accepted["job_id"])
        assert job["status"] == "succeeded" and job["kind"] == "ingestion.process_file", job
        document_id = job["result"]["document_id"]
        file = data(http["ingestion"].get(f"/api/v1/ingestion/files/{accepted['file_id']}"))
        assert file["status"] == "indexed" and file["document_id"] == document_id, file

        # rag → gateway (embeddings and chat), over HTTP
        answer = data(http["rag"].post("/api/v1/rag/query", json={"query": "launch code name"}))
        assert answer["answer"].startswith("[mock]")
        assert [c["document_id"] for c in answer["citations"]][:1] == [document_id]

        # agent → prompt (system template) and gateway, in a request and in a job
        agent = data(
            http["agent"].post("/api/v1/agents", json={"name": "helper", "tools": ["rag_search"]}),
            201,
        )
        reply = data(
            http["agent"].post(f"/api/v1/agents/{agent['id']}/chat", json={"message": "hi"})
        )
        assert reply["reply"].startswith("[mock]")
        execute = http["agent"].post(
            f"/api/v1/agents/{agent['id']}/execute", json={"task": "say hi", "async": True}
        )
        run = wait_job(http["llmops"], data(execute, 202)["job_id"])
        assert run["status"] == "succeeded" and run["kind"] == "agent.execute", run

        # ml: a training job in the ml process, then a prediction
        csv = "a,y\n" + "".join(f"{a},{2 * a + 1}\n" for a in range(12))
        dataset = data(
            http["ml"].post("/api/v1/ml/datasets", files={"file": ("d.csv", csv, "text/csv")}),
            201,
        )
        train = http["ml"].post(
            "/api/v1/ml/models/train",
            json={
                "name": "line",
                "task": "regression",
                "algorithm": "linear",
                "target": "y",
                "dataset_id": dataset["id"],
            },
        )
        trained = wait_job(http["gateway"], data(train, 202)["job_id"])
        assert trained["status"] == "succeeded", trained
        predicted = data(
            http["ml"].post("/api/v1/ml/models/line/predict", json={"features": {"a": 20}})
        )
        assert abs(predicted["predictions"][0] - 41) < 0.01

        # llmops: an operation logged and measured. (Gateway usage events do not reach it
        # here: without FAAS_NATS_URL each process has its own in-process bus.)
        operation = {"model": "gpt-4o-mini", "prompt_tokens": 10, "cost_usd": 0.5}
        data(http["llmops"].post("/api/v1/llmops/operations", json=operation), 201)
        metrics = data(http["llmops"].get("/api/v1/llmops/metrics", params={"group_by": "model"}))
        assert {s["key"]: s["count"] for s in metrics["series"]}["gpt-4o-mini"] == 1

        # prompt generator → agent (tools) and gateway: the mock model writes no valid spec
        generated = http["prompt_generator"].post(
            "/api/v1/prompt/agents", json={"prompt": "an agent that answers from our documents"}
        )
        assert generated.status_code == 422, generated.text
        error = generated.json()["error"]
        assert (
            error["code"] == "validation_failed" and "rag_search" in error["details"]["known_tools"]
        ), error
        grant = {
            "resource_type": "agent",
            "resource_id": agent["id"],
            "user_id": "bob",
            "permission": "read",
            "action": "grant",
        }
        with split.client("prompt_generator", admin) as as_admin:
            granted = data(as_admin.post("/api/v1/prompt/permissions", json=grant))
        assert [g["user_id"] for g in granted["grants"]] == ["bob"]
        missing = {**grant, "resource_id": "no-such-agent"}
        with split.client("prompt_generator", admin) as as_admin:
            assert as_admin.post("/api/v1/prompt/permissions", json=missing).status_code == 404
    finally:
        for client in http.values():
            client.close()
