"""`faas up` and `faas up --split` started as real processes, used over real HTTP."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def faas_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAAS_")}
    env |= {"FAAS_DATA_DIR": str(data_dir), "FAAS_LOG_REQUESTS": "false"}
    return env


def faas(*args: str, env: dict[str, str]) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "faas", *args], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"faas exited early with {proc.returncode}")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} was not ready after {timeout_s}s")


def stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


@pytest.fixture
def combined(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    env = faas_env(tmp_path / "data")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "faas", "up", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc)
        yield url, env
    finally:
        assert stop(proc) == 0


def exercise_cache(url: str, env: dict[str, str]) -> None:
    acme = {
        "Authorization": f"Bearer {faas('token', '--tenant', 'acme', '--user', 'ann', env=env)}"
    }
    globex = {"Authorization": f"Bearer {faas('token', '--tenant', 'globex', env=env)}"}
    with httpx.Client(base_url=url, timeout=10) as http:
        created = http.post(
            "/api/v1/cache", json={"key": "greeting", "value": "hello"}, headers=acme
        )
        assert created.status_code == 201, created.text
        got = http.get("/api/v1/cache/greeting", headers=acme).json()
        assert got["data"]["found"] is True and got["data"]["value"] == "hello"
        theirs = http.get("/api/v1/cache/greeting", headers=globex).json()
        assert theirs["data"]["found"] is False
        assert http.get("/api/v1/cache/greeting").status_code == 401


def test_faas_up_serves_the_cache_with_tenant_isolation(
    combined: tuple[str, dict[str, str]],
) -> None:
    url, env = combined
    exercise_cache(url, env)
    ready = httpx.get(f"{url}/readyz").json()
    assert ready["backends"] == {"database": "sqlite", "kv": "memory", "bus": "inprocess"}
    assert "cache" in ready["services"]


def test_faas_up_split_runs_each_service_in_its_own_process(tmp_path: Path) -> None:
    # Two services keep this test about the supervisor and HTTP between processes; the agent
    # split test runs six, and test_split_every_service all nine (with a longer readiness wait:
    # nine children importing their stacks at once on two cores take ~35 s).
    env = faas_env(tmp_path / "data") | {"FAAS_SERVICES": "gateway,cache"}
    offset = free_port() % 20000 + 20000 - 8002  # cache lands on a free-ish high port
    proc = subprocess.Popen(
        [sys.executable, "-m", "faas", "up", "--split", "--port-offset", str(offset)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    cache_url = f"http://127.0.0.1:{8002 + offset}"
    try:
        wait_ready(cache_url, proc, timeout_s=90)
        exercise_cache(cache_url, env)
    finally:
        assert stop(proc) == 0
