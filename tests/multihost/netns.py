"""Hosts made of network namespaces: each host is a namespace with one veth (`eth0`) plugged
into a bridge that lives in a namespace of its own, so nothing touches the root namespace's
interfaces. Processes enter a host with `nsenter --net` (which execs: the pid we hold is the
program's own), and this process reaches the hosts from a thread that joined the `client`
namespace (`NamespaceThread`).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
NETNS_DIR = Path("/run/netns")
PREFIX_LENGTH = 24


def unusable_reason() -> str | None:
    """Why namespaces cannot be built here, or None when they can (root, `ip`, `nsenter`, and
    `ip netns add` works)."""
    if os.geteuid() != 0:
        return "the multi-host suite builds network namespaces: it needs root"
    for tool in ("ip", "nsenter"):
        if shutil.which(tool) is None and shutil.which(tool, path="/usr/sbin:/sbin") is None:
            return f"the multi-host suite needs `{tool}` (iproute2 / util-linux)"
    probe = f"fmprobe{uuid.uuid4().hex[:6]}"
    added = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if added.returncode != 0:
        return f"`ip netns add` does not work here: {added.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def run(*args: str) -> str:
    """Run a setup command; its stderr is the error when it fails."""
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


@dataclass
class Host:
    name: str
    netns: str
    address: str
    extra_addresses: tuple[str, ...] = ()
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def ip(self, *args: str) -> str:
        return run("ip", "-n", self.netns, *args)

    def enter(self) -> list[str]:
        """The command prefix that runs a program on this host."""
        return ["nsenter", f"--net={NETNS_DIR / self.netns}", "--"]

    def popen(
        self,
        args: Sequence[str],
        *,
        env: dict[str, str],
        log: Path,
        cwd: Path | None = None,
        uid: int | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start `args` on this host (as `uid` when given), stdout and stderr into `log`."""
        enter = self.enter()
        if uid is not None:
            enter[-1:-1] = [f"--setuid={uid}", f"--setgid={uid}"]
        with log.open("ab") as sink:
            proc = subprocess.Popen(
                [*enter, *args],
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes.append(proc)
        return proc

    def cut(self) -> None:
        """Unplug the host: its link goes down (connections hang, nothing is reset)."""
        self.ip("link", "set", "eth0", "down")

    def plug(self) -> None:
        self.ip("link", "set", "eth0", "up")

    def kill_all(self) -> None:
        """SIGKILL every process in this host's namespace, ours and their children."""
        pids = subprocess.run(
            ["ip", "netns", "pids", self.netns], capture_output=True, text=True
        ).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        for proc in self.processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)


class Network:
    """Hosts on 10.77.0.0/24 (or `subnet`), created by `build`, removed by `teardown`."""

    def __init__(
        self, addresses: dict[str, str | tuple[str, ...]], subnet: str = "10.77.0"
    ) -> None:
        self.prefix = f"fm{uuid.uuid4().hex[:6]}"
        self.bridge_ns = f"{self.prefix}-br"
        self.hosts: dict[str, Host] = {}
        for name, suffixes in addresses.items():
            first, *more = (suffixes,) if isinstance(suffixes, str) else suffixes
            self.hosts[name] = Host(
                name,
                f"{self.prefix}-{name}",
                f"{subnet}.{first}",
                tuple(f"{subnet}.{s}" for s in more),
            )
        self._created: list[str] = []

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    def build(self) -> None:
        self._add(self.bridge_ns)
        run("ip", "-n", self.bridge_ns, "link", "add", "br0", "type", "bridge")
        run("ip", "-n", self.bridge_ns, "link", "set", "br0", "up")
        run("ip", "-n", self.bridge_ns, "link", "set", "lo", "up")
        for index, host in enumerate(self.hosts.values()):
            self._add(host.netns)
            port = f"p{index}"
            run(
                "ip",
                "-n",
                self.bridge_ns,
                "link",
                "add",
                port,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                host.netns,
            )
            run("ip", "-n", self.bridge_ns, "link", "set", port, "master", "br0", "up")
            for address in (host.address, *host.extra_addresses):
                host.ip("addr", "add", f"{address}/{PREFIX_LENGTH}", "dev", "eth0")
            host.ip("link", "set", "lo", "up")
            host.ip("link", "set", "eth0", "up")

    def _add(self, netns: str) -> None:
        run("ip", "netns", "add", netns)
        self._created.append(netns)

    def teardown(self) -> None:
        """Kill what runs in the hosts and delete every namespace this network made."""
        for host in self.hosts.values():
            if host.netns in self._created:
                host.kill_all()
        for netns in reversed(self._created):
            subprocess.run(["ip", "netns", "del", netns], capture_output=True)
        self._created.clear()


def _enter(netns: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(NETNS_DIR / netns, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns into {netns}: {os.strerror(errno)}")
    finally:
        os.close(fd)


class NamespaceThread:
    """Runs functions on threads that joined a host's network namespace (setns is per thread),
    so sockets they open live on that host; the rest of this process stays where it was."""

    def __init__(self, host: Host, threads: int = 1) -> None:
        self._pool = ThreadPoolExecutor(
            threads,
            thread_name_prefix=f"netns-{host.name}",
            initializer=_enter,
            initargs=(host.netns,),
        )

    def call(self, fn: Callable[..., T], *args: object) -> T:
        return self._pool.submit(fn, *args).result()

    def close(self) -> None:
        self._pool.shutdown(wait=True)
