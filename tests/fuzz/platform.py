"""A real `faas up` for the fuzz run and the tenant sweep, on the embedded defaults or on the
servers (PostgreSQL with pgvector, Redis, NATS), with one tenant's data seeded in every service.

The seeded data carries a marker string, so a response that shows it to another tenant is a
leak whatever its shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from faas.backends.vectors.pgvector import asyncpg_dsn
from tests.conftest import NATS_URL, REDIS_URL, TEST_SECRET, need_server, token_for
from tests.e2e.test_faas_up import free_port, stop, wait_ready
from tests.support.faas_process import OFFLINE_MODELS
from tests.support.pgvector import pgvector_server, with_database

OWNER = "fuzz-a"
OTHER = "fuzz-b"


@dataclass
class Seeded:
    """What tenant OWNER holds: ids by the path parameter that names them, per path prefix."""

    marker: str
    number: str  # in A's gateway limits
    ids: dict[tuple[str, str], str] = field(default_factory=dict)

    def value_for(self, path: str, param: str) -> str | None:
        """The owner's value for `{param}` in `path` (the longest matching prefix wins)."""
        best: tuple[int, str] | None = None
        for (prefix, name), value in self.ids.items():
            if (
                name == param
                and path.startswith(prefix)
                and (best is None or len(prefix) > best[0])
            ):
                best = (len(prefix), value)
        return best[1] if best else None

    def all_values(self) -> list[str]:
        return sorted(set(self.ids.values()))


@dataclass
class RunningPlatform:
    url: str
    backend: str
    seeded: Seeded
    openapi: dict[str, Any]


def _env(data_dir: Path, extra: dict[str, str]) -> dict[str, str]:
    """The mock chat model and hash embeddings even where `make models` installed local ones:
    the fuzz sends thousands of requests, and a local model answers each in seconds."""
    data_dir.mkdir(parents=True, exist_ok=True)
    routing = data_dir / "models.yaml"
    routing.write_text(OFFLINE_MODELS)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAAS_")}
    faas = {
        "FAAS_DATA_DIR": str(data_dir),
        "FAAS_LOG_REQUESTS": "false",
        "FAAS_JWT_SECRET": TEST_SECRET,
        "FAAS_GATEWAY_MODELS": str(routing),
    }
    return env | faas | extra


@contextlib.contextmanager
def _database(server_url: str) -> Iterator[str]:
    name = f"faas_fuzz_{uuid.uuid4().hex[:10]}"

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(asyncpg_dsn(server_url))
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        yield with_database(server_url, name)
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextlib.contextmanager
def backend_env(backend: str) -> Iterator[dict[str, str]]:
    if backend == "embedded":
        yield {}
        return
    redis = need_server("Redis", REDIS_URL, 6379)
    nats = need_server("NATS", NATS_URL, 4222)
    with pgvector_server() as pg, _database(pg) as database:
        yield {
            "FAAS_DATABASE_URL": database,
            "FAAS_REDIS_URL": redis,
            "FAAS_NATS_URL": nats,
            "FAAS_NATS_PREFIX": f"fuzz{uuid.uuid4().hex[:8]}",
        }


@contextlib.contextmanager
def running_platform(backend: str, data_dir: Path) -> Iterator[RunningPlatform]:
    with backend_env(backend) as extra:
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "faas", "up", "--host", "127.0.0.1", "--port", str(port)],
            env=_env(data_dir, extra),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(url, proc, timeout_s=120)
            with httpx.Client(base_url=url, timeout=60) as client:
                seeded = seed(client)
                openapi = client.get("/openapi.json").json()
            yield RunningPlatform(url, backend, seeded, openapi)
        finally:
            stop(proc)


def headers(tenant: str, *, user: str = "ann", admin: bool = False) -> dict[str, str]:
    scopes = ["admin"] if admin else []
    return {"Authorization": f"Bearer {token_for(tenant, user, scopes=scopes)}"}


def _data(response: httpx.Response) -> Any:
    assert response.status_code < 300, f"seeding failed: {response.status_code} {response.text}"
    return response.json()["data"]


def _wait_job(client: httpx.Client, job_id: str, auth: dict[str, str]) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        job = _data(client.get(f"/api/v1/jobs/{job_id}", headers=auth))
        if job["status"] in ("succeeded", "failed", "cancelled"):
            assert job["status"] == "succeeded", job
            return dict(job)
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish")


def seed(client: httpx.Client) -> Seeded:
    """One of everything, owned by tenant OWNER, each holding the marker."""
    suffix = uuid.uuid4().hex[:8]
    marker = f"MARK{suffix}"
    number = str(700_001 + int(suffix, 16) % 200_000)
    auth = headers(OWNER)
    s = Seeded(marker, number)
    ids = s.ids

    _data(
        client.post(
            "/api/v1/cache",
            headers=auth,
            json={"key": f"seed-key-{suffix}", "value": {"m": marker}},
        )
    )
    ids["/api/v1/cache", "key"] = f"seed-key-{suffix}"

    _data(client.post("/api/v1/rag/collections", headers=auth, json={"name": f"seedcol{suffix}"}))
    ids["/api/v1/rag/collections", "name"] = f"seedcol{suffix}"
    doc = _data(
        client.post(
            "/api/v1/rag/documents",
            headers=auth,
            json={
                "title": marker,
                "content": f"Refunds take 14 days. {marker}",
                "collection": f"seedcol{suffix}",
            },
        )
    )
    ids["/api/v1/rag/documents", "document_id"] = doc["document_id"]

    _data(
        client.post(
            "/api/v1/agents/tools",
            headers=auth,
            json={
                "name": f"seedtool{suffix}",
                "description": marker,
                "kind": "expression",
                "expression": "a + b",
                "parameters": {
                    "type": "object",
                    "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
                    "required": ["a", "b"],
                },
            },
        )
    )
    ids["/api/v1/agents/tools", "name"] = f"seedtool{suffix}"
    _data(
        client.post(
            "/api/v1/agents/mcp-servers",
            headers=headers(OWNER, admin=True),
            json={
                "name": f"seedmcp{suffix}",
                "url": f"https://mcp.example.com/{marker}",
                "headers": {"Authorization": f"Bearer {marker}"},
            },
        )
    )
    ids["/api/v1/agents/mcp-servers", "name"] = f"seedmcp{suffix}"
    agent = _data(
        client.post(
            "/api/v1/agents",
            headers=auth,
            json={"name": f"seedagent{suffix}", "description": marker, "tools": ["calculator"]},
        )
    )
    ids["/api/v1/agents", "agent_id"] = agent["id"]
    chat = _data(
        client.post(
            f"/api/v1/agents/{agent['id']}/chat", headers=auth, json={"message": f"hi {marker}"}
        )
    )
    ids["/api/v1/agents", "session_id"] = chat["session_id"]
    ids["/api/v1/agents", "run_id"] = chat["run_id"]
    memory = _data(
        client.post(f"/api/v1/agents/{agent['id']}/memory", headers=auth, json={"text": marker})
    )
    ids["/api/v1/agents", "memory_id"] = memory["id"]

    _data(
        client.post(
            "/api/v1/prompts/templates",
            headers=auth,
            json={
                "name": f"seedtpl{suffix}",
                "content": f"{marker} {{{{ name }}}}",
                "labels": ["production"],
            },
        )
    )
    ids["/api/v1/prompts/templates", "name"] = f"seedtpl{suffix}"

    rows = "hours,slept,passed\n" + "".join(
        f"{h},{s},{'yes' if h > 5 else 'no'}\n" for h in range(1, 11) for s in (4, 8)
    )
    dataset = _data(
        client.post(
            "/api/v1/ml/datasets",
            headers=auth,
            data={"name": marker.lower()},
            files={"file": ("exams.csv", rows.encode(), "text/csv")},
        )
    )
    ids["/api/v1/ml/datasets", "dataset_id"] = dataset["id"]
    train = _data(
        client.post(
            "/api/v1/ml/models/train",
            headers=auth,
            json={
                "name": f"seedmodel{suffix}",
                "task": "classification",
                "algorithm": "logistic_regression",
                "target": "passed",
                "dataset_id": dataset["id"],
            },
        )
    )
    _wait_job(client, train["job_id"], auth)
    ids["/api/v1/ml/models", "name"] = f"seedmodel{suffix}"
    ids["/v2/models", "name"] = f"seedmodel{suffix}"
    ids["/api/v1/jobs", "job_id"] = train["job_id"]

    upload = _data(
        client.post(
            "/api/v1/ingestion/upload",
            headers=auth,
            files={"files": ("seed.md", f"# Seed\n\n{marker}\n".encode(), "text/markdown")},
        )
    )
    file_info = upload["files"][0]
    _wait_job(client, file_info["job_id"], auth)
    ids["/api/v1/ingestion/files", "file_id"] = file_info["file_id"]

    _data(
        client.post(
            "/api/v1/llmops/operations",
            headers=auth,
            json={
                "model": "seed-model",
                "provider": "openai",
                "prompt_tokens": 10,
                "completion_tokens": 5,
                "cost_usd": 0.001,
                "latency_ms": 10,
                "agent_id": marker,
            },
        )
    )
    _data(
        client.post(
            "/api/v1/prompt/permissions",
            headers=headers(OWNER, admin=True),
            json={
                "resource_type": "agent",
                "resource_id": agent["id"],
                "user_id": marker,
                "permission": "read",
                "action": "grant",
            },
        )
    )
    ids["/api/v1/prompt", "resource_id"] = agent["id"]
    ids["/api/v1/prompt", "plural"] = "agents"
    stored = client.post(
        "/v1/responses",
        headers=auth,
        json={"model": "chat-default", "input": f"remember {marker}", "metadata": {"m": marker}},
    )
    assert stored.status_code == 200, f"seeding failed: {stored.status_code} {stored.text}"
    ids["/v1/responses", "response_id"] = stored.json()["id"]
    _data(
        client.put(
            f"/api/v1/gateway/limits/{OWNER}",
            headers=headers(OWNER, admin=True),
            json={"rpm": int(number)},
        )
    )
    ids["/api/v1/gateway/limits", "tenant_id"] = OWNER
    key = _data(
        client.post(
            "/api/v1/keys",
            headers=headers(OWNER, admin=True),
            json={"name": f"seedkey{suffix}", "metadata": {"m": marker}},
        )
    )
    ids["/api/v1/keys", "key_id"] = key["id"]
    team = _data(
        client.post(
            "/api/v1/teams",
            headers=headers(OWNER, admin=True),
            json={"name": f"seedteam{suffix}", "metadata": {"m": marker}},
        )
    )
    ids["/api/v1/teams", "team_id"] = team["id"]
    return s
