"""`faas up --split`: one `faas serve` child per service on sockets this process bound first.

A child that exits before it ever listened, or refuses to start (exit 2), stops them all; one
that crashes later is restarted with backoff (its port stays bound here, so nothing can take
it). `on_ready` runs once every child listens.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable

from rich.console import Console

from faas.shared.backoff import backoff
from faas.shared.config import Settings


def bind_all(host: str, ports: dict[str, int]) -> dict[str, list[socket.socket]]:
    """Every service's listening sockets, or PortUnavailable naming the service (and nothing
    left bound)."""
    from faas.ports import PortUnavailable, listen_sockets

    sockets: dict[str, list[socket.socket]] = {}
    try:
        for name, port in ports.items():
            try:
                sockets[name] = listen_sockets(host, port)
            except PortUnavailable as exc:
                raise PortUnavailable(f"service {name}: {exc}") from exc
    except BaseException:
        for bound in sockets.values():
            for sock in bound:
                sock.close()
        raise
    return sockets


class Supervisor:
    def __init__(
        self,
        settings: Settings,
        host: str,
        ports: dict[str, int],
        sockets: dict[str, list[socket.socket]],
        console: Console,
    ) -> None:
        self.settings = settings
        self.host = host
        self.ports = ports
        self.sockets = sockets
        self.console = console
        self.names = list(ports)
        self.env = dict(os.environ)
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.started: set[str] = set()
        self.restarts: dict[str, int] = dict.fromkeys(self.names, 0)
        self.restart_at: dict[str, float] = {}
        self.stopping = False

    def prepare(self, urls: dict[str, str]) -> None:
        """Point every child at its siblings, and do once what children would race on."""
        from faas.shared.auth import signing_secret
        from faas.shared.database import migrate_sync

        for name, url in urls.items():
            self.env.setdefault(f"FAAS_{name.upper()}_URL", url)
        signing_secret(self.settings)  # the development secret, created before children race
        if self.settings.env == "development" and self.settings.migrate_on_start:
            # Once here, not in every child at the same moment (they would race on the schema).
            self.settings.data_dir.mkdir(parents=True, exist_ok=True)
            migrate_sync(self.settings.effective_database_url)
            self.env["FAAS_MIGRATE_ON_START"] = "false"

    def start(self, name: str) -> None:
        fds = [sock.fileno() for sock in self.sockets[name]]
        cmd = [sys.executable, "-m", "faas", "serve", name, "--host", self.host]
        cmd += ["--port", str(self.ports[name])]
        cmd += [arg for fd in fds for arg in ("--fd", str(fd))]
        self.children[name] = subprocess.Popen(cmd, env=self.env, pass_fds=fds)

    def listening(self, name: str) -> bool:
        # The child's listen() is on the socket this process holds too: no probe connection.
        return all(
            s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) for s in self.sockets[name]
        )

    def run(self, on_ready: Callable[[], None]) -> str | None:
        """Run until Ctrl-C / SIGTERM (None) or a child that cannot start (the reason)."""

        def stop(*_: object) -> None:
            self.stopping = True

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        for name in self.names:
            self.start(name)
        failure: str | None = None
        while not self.stopping and failure is None:
            time.sleep(0.2)
            failure = self.poll(on_ready)
        self.shutdown()
        return failure

    def poll(self, on_ready: Callable[[], None]) -> str | None:
        now = time.monotonic()
        for name, child in list(self.children.items()):
            if name in self.restart_at:
                if now >= self.restart_at[name]:
                    del self.restart_at[name]
                    self.start(name)
                continue
            code = child.poll()
            if code is None:
                if name not in self.started and self.listening(name):
                    self.started.add(name)
                    if self.started == set(self.names):
                        on_ready()
                continue
            if code == 2 or name not in self.started:
                return (
                    f"service {name} could not start (exit code {code}, its reason above): "
                    "stopped every service"
                )
            self.schedule_restart(name, code, now)
        return None

    def schedule_restart(self, name: str, code: int, now: float) -> None:
        self.restarts[name] += 1
        delay = backoff(self.restarts[name] - 1, base_s=1.0, cap_s=30.0)
        self.console.print(
            f"[yellow]service {name} exited with code {code}; restarting in {delay:.1f}s "
            f"(restart #{self.restarts[name]})[/yellow]"
        )
        self.restart_at[name] = now + delay

    def shutdown(self) -> None:
        running = [child for child in self.children.values() if child.poll() is None]
        for child in running:
            child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.settings.shutdown_grace_s + 2
        for child in running:
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
