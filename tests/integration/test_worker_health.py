"""`faas worker --health-port`: a worker answers /livez, /readyz and /metrics like a service (so
Kubernetes can probe it), and still drains and exits 0 on SIGTERM (real NATS JetStream)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import nats
import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[str]) -> httpx.Response:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1]
        try:
            response = httpx.get(url, timeout=2)
            if response.status_code == 200:
                return response
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} never answered 200")


async def test_a_worker_serves_probes_and_metrics(tmp_path: Path, nats_url: str) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAAS_")}
    env |= {
        "FAAS_DATA_DIR": str(tmp_path / "data"),
        "FAAS_NATS_URL": nats_url,
        "FAAS_NATS_PREFIX": prefix,
        "FAAS_JOB_MODULES": "tests.jobkinds",
        "FAAS_SERVICES": "",
        "FAAS_JWT_SECRET": "x" * 40,
    }
    cmd = [
        sys.executable,
        "-m",
        "faas",
        "worker",
        "--kinds",
        "testjobs.echo",
        "--health-port",
        str(port),
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        ready = wait_ready(f"{base}/readyz", proc).json()
        assert ready["status"] == "ready"
        assert ready["checks"] == {"database": "ok", "kv": "ok", "nats": "ok"}
        assert ready["kinds"] == ["testjobs.echo"]
        assert httpx.get(f"{base}/livez").json() == {"status": "ok"}
        assert "faas_jobs_queue_depth" in httpx.get(f"{base}/metrics").text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        client = await nats.connect(nats_url)
        js = client.jetstream()
        for stream in await js.streams_info():
            if stream.config.name and stream.config.name.startswith(prefix.upper()):
                await js.delete_stream(stream.config.name)
        await client.close()
