"""The clients' pools (piapi/_pool.py). The async one answers httpcore's "has the server closed
this idle connection?" from the socket it kept, and must answer it right: a kept-alive
connection the server closed is never used again (a create sent on it would come back
uncertain). Both read a body that streams in in growing pieces."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from klingflow.emulator import EmulatorServer
from klingflow.piapi import AsyncPiAPI, PiAPI
from klingflow.piapi._gate import DEFAULT_MAX_IN_FLIGHT
from klingflow.piapi._pool import (
    READ_BYTES_MAX,
    _GrowingReadStream,
    _KeptSocketStream,
    _LeanPool,
    tune_transport,
)
from klingflow.piapi.tls import default_ssl_context
from klingflow.settings import Settings
from klingflow.workflows.engine import Engine

ANSWER = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok"


def test_a_connection_the_server_closed_is_seen_closed_and_not_used_again() -> None:
    """The server answers one request per connection, keeps it open until told, then
    closes it, as a server closing an idle kept-alive connection does. The rounds come
    within one `SWEEP_SECONDS`: the pool asks the connection a request is about to get,
    not only the idle ones at its sweep."""

    async def main() -> tuple[list[tuple[bool, bool]], list[str], int]:
        connections = 0
        close_now = asyncio.Event()
        closed = asyncio.Event()

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal connections
            connections += 1
            await reader.readuntil(b"\r\n\r\n")
            writer.write(ANSWER)
            await writer.drain()
            await close_now.wait()
            writer.close()
            await writer.wait_closed()
            closed.set()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
        http = httpx.AsyncClient(verify=default_ssl_context())
        tune_transport(http)
        seen: list[tuple[bool, bool]] = []  # is_readable: (open and idle, closed by the server)
        bodies: list[str] = []
        async with server, http:
            for _ in range(3):
                close_now.clear()
                closed.clear()
                async with http.stream("GET", url) as response:
                    stream = response.extensions["network_stream"]
                    assert isinstance(stream, _KeptSocketStream)
                    bodies.append((await response.aread()).decode())
                idle = stream.get_extra_info("is_readable")
                close_now.set()
                await closed.wait()
                await asyncio.sleep(0.05)  # the FIN reaches this side
                seen.append((idle, stream.get_extra_info("is_readable")))
        return seen, bodies, connections

    seen, bodies, connections = asyncio.run(main())
    assert seen == [(False, True)] * 3
    assert bodies == ["ok", "ok", "ok"]  # none was sent on a closed connection
    assert connections == 3


def test_the_async_client_sends_through_it(emulator: EmulatorServer, api_key: str) -> None:
    async def main() -> object:
        async with (
            AsyncPiAPI(api_key=api_key, base_url=emulator.url) as client,
            client._http.stream("GET", "/_emulator/stats") as response,
        ):
            return response.extensions["network_stream"]

    assert isinstance(asyncio.run(main()), _KeptSocketStream)


def test_the_pool_reuses_opens_waits_and_trims_its_connections_as_httpcore_does() -> None:
    """With room for two connections and one kept alive, four requests at once are all
    answered, never over more than two connections at a time; each connection freed
    beyond the one kept alive is closed and a new one opened for the next request
    (httpcore 1.0's decisions), and one stays open afterwards."""

    async def main() -> tuple[list[str], int, int, int]:
        connections = 0
        open_now = 0
        most_open = 0

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal connections, open_now, most_open
            connections += 1
            open_now += 1
            most_open = max(most_open, open_now)
            try:
                while await reader.readuntil(b"\r\n\r\n"):
                    await asyncio.sleep(0.05)  # the others arrive meanwhile and must wait
                    writer.write(ANSWER)
                    await writer.drain()
            except asyncio.IncompleteReadError:
                pass  # the client closed it
            finally:
                open_now -= 1
                writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
        limits = httpx.Limits(max_connections=2, max_keepalive_connections=1)
        http = httpx.AsyncClient(verify=default_ssl_context(), limits=limits)
        tune_transport(http)
        # The pinned httpcore's decisions are copied (a new httpcore: check them, then the pin)
        assert isinstance(http._transport._pool, _LeanPool)  # type: ignore[attr-defined]
        async with server, http:
            answers = await asyncio.gather(*(http.get(url) for _ in range(4)))
            await asyncio.sleep(0.05)  # the surplus connection's close reaches the server
            kept = open_now
        return [answer.text for answer in answers], connections, most_open, kept

    bodies, connections, most_open, kept = asyncio.run(main())
    assert bodies == ["ok"] * 4
    assert (connections, most_open, kept) == (4, 2, 1)


def test_the_engines_client_keeps_a_connection_for_each_request_its_gate_lets_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`klingflow run`, `worker` and `serve` send through the engine's client, whose
    transport checks where a download connects (workflows/nodes/egress.py). It is this pool
    too, at the client's limits (httpx takes them from a transport it is given, not from the
    client): two waves of 32 requests at once go over 32 connections, on kept sockets. On
    httpx's default transport (20 kept alive, httpcore's own pool) the second wave opened 12
    more."""
    monkeypatch.setenv("PIAPI_API_KEY", "pool-test-key")

    async def main() -> tuple[int, list[bool]]:
        connections = 0

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal connections
            connections += 1
            try:
                while await reader.readuntil(b"\r\n\r\n"):
                    await asyncio.sleep(0.05)  # the whole wave is in flight at once
                    writer.write(ANSWER)
                    await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionResetError):
                pass  # the client closed it
            finally:
                writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
        client = Engine(Settings(home=tmp_path)).client
        kept: list[bool] = []

        async def get() -> None:
            async with client._http.stream("GET", url) as response:
                await response.aread()
                kept.append(isinstance(response.extensions["network_stream"], _KeptSocketStream))

        async with server, client:
            for _ in range(2):
                await asyncio.gather(*(get() for _ in range(DEFAULT_MAX_IN_FLIGHT)))
        return connections, kept

    connections, kept = asyncio.run(main())
    assert kept == [True] * 2 * DEFAULT_MAX_IN_FLIGHT
    assert connections == DEFAULT_MAX_IN_FLIGHT


BODY = os.urandom(4 << 20)


@pytest.fixture
def body_url() -> Iterator[str]:
    """A server that answers each GET with `BODY` as fast as the socket takes it."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:  # closed: the test is over
                return
            with connection:
                request = b""
                while b"\r\n\r\n" not in request:
                    request += connection.recv(4096)
                head = f"HTTP/1.1 200 OK\r\ncontent-length: {len(BODY)}\r\n\r\n".encode()
                connection.sendall(head + BODY)

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/video.mp4"
    listener.close()
    server.join(timeout=5)


def test_both_clients_read_a_streaming_body_in_growing_pieces(body_url: str) -> None:
    """httpcore reads 64 KiB at a time; while a body fills every read, the clients' streams
    ask for more (up to `READ_BYTES_MAX`): the chunks a download gets grow past 64 KiB, and
    the bytes are the server's, in order."""

    def sync_chunks() -> list[bytes]:
        with PiAPI(api_key="k") as client, client._http.stream("GET", body_url) as response:
            assert isinstance(response.extensions["network_stream"], _GrowingReadStream)
            time.sleep(0.1)  # let the body fill the socket's buffer
            return list(response.iter_raw())

    async def async_chunks() -> list[bytes]:
        async with (
            AsyncPiAPI(api_key="k") as client,
            client._http.stream("GET", body_url) as response,
        ):
            await asyncio.sleep(0.1)
            return [chunk async for chunk in response.aiter_raw()]

    for chunks in (sync_chunks(), asyncio.run(async_chunks())):
        assert b"".join(chunks) == BODY
        assert 64 * 1024 < max(map(len, chunks)) <= READ_BYTES_MAX
