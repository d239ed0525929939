"""Binding before anything is printed: a busy port names its holder, a bad one says why."""

from __future__ import annotations

import os
import socket

import pytest

from faas.ports import PortUnavailable, listen_sockets, port_holder


def test_a_free_port_is_bound_and_not_yet_listening() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    [sock] = listen_sockets("127.0.0.1", port)
    with sock:
        assert sock.getsockname()[1] == port
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 0


def test_a_busy_port_names_the_process_that_holds_it() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        assert port_holder(port) is not None
        with pytest.raises(
            PortUnavailable, match=rf"^port {port} is in use by pid {os.getpid()} \("
        ):
            listen_sockets("127.0.0.1", port)


@pytest.mark.parametrize("port", [-1, 0, 65536])
def test_a_port_outside_the_tcp_range_is_refused_by_name(port: int) -> None:
    with pytest.raises(PortUnavailable, match=rf"^port {port} is not a TCP port"):
        listen_sockets("127.0.0.1", port)
