"""tests/leaks.py: a connection left open names the test that opened it; and a stopped
loopback server (tests/loopback.py) leaves none open."""

from __future__ import annotations

import asyncio
import gc
import socket
import warnings
from typing import Any

from .loopback import LoopbackServer, loopback_client


def test_an_unclosed_transport_names_the_test_that_opened_it() -> None:
    async def leak() -> asyncio.StreamWriter:
        server = await asyncio.start_server(lambda _r, w: w.close(), "127.0.0.1", 0)
        async with server:
            port = server.sockets[0].getsockname()[1]
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        return writer  # never closed

    writer = asyncio.run(leak())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del writer
        gc.collect()
    said = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    name = "tests/test_leaks.py::test_an_unclosed_transport_names_the_test_that_opened_it"
    assert any(f"was opened in {name} (call)" in message for message in said), said


def test_a_stopped_loopback_server_closes_what_its_loop_left_open() -> None:
    """A connection the server's event loop opened and nobody closed (here the app keeps one
    to a peer) is closed when the server stops, not left to the garbage collector."""
    peer = socket.create_server(("127.0.0.1", 0))
    kept: list[asyncio.StreamWriter] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        _, writer = await asyncio.open_connection(*peer.getsockname())
        kept.append(writer)  # never closed by the app
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    server = LoopbackServer()
    server.start(app, lifespan="off")
    with peer, loopback_client(server.url) as http:
        assert http.get("/").status_code == 204
        accepted, _ = peer.accept()
        with accepted:
            server.stop()
            accepted.settimeout(10)
            assert accepted.recv(1) == b""  # the server's side of it was closed
    assert kept[0].transport.is_closing()
