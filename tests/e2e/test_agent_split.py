"""The agent story under `faas up --split`: a user uploads a document to the ingestion process,
creates an agent with `rag_search` on the agent process, chats with it over SSE and reads back
the steps it took. The agent reaches RAG, and RAG (and ingestion) the gateway, over HTTP between
separate processes; the gateway talks to the mock upstream running as its own process."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.e2e.test_faas_up import faas, faas_env, free_port
from tests.e2e.test_gateway_e2e import Process, control
from tests.support.mock_upstream import upstream_process

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SERVICES = {  # service -> default port (8001 + its index); ml, llmops, ... are not started
    "gateway": 8001,
    "cache": 8002,
    "rag": 8003,
    "agent": 8004,
    "prompt": 8005,
    "ingestion": 8007,
}
NOTES = (
    b"# Launch notes\n\n"
    b"The launch code name is BLUEBIRD. The rocket lifts off from pad 39A at dawn.\n"
)
ANSWER = "The launch code name is BLUEBIRD."


def port_block() -> int:
    """An offset K with 8001+K .. 8009+K all free (every port `--split` could use)."""
    for _ in range(100):
        first = free_port()
        if first + 9 > 65535:
            continue
        try:
            for port in range(first, first + 9):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return first - 8001
    raise AssertionError("no block of nine free ports")


@pytest.fixture
def upstream() -> Iterator[str]:
    with upstream_process() as url:
        yield url


def routing_file(path: Path, upstream_url: str) -> Path:
    path.write_text(
        "models:\n"
        "  - name: chat-default\n"
        "    deployments:\n"
        "      - provider: openai\n"
        "        model: mock-model\n"
        f"        api_base: {upstream_url}/v1\n"
        "        api_key: sk-up\n"
        "        timeout_s: 10\n"
        "  - name: embed-default\n"
        "    kind: embedding\n"
        "    deployments:\n"
        "      - provider: hash\n"
    )
    return path


def tool_call(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "c1",
                "type": "function",
                "function": {"name": name, "arguments": orjson.dumps(arguments).decode()},
            }
        ],
    }


def wait_indexed(
    http: httpx.Client, file_id: str, headers: dict[str, str], timeout_s: float = 30
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = http.get(f"/api/v1/ingestion/files/{file_id}", headers=headers)
        assert response.status_code == 200, response.text
        last = response.json()["data"]
        if last["status"] == "indexed":
            return last
        time.sleep(0.1)
    raise AssertionError(f"file {file_id} not indexed within {timeout_s}s (last: {last!r})")


def test_agent_with_rag_search_over_uploaded_notes_streams_in_split_mode(
    upstream: str, tmp_path: Path
) -> None:
    env = faas_env(tmp_path / "data") | {"FAAS_SERVICES": ",".join(SERVICES)}
    env["FAAS_GATEWAY_MODELS"] = str(routing_file(tmp_path / "models.yaml", upstream))
    offset = port_block()
    urls = {name: f"http://127.0.0.1:{port + offset}" for name, port in SERVICES.items()}
    proc = Process(env, tmp_path / "faas.log", "--split", "--port-offset", str(offset))
    try:
        for name, url in urls.items():
            proc.wait_ready(url)
            assert httpx.get(f"{url}/readyz").json()["services"] == [name]
        headers = {"Authorization": f"Bearer {faas('token', '--tenant', 'acme', env=env)}"}

        # 1. Upload a markdown file to the ingestion process; it reaches RAG and the gateway.
        with httpx.Client(base_url=urls["ingestion"], timeout=30) as ingestion:
            uploaded = ingestion.post(
                "/api/v1/ingestion/upload",
                files={"files": ("launch.md", NOTES, "text/markdown")},
                headers=headers,
            )
            assert uploaded.status_code == 202, uploaded.text
            accepted = uploaded.json()["data"]["files"][0]
            indexed = wait_indexed(ingestion, accepted["file_id"], headers)
            assert indexed["chunks"] and indexed["document_id"], indexed

        with httpx.Client(base_url=urls["agent"], timeout=30) as agents:
            # 2. An agent with rag_search, on the agent process.
            spec = {"name": "launcher", "tools": ["rag_search"]}
            created = agents.post("/api/v1/agents", json=spec, headers=headers)
            assert created.status_code == 201, created.text
            agent_id = created.json()["data"]["id"]

            # 3. Chat with it, streaming: the model searches, then answers.
            control(
                upstream,
                script=[
                    tool_call("rag_search", {"query": "launch code name"}),
                    {"role": "assistant", "content": ANSWER},
                ],
            )
            events: list[dict[str, Any]] = []
            with agents.stream(
                "POST",
                f"/api/v1/agents/{agent_id}/chat",
                json={"message": "What is the launch code name?", "stream": True},
                headers=headers,
            ) as response:
                assert response.status_code == 200, response.read()
                assert response.headers["content-type"].startswith("text/event-stream")
                for line in response.iter_lines():
                    if line.startswith("data: ") and line != "data: [DONE]":
                        events.append(orjson.loads(line[6:]))
            kinds = [e["type"] for e in events]
            assert "error" not in kinds, events
            assert kinds.index("tool_call") < kinds.index("tool_result") < kinds.index("token")
            result = next(e for e in events if e["type"] == "tool_result")
            assert "BLUEBIRD" in orjson.dumps(result).decode(), result
            tokens = "".join(e["content"] for e in events if e["type"] == "token")
            assert tokens == ANSWER
            done = events[-1]
            assert done["type"] == "done" and done["reply"] == ANSWER, done
            assert done["status"] == "completed"

            # 4. The run shows the steps it took.
            run = agents.get(f"/api/v1/agents/{agent_id}/runs/{done['run_id']}", headers=headers)
            assert run.status_code == 200, run.text
            steps = run.json()["data"]["steps"]
            assert [(s["type"], s.get("name")) for s in steps] == [
                ("model", None),
                ("tool", "rag_search"),
                ("model", None),
            ]
            assert "BLUEBIRD" in orjson.dumps(steps[1]["result"]).decode()
            assert not steps[1].get("error")
    finally:
        proc.stop()
