"""Any request works through either replica: state lives in PostgreSQL, pgvector and Redis, not
in an app process, and an upload stored on app1 is processed on a work host."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from tests.multihost.client import token, wait_for
from tests.multihost.cluster import Cluster

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(300)]


def data(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()["data"]


def test_a_document_written_through_app1_is_found_through_app2(cluster: Cluster) -> None:
    headers = token(f"rag-{uuid.uuid4().hex[:8]}")
    body = {"title": "Harbour notes", "content": "The ferry to Harwich leaves from quay 3."}
    written = data(
        cluster.http.post(
            f"{cluster.url('app1', 'rag')}/api/v1/rag/documents", json=body, headers=headers
        ),
        201,
    )
    started = time.monotonic()
    query = {"query_text": "ferry Harwich quay", "top_k": 3}
    found = data(
        cluster.http.post(
            f"{cluster.url('app2', 'rag')}/api/v1/rag/search", json=query, headers=headers
        )
    )
    assert written["document_id"] in [hit["document_id"] for hit in found["results"]]
    listed = data(
        cluster.http.get(f"{cluster.url('app2', 'rag')}/api/v1/rag/documents", headers=headers)
    )
    assert listed["total"] == 1
    cluster.record(
        f"replicas: document written on app1, found on app2 "
        f"({(time.monotonic() - started) * 1000:.0f} ms for the search)"
    )


def test_an_agent_session_started_on_app1_continues_on_app2(cluster: Cluster) -> None:
    headers = token(f"agent-{uuid.uuid4().hex[:8]}")
    app1, app2 = cluster.url("app1", "agent"), cluster.url("app2", "agent")
    agent = data(
        cluster.http.post(
            f"{app1}/api/v1/agents", json={"name": "ferry", "model": "metered"}, headers=headers
        ),
        201,
    )
    chat = f"/api/v1/agents/{agent['id']}/chat"
    first = data(cluster.http.post(app1 + chat, json={"message": "I am Ada."}, headers=headers))
    second = data(
        cluster.http.post(
            app2 + chat,
            json={"message": "What is my name?", "session_id": first["session_id"]},
            headers=headers,
        )
    )
    assert second["session_id"] == first["session_id"]
    # The model called for the second turn (from app2) was sent the first turn's messages.
    sent = cluster.http.get(f"{cluster.upstream}/_stats").json()["last_body"]["messages"]
    assert "I am Ada." in [m.get("content") for m in sent]
    history = data(
        cluster.http.get(
            f"{app2}/api/v1/agents/{agent['id']}/sessions/{first['session_id']}", headers=headers
        )
    )
    assert [m["role"] for m in history] == ["user", "assistant"] * 2
    assert [m["content"] for m in history if m["role"] == "user"] == [
        "I am Ada.",
        "What is my name?",
    ]
    cluster.record("replicas: agent session started on app1 continued on app2 with its history")


def test_a_file_uploaded_to_app1_is_indexed_by_a_work_host_and_searchable_on_app2(
    cluster: Cluster,
) -> None:
    headers = token(f"upload-{uuid.uuid4().hex[:8]}")
    notes = b"# Launch\n\nThe launch code name is BLUEBIRD, lifting off from pad 39A.\n"
    started = time.monotonic()
    uploaded = data(
        cluster.http.post(
            f"{cluster.url('app1', 'ingestion')}/api/v1/ingestion/upload",
            files={"files": ("launch.md", notes, "text/markdown")},
            headers=headers,
        ),
        202,
    )
    file_id = uploaded["files"][0]["file_id"]
    status_url = f"{cluster.url('app2', 'ingestion')}/api/v1/ingestion/files/{file_id}"

    def indexed() -> bool:
        return bool(data(cluster.http.get(status_url, headers=headers))["status"] == "indexed")

    wait_for("the upload indexed", indexed, 60, cluster.worker_logs.get("work1"))
    took = time.monotonic() - started
    query = {"query_text": "launch code name", "top_k": 3, "mode": "keyword"}
    found = data(
        cluster.http.post(
            f"{cluster.url('app2', 'rag')}/api/v1/rag/search", json=query, headers=headers
        )
    )
    assert any("BLUEBIRD" in hit["text"] for hit in found["results"]), found
    cluster.record(f"replicas: upload on app1 indexed by a work host in {took:.1f} s")
