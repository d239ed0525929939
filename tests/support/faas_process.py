"""A real `faas up` for e2e tests: the offline models, a free port, its stderr kept in a log
that failures quote."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.test_faas_up import faas_env, free_port, stop, wait_ready

# The defaults of a fresh checkout (no `make models`): the same answers wherever this runs.
OFFLINE_MODELS = """\
models:
  - name: chat-default
    deployments:
      - provider: mock
        model: faas-mock
  - name: embed-default
    kind: embedding
    deployments:
      - provider: hash
        model: hash-384
        dimensions: 384
"""


@dataclass
class FaasProcess:
    proc: subprocess.Popen[bytes]
    port: int
    url: str
    env: dict[str, str]
    data_dir: Path
    log: Path


def offline_env(base: Path) -> dict[str, str]:
    """`faas_env` for a data dir under `base`, routing to the offline models."""
    base.mkdir(parents=True, exist_ok=True)
    (base / "models.yaml").write_text(OFFLINE_MODELS)
    return faas_env(base / "data") | {"FAAS_GATEWAY_MODELS": str(base / "models.yaml")}


@contextmanager
def running_faas(
    base: Path,
    *,
    env: dict[str, str] | None = None,
    args: Sequence[str] | None = None,
    port: int | None = None,
) -> Iterator[FaasProcess]:
    """`faas up --port P` (or `args`), stopped afterwards; it must exit 0."""
    port = port or free_port()
    full_env = offline_env(base) | (env or {})
    log = base / "faas.log"
    command = list(args) if args is not None else ["up", "--port", str(port)]
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "faas", *command],
            env=full_env,
            stdout=subprocess.DEVNULL,
            stderr=sink,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_ready(url, proc, timeout_s=90)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{log.read_text(errors='replace')[-4000:]}") from None
        yield FaasProcess(proc, port, url, full_env, base / "data", log)
    finally:
        assert stop(proc) == 0, log.read_text(errors="replace")[-4000:]
