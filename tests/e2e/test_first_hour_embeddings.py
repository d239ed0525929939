"""Step 8, item 7 as a user meets it: documents indexed with one embedding model, then the
gateway's model changes (as after `make models`); the search says so in one line, and
`faas rag reindex` re-embeds the collection so search works again."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.e2e.test_faas_up import faas, faas_env, free_port, stop, wait_ready

ROUTING = """\
models:
  - name: chat-default
    deployments:
      - provider: mock
        model: faas-mock
  - name: embed-default
    kind: embedding
    deployments:
      - provider: hash
        model: {model}
        dimensions: {dims}
"""


@contextmanager
def faas_up(base: Path, model: str, dims: int) -> Iterator[tuple[str, dict[str, str], Path]]:
    routing = base / f"{model}.yaml"
    routing.write_text(ROUTING.format(model=model, dims=dims))
    env = faas_env(base / "data") | {"FAAS_GATEWAY_MODELS": str(routing)}
    port = free_port()
    log = base / f"{model}.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "faas", "up", "--port", str(port)],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc)
        yield url, env, log
    finally:
        assert stop(proc) == 0, log.read_text()


def test_a_model_change_is_refused_in_one_line_and_reindex_repairs_it(tmp_path: Path) -> None:
    query = {"query_text": "when are refunds paid", "collection": "docs", "mode": "vector"}
    with faas_up(tmp_path, "hash-old", 384) as (url, env, log):
        headers = {"Authorization": f"Bearer {faas('token', '--tenant', 'demo', env=env)}"}
        created = httpx.post(
            f"{url}/api/v1/rag/documents",
            json={"collection": "docs", "title": "Refunds", "content": "Refunds take 14 days."},
            headers=headers,
            timeout=10,
        )
        assert created.status_code == 201, created.text
        assert "embeddings embed-default (hash:hash-old)" in log.read_text()

    with faas_up(tmp_path, "hash-new", 256) as (url, env, log):
        assert "embeddings embed-default (hash:hash-new)" in log.read_text()
        ready = httpx.get(f"{url}/readyz", timeout=10).json()
        assert ready["models"]["embedding"] == "embed-default (hash:hash-new)"
        refused = httpx.post(f"{url}/api/v1/rag/search", json=query, headers=headers, timeout=10)
        assert refused.status_code == 409
        message = refused.json()["error"]["message"]
        assert "indexed with hash:hash-old (384 dimensions)" in message
        assert "now embeds with hash:hash-new (256 dimensions)" in message
        assert "faas rag reindex --collection docs" in message

        done = subprocess.run(
            [sys.executable, "-m", "faas", "rag", "reindex", "--collection=docs", f"--url={url}"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert "re-embedded 1 chunks of 1 documents in 1 collections with hash:hash-new" in (
            done.stderr
        )
        found = httpx.post(f"{url}/api/v1/rag/search", json=query, headers=headers, timeout=10)
        assert found.status_code == 200, found.text
        assert found.json()["data"]["results"][0]["title"] == "Refunds"


def test_reindex_without_a_running_faas_fails_in_one_line(tmp_path: Path) -> None:
    with faas_up(tmp_path, "hash-old", 384) as (_, env, _):
        pass  # creates the data dir's development secret, as a user's earlier `faas up` did
    url = f"http://127.0.0.1:{free_port()}"
    done = subprocess.run(
        [sys.executable, "-m", "faas", "rag", "reindex", "--url", url],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"cannot reach faas at {url}" in lines[0], done.stderr
