"""Step 8, item 6: the offline demo shows what faas does. A real `faas up` on the offline models
(mock chat, hash embeddings), used as the README tour does: the helpdesk agent searches the
documents or calls the calculator before it answers, and a RAG answer cites its source, with a
confidence that says whether the documents answered the question."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest

from tests.e2e.test_faas_up import faas
from tests.support.faas_process import running_faas

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REFUNDS = "# Refunds\n\nRefunds are paid within 14 days of the return.\n"


@dataclass
class Demo:
    client: httpx.Client
    agent_id: str


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    with running_faas(tmp_path_factory.mktemp("demo")) as up:
        env, url = up.env, up.url
        token = faas("token", "--tenant", "acme", "--user", "ann", env=env)
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
            added = client.post(
                "/api/v1/rag/documents", json={"title": "refunds.md", "content": REFUNDS}
            )
            assert added.status_code == 201, added.text
            agent = client.post(
                "/api/v1/agents", json={"name": "helpdesk", "tools": ["rag_search", "calculator"]}
            )
            assert agent.status_code == 201, agent.text
            yield Demo(client, agent.json()["data"]["id"])


def sse(text: str) -> list[dict[str, Any]]:
    return [
        orjson.loads(line[6:])
        for line in text.splitlines()
        if line.startswith("data: ") and line != "data: [DONE]"
    ]


def steps(demo: Demo, run_id: str) -> list[dict[str, Any]]:
    run = demo.client.get(f"/api/v1/agents/{demo.agent_id}/runs/{run_id}")
    assert run.status_code == 200, run.text
    found: list[dict[str, Any]] = run.json()["data"]["steps"]
    return found


def test_the_agent_searches_the_documents_then_answers(demo: Demo) -> None:
    response = demo.client.post(
        f"/api/v1/agents/{demo.agent_id}/chat",
        json={"message": "How long do refunds take?", "stream": True},
    )
    assert response.status_code == 200, response.text
    events = sse(response.text)
    kinds = [e["type"] for e in events]
    assert "tool_call" in kinds and "tool_result" in kinds and kinds[-1] == "done", kinds
    call = next(e for e in events if e["type"] == "tool_call")
    assert call["name"] == "rag_search"
    assert orjson.loads(call["arguments"]) == {"query": "How long do refunds take?"}
    done = events[-1]
    assert done["status"] == "completed"
    assert done["reply"] == "[mock] rag_search: Refunds are paid within 14 days of the return."

    recorded = steps(demo, done["run_id"])
    assert [(s["type"], s["name"]) for s in recorded] == [
        ("model", None),
        ("tool", "rag_search"),
        ("model", None),
    ]
    assert recorded[0]["tool_calls"][0]["function"]["name"] == "rag_search"
    assert recorded[1]["error"] is None and "14 days" in recorded[1]["result"][0]["text"]
    assert recorded[2]["content"] == done["reply"]


def test_the_agent_calls_the_calculator_for_arithmetic(demo: Demo) -> None:
    response = demo.client.post(
        f"/api/v1/agents/{demo.agent_id}/chat", json={"message": "What is 17 * 23?"}
    )
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["status"] == "completed"
    assert data["reply"] == "[mock] calculator: 17 * 23 = 391."
    tool = [s for s in steps(demo, data["run_id"]) if s["type"] == "tool"]
    assert [(s["name"], s["result"]) for s in tool] == [
        ("calculator", {"expression": "17 * 23", "result": 391})
    ]


def query(demo: Demo, question: str, **extra: Any) -> dict[str, Any]:
    response = demo.client.post("/api/v1/rag/query", json={"query": question, **extra})
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def test_a_rag_answer_cites_the_document_it_came_from(demo: Demo) -> None:
    answer = query(demo, "How long do refunds take?")
    assert answer["answer"] == "[mock] Refunds are paid within 14 days of the return [1]."
    assert answer["citations"][0]["n"] == 1 and answer["citations"][0]["title"] == "refunds.md"
    assert answer["citations"][0]["cited_in_answer"] is True
    assert answer["confidence"] >= 0.8
    assert query(demo, "How long do refunds take?")["answer"] == answer["answer"]  # cached

    streamed = demo.client.post(
        "/api/v1/rag/query", json={"query": "When are refunds paid?", "stream": True}
    )
    done = next(e for e in sse(streamed.text) if e["type"] == "done")
    assert done["answer"].endswith("[1].") and done["citations"][0]["cited_in_answer"] is True
    assert done["confidence"] >= 0.8


def test_a_question_the_documents_do_not_answer_gets_a_low_confidence(demo: Demo) -> None:
    answer = query(demo, "What is the capital of France?", enable_grounding_check=True)
    assert answer["answer"] == "[mock] The sources do not answer this question."
    assert answer["citations"], "the search still returns the nearest chunk"
    assert not any(c["cited_in_answer"] for c in answer["citations"])
    assert answer["confidence"] < 0.2
    assert answer["unsupported_sentences"] == [answer["answer"]]
