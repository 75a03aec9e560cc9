"""Loopback helpers for backend tests: a port nobody listens on, a listener whose accept
queue is full (connects hang: the connect-timeout case) and stream collection."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator, Iterator

from backends.base import Chunk


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@contextlib.contextmanager
def blackhole_url() -> Iterator[str]:
    """A listening socket that never accepts, with its backlog filled: new SYNs are dropped,
    so a client's connect hangs until its own timeout."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):
            c = socket.socket()
            c.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                c.connect_ex(("127.0.0.1", port))
            fillers.append(c)
        yield f"http://127.0.0.1:{port}"
    finally:
        for c in fillers:
            c.close()
        server.close()


async def collect(stream: AsyncIterator[Chunk]) -> list[Chunk]:
    return [chunk async for chunk in stream]
