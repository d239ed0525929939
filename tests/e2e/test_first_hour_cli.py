"""A new user's first hour with the `faas` command, replayed as real processes on real ports:
a busy port, the port settings, `--split`'s one banner and its all-or-nothing start, and which
data dir signs a token."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from faas.shared.auth import dev_secret
from tests.e2e.test_agent_split import port_block
from tests.e2e.test_faas_up import faas, faas_env, free_port, stop, wait_ready
from tests.support.faas_process import OFFLINE_MODELS, running_faas

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def run_faas(
    *args: str, env: dict[str, str], cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "faas", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


@dataclass
class Running:
    proc: subprocess.Popen[bytes]
    port: int
    url: str
    env: dict[str, str]
    data_dir: Path
    log: Path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """One `faas up` whose port comes from FAAS_PORT alone (no --port)."""
    port = free_port()
    base = tmp_path_factory.mktemp("first-hour")
    with running_faas(base, env={"FAAS_PORT": str(port)}, args=["up"], port=port) as up:
        yield Running(up.proc, up.port, up.url, up.env, up.data_dir, up.log)


def test_faas_port_moves_the_app_and_the_banner_names_the_data_dir(server: Running) -> None:
    banner = server.log.read_text(errors="replace")
    assert f"http://127.0.0.1:{server.port}/docs" in banner
    assert f"data dir: {server.data_dir.resolve()} (FAAS_DATA_DIR)" in banner


def test_a_second_faas_up_on_a_busy_port_fails_before_any_banner(
    server: Running, tmp_path: Path
) -> None:
    env = faas_env(tmp_path / "second") | {"FAAS_GATEWAY_MODELS": server.env["FAAS_GATEWAY_MODELS"]}
    result = run_faas("up", "--port", str(server.port), env=env)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    [line] = lines(result.stderr)
    assert f"port {server.port} is in use by pid {server.proc.pid} (" in line
    assert "-m faas up" in line and "faas up --port N" in line
    assert "FAAS_TOKEN" not in result.stderr
    assert not (tmp_path / "second").exists(), "nothing is created before the port is bound"


def test_the_port_flags_refuse_the_mode_they_do_not_apply_to(tmp_path: Path) -> None:
    env = faas_env(tmp_path / "data")
    split_port = run_faas("up", "--split", "--port", "8900", env=env)
    assert split_port.returncode == 2
    assert "--port-offset" in lines(split_port.stderr)[0]
    offset_alone = run_faas("up", "--port-offset", "100", env=env)
    assert offset_alone.returncode == 2
    assert "applies with --split" in lines(offset_alone.stderr)[0]


def test_faas_token_where_no_faas_up_ran_fails_naming_the_data_dir(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FAAS_")}
    result = run_faas("token", "--tenant", "acme", env=env, cwd=elsewhere)
    assert result.returncode == 2
    assert result.stdout == ""
    [line] = lines(result.stderr)
    assert f"data dir {(elsewhere / '.faas').resolve()} (FAAS_DATA_DIR)" in line
    assert "set FAAS_DATA_DIR" in line
    assert not (elsewhere / ".faas").exists(), "faas token must not create a secret"


def test_faas_token_prints_only_the_token_on_stdout_and_its_data_dir_on_stderr(
    server: Running,
) -> None:
    result = run_faas("token", "--tenant", "acme", env=server.env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(".") == 2 and len(lines(result.stdout)) == 1
    assert f"data dir {server.data_dir.resolve()} (FAAS_DATA_DIR)" in result.stderr
    headers = {"Authorization": f"Bearer {result.stdout.strip()}"}
    assert httpx.get(f"{server.url}/api/v1/cache/stats", headers=headers).status_code == 200


@pytest.mark.parametrize("source", ["another data dir", "another FAAS_JWT_SECRET"])
def test_a_token_signed_elsewhere_gets_a_401_that_names_the_cause(
    server: Running, tmp_path: Path, source: str
) -> None:
    env = faas_env(tmp_path / "other")
    if source == "another data dir":
        dev_secret(tmp_path / "other")  # as an earlier `faas up` in that directory made it
    else:
        env["FAAS_JWT_SECRET"] = "a-secret-the-server-never-saw-" + "x7Qp" * 8
    token = faas("token", "--tenant", "acme", env=env)
    answer = httpx.get(
        f"{server.url}/api/v1/cache/stats", headers={"Authorization": f"Bearer {token}"}
    )
    assert answer.status_code == 401
    message = answer.json()["error"]["message"]
    assert "Signature verification failed" in message
    assert "signed with another secret" in message and "FAAS_DATA_DIR" in message


def split_env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "models.yaml").write_text(OFFLINE_MODELS)
    return faas_env(tmp_path / "data") | {
        "FAAS_SERVICES": "gateway,cache",
        "FAAS_GATEWAY_MODELS": str(tmp_path / "models.yaml"),
    }


def test_split_with_a_port_taken_starts_nothing(tmp_path: Path) -> None:
    offset = port_block()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 8002 + offset))
        holder.listen()
        result = run_faas("up", "--split", "--port-offset", str(offset), env=split_env(tmp_path))
    assert result.returncode == 2
    [line] = lines(result.stderr)
    assert f"service cache: port {8002 + offset} is in use by pid {os.getpid()} (" in line
    assert "--port-offset N" in line
    with socket.socket() as gateway:  # the gateway's port, bound first, was given back
        gateway.bind(("127.0.0.1", 8001 + offset))


def test_split_prints_one_banner_once_every_service_listens(tmp_path: Path) -> None:
    offset = port_block()
    urls = [f"http://127.0.0.1:{8001 + offset}", f"http://127.0.0.1:{8002 + offset}"]
    log = tmp_path / "faas.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "faas", "up", "--split", "--port-offset", str(offset)],
            env=split_env(tmp_path),
            stdout=subprocess.DEVNULL,
            stderr=sink,
            start_new_session=True,
        )
    try:
        for url in urls:
            wait_ready(url, proc, timeout_s=90)
        deadline = time.monotonic() + 60  # the banner follows the children's listen()
        while "export FAAS_TOKEN=" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        assert stop(proc) == 0, log.read_text(errors="replace")[-4000:]
    output = log.read_text(errors="replace")
    assert output.count("export FAAS_TOKEN=") == 1, output[-4000:]
    assert output.count("data dir: ") == 1
    for url in urls:
        assert url in output
