"""The async client's transport: httpx's own, with a cheaper look at its idle connections.

Each time a request starts or ends, httpcore asks every idle kept-alive connection whether
the server has closed it (`is_readable`). Through anyio that question rebuilds the socket's
whole attribute table, a `getpeername` call included, before it polls the socket: with the
connections a batch keeps alive, 15 % of the event loop's profile (bench/notes.md, session 12).
The stream here keeps the socket it connected and polls it: the same answer, one syscall.
"""

from __future__ import annotations

import select
import socket
import ssl
import sys
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

__all__ = ["async_transport"]


def async_transport(*, verify: ssl.SSLContext, limits: httpx.Limits) -> httpx.AsyncHTTPTransport:
    """httpx's default transport for these options, its pool on `_KeptSocketBackend`."""
    transport = httpx.AsyncHTTPTransport(verify=verify, limits=limits)
    # httpx has no public way to give its pool a network backend (httpcore has one), as
    # workflows/nodes/egress.py says too; tests/piapi/test_pool.py checks it is in use.
    transport._pool._network_backend = _KeptSocketBackend()
    return transport


class _KeptSocketBackend(httpcore.AnyIOBackend):
    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await super().connect_tcp(host, port, timeout, local_address, socket_options)
        return _KeptSocketStream(stream)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await super().connect_unix_socket(path, timeout, socket_options)
        return _KeptSocketStream(stream)


class _KeptSocketStream(httpcore.AsyncNetworkStream):
    """anyio's stream, answering `is_readable` from the socket it was opened on (TLS keeps
    the same socket underneath)."""

    def __init__(self, stream: httpcore.AsyncNetworkStream) -> None:
        self._stream = stream
        self._socket: socket.socket | None = stream.get_extra_info("socket")

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._stream.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._stream.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self._stream.start_tls(ssl_context, server_hostname, timeout)
        return _KeptSocketStream(stream)

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            return _readable(self._socket)
        return self._stream.get_extra_info(info)


def _readable(sock: socket.socket | None) -> bool:
    """httpcore's test: a socket gone, or with bytes (or the end) waiting, is readable."""
    fd = -1 if sock is None else sock.fileno()
    if fd < 0:
        return True
    if sys.platform == "win32" or not hasattr(select, "poll"):
        ready, _, _ = select.select([fd], [], [], 0)
        return bool(ready)
    poll = select.poll()
    poll.register(fd, select.POLLIN)
    return bool(poll.poll(0))
