"""Listening sockets, bound before anything is printed, and who holds a port that is busy.

`faas up` binds its port before it builds the app or prints a banner, so a second `faas up` on
a busy port fails in well under a second with one line instead of after a banner and a token;
`faas up --split` binds every service's port the same way and hands each child its socket, so
a restarted child never loses its port to another process.
"""

from __future__ import annotations

import errno
import socket

import psutil

MAX_COMMAND_CHARS = 160


class PortUnavailable(Exception):
    """The port cannot be listened on; the message names it and, if known, what holds it."""


def port_holder(port: int) -> str | None:
    """`pid N (command line)` of the process listening on the TCP port, when it may be seen."""
    try:
        connections = psutil.net_connections(kind="tcp")
    except (psutil.Error, OSError):
        return None
    for conn in connections:
        if conn.status != psutil.CONN_LISTEN or not conn.laddr or conn.laddr.port != port:
            continue
        if conn.pid is None:  # another user's process, not readable without privileges
            return None
        try:
            process = psutil.Process(conn.pid)
            # One line: an argument may hold newlines (python -c "...").
            command = " ".join(" ".join(process.cmdline()).split()) or process.name()
        except psutil.Error:
            return f"pid {conn.pid}"
        if len(command) > MAX_COMMAND_CHARS:
            command = command[: MAX_COMMAND_CHARS - 1] + "…"
        return f"pid {conn.pid} ({command})"
    return None


def listen_sockets(host: str, port: int) -> list[socket.socket]:
    """Sockets bound to every address of `host` on `port` (not yet listening: the server calls
    listen). PortUnavailable says why not, naming the port and what holds it."""
    if not 0 < port < 65536:
        raise PortUnavailable(f"port {port} is not a TCP port (use 1-65535)")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise PortUnavailable(f"cannot listen on {host!r}: {exc.strerror}") from None
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                # As asyncio does: "::" serves IPv6 only; IPv4 needs its own socket.
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        raise PortUnavailable(_why(host, port, exc)) from None
    return sockets


def _why(host: str, port: int, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        holder = port_holder(port)
        return f"port {port} is in use" + (f" by {holder}" if holder else "")
    return f"cannot listen on {host}:{port}: {exc.strerror or exc}"
