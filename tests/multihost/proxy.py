"""The `edge` host's load balancer: a TCP proxy per port that hands each new connection to the
next backend in turn (skipping one that refuses), like a cloud L4 balancer. Round-robin is per
connection, so a keep-alive client sticks to one replica; the suite targets replicas directly
where it must know which one answers.

    python -m tests.multihost.proxy 10.77.0.20 8001=10.77.0.11:8001,10.77.0.12:8001 ... \
        [--maxconn N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import resource
import signal

Backend = tuple[str, int]


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


class RoundRobin:
    """Each new connection to the next backend. With `maxconn`, a backend holds at most that
    many connections at once and the others wait here in arrival order (HAProxy's `maxconn`):
    a replica is never handed more calls than it can hold."""

    def __init__(self, backends: list[Backend], maxconn: int | None = None) -> None:
        self.backends = backends
        self._next = itertools.cycle(range(len(backends)))
        self._free: asyncio.Queue[int] | None = None
        if maxconn:
            self._free = asyncio.Queue()
            for _ in range(maxconn):
                for index in range(len(backends)):
                    self._free.put_nowait(index)

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        last: OSError | None = None
        for _ in self.backends:
            try:
                return await self._open(next(self._next))
            except OSError as exc:
                last = exc
        raise last or OSError("no backend")

    async def _open(self, index: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        host, port = self.backends[index]
        try:
            return await asyncio.wait_for(asyncio.open_connection(host, port), 2)
        except (OSError, TimeoutError) as exc:
            raise OSError(f"{host}:{port}: {exc!r}") from exc

    async def handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        slot = None if self._free is None else await self._free.get()
        try:
            backend_r, backend_w = await (self.connect() if slot is None else self._open(slot))
        except OSError:
            client_w.close()
        else:
            await asyncio.gather(pipe(client_r, backend_w), pipe(backend_r, client_w))
        finally:
            if slot is not None and self._free is not None:
                self._free.put_nowait(slot)


def parse_route(text: str) -> tuple[int, list[Backend]]:
    port, _, targets = text.partition("=")
    backends = []
    for target in targets.split(","):
        host, _, backend_port = target.rpartition(":")
        backends.append((host, int(backend_port)))
    return int(port), backends


async def serve(address: str, routes: list[str], maxconn: int | None) -> None:
    servers = []
    for route in routes:
        port, backends = parse_route(route)
        balancer = RoundRobin(backends, maxconn)
        servers.append(await asyncio.start_server(balancer.handle, address, port, backlog=4096))
    print(f"proxy on {address}: {' '.join(routes)}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    for server in servers:
        server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("address")
    parser.add_argument("routes", nargs="+", help="PORT=HOST:PORT[,HOST:PORT...]")
    parser.add_argument("--maxconn", type=int, help="connections each backend holds at once")
    args = parser.parse_args()
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(serve(args.address, args.routes, args.maxconn))


if __name__ == "__main__":
    main()
