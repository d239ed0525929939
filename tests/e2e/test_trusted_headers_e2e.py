"""`FAAS_AUTH=trusted-headers` in a real server: the peer that counts is the TCP peer (a proxy's
`X-Forwarded-For` does not replace it), the mode is announced at start, and production refuses
to start without FAAS_TRUSTED_PROXY_CIDRS."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_faas_up import faas_env, free_port, stop, wait_ready

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_the_proxy_is_the_tcp_peer_and_the_mode_is_announced(tmp_path: Path) -> None:
    env = faas_env(tmp_path / "data") | {
        "FAAS_AUTH": "trusted-headers",
        "FAAS_TRUSTED_PROXY_CIDRS": "127.0.0.1/32",
    }
    port = free_port()
    log = tmp_path / "faas.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "faas", "serve", "cache", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=out,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(url, proc)
            # A proxy on this host forwarding a remote client: still the trusted proxy.
            headers = {"X-Tenant-ID": "acme", "X-Forwarded-For": "203.0.113.5"}
            stored = httpx.post(
                f"{url}/api/v1/cache", json={"key": "k", "value": 1}, headers=headers
            )
            assert stored.status_code == 201, stored.text
            read = httpx.get(f"{url}/api/v1/cache/k", headers=headers)
            assert read.json()["data"]["value"] == 1
        finally:
            assert stop(proc) == 0
    assert "FAAS_AUTH=trusted-headers" in log.read_text()


def test_production_trusted_headers_without_proxy_cidrs_does_not_start(tmp_path: Path) -> None:
    env = faas_env(tmp_path / "data") | {"FAAS_ENV": "production", "FAAS_AUTH": "trusted-headers"}
    result = subprocess.run(
        [sys.executable, "-m", "faas", "serve", "cache", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "FAAS_TRUSTED_PROXY_CIDRS" in result.stderr
