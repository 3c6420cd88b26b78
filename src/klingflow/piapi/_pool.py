"""The clients' transports: httpx's own, with a cheaper look at idle connections and larger
reads of a body that streams in.

Each time a request starts or ends, httpcore asks every idle kept-alive connection whether
the server has closed it (`is_readable`). Through anyio that question rebuilds the socket's
whole attribute table, a `getpeername` call included, before it polls the socket: with the
connections a batch keeps alive, 15 % of the event loop's profile (bench/notes.md, session 12).
The async stream here keeps the socket it connected and polls it: the same answer, one syscall.

httpcore reads the socket 64 KiB at a time; both clients' streams read more while a body
fills every read (`READ_BYTES_MAX`).
"""

from __future__ import annotations

import select
import socket
import ssl
import sys
import time
import urllib.request
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any, TypeVar

import httpcore
import httpx

from klingflow.piapi._gate import DEFAULT_MAX_IN_FLIGHT
from klingflow.piapi.tls import default_ssl_context

__all__ = ["new_client", "pool_limits", "tune_transport"]

C = TypeVar("C", httpx.Client, httpx.AsyncClient)

DEFAULT_MAX_CONNECTIONS = 100
"""httpx's own default cap on a pool's connections, kept for downloads (not gated)."""
SWEEP_SECONDS = 1.0
"""How often every idle connection is asked whether the server closed it (`_LeanPool`)."""
READ_BYTES_MAX = 1 << 20
"""The most one read asks the socket for. A read that came back full (a body arriving faster
than it is read: a download) doubles the next one, from httpcore's 64 KiB up to this; a short
one goes back to httpcore's size. A 256 MB download on loopback: 0.43-0.47 of a plain file
copy's speed with 64 KiB reads, 0.66-0.84 with 1 MiB (bench/notes.md, session 19). Over TLS a
read returns one record (16 KiB at most) whatever it asks for, so this is plain HTTP's gain."""


def pool_limits(max_in_flight_requests: int = DEFAULT_MAX_IN_FLIGHT) -> httpx.Limits:
    """The pool's limits: a connection kept alive for each request the client's gate lets out
    at once (downloads, not gated, share the rest of the pool)."""
    return httpx.Limits(
        max_connections=max(DEFAULT_MAX_CONNECTIONS, max_in_flight_requests),
        max_keepalive_connections=max_in_flight_requests,
    )


_LOOPBACK_DIRECT: Mapping[str, None] = MappingProxyType(
    {"all://127.0.0.1": None, "all://localhost": None, "all://[::1]": None}
)
"""httpx `mounts` that reach this machine's loopback directly whatever proxy the environment
names (`HTTP_PROXY`...): a proxy elsewhere cannot reach it (browsers bypass it alike)."""


def new_client(kind: type[C], transport: Any = None, **options: Any) -> C:
    """`kind(transport=transport, **options)` on the process's TLS context, through the
    proxy the environment names but never for loopback (`_LOOPBACK_DIRECT`), its own
    transport tuned (`tune_transport`) when httpx made it. A proxy variable httpx cannot use
    (a SOCKS proxy without `socksio`, a malformed URL) is a ValueError naming the variable,
    not httpx's bare error."""
    try:
        client = kind(
            transport=transport,
            verify=default_ssl_context(),
            mounts=_LOOPBACK_DIRECT,
            **options,
        )
    except (ImportError, ValueError, httpx.InvalidURL) as error:
        named = sorted(
            name.upper() + "_PROXY" for name in urllib.request.getproxies() if name != "no"
        )
        if not named or transport is not None:  # given a transport, httpx reads none
            raise
        problem = (
            "a SOCKS proxy needs `pip install 'httpx[socks]'`"
            if isinstance(error, ImportError)
            else str(error)  # httpx shows no password (`[secure]`)
        )
        raise ValueError(f"the proxy in {' / '.join(named)} cannot be used: {problem}") from None
    if transport is None:
        tune_transport(client)
    return client


def tune_transport(client: httpx.Client | httpx.AsyncClient) -> None:
    """Give the client's own transport (the one httpx makes when handed none) the streams
    and pool of this module. A proxy named in the environment gets a transport of its own
    from httpx, left as it is: its pool speaks to the proxy."""
    transport = client._transport
    # httpx has no public way to give its pool a network backend (httpcore has one), as
    # workflows/nodes/egress.py says too; tests/piapi/test_pool.py checks it is in use.
    if isinstance(transport, httpx.HTTPTransport):
        transport._pool._network_backend = _GrowingReadBackend()
    elif isinstance(transport, httpx.AsyncHTTPTransport):
        transport._pool._network_backend = _KeptSocketBackend()
        # Nor a pool class: the same object, its bookkeeping linear (`_LeanPool`; no state
        # added), on the httpcore whose decisions it copies (another keeps its own).
        if httpcore.__version__.startswith("1.0."):
            transport._pool.__class__ = _LeanPool


class _LeanPool(httpcore.AsyncConnectionPool):
    """httpcore 1.0's pool, its walk linear and its idle connections asked less often.

    On each request's start and end httpcore walks its connections, and for every idle one
    counts the pool again (`len([c.is_idle() for c in connections])`, which is the pool's
    length): quadratic in the connections kept alive. With the 32 a client keeps
    (`max_in_flight_requests`) a walk cost about 0.13 ms, 1.2-1.35 ms of CPU a video in
    `bench/engine.py`; 0.55-0.61 here (bench/notes.md, session 14). The count is the length,
    and the first available and first idle connection are found without building both lists.

    Every walk also asked every connection whether it had expired, a socket poll for each
    idle one: about 100 polls a video. Here the connection a request is about to get is
    asked first, every time, so one the server closed is never used (it is dropped and the
    next one asked); the others are asked once every `SWEEP_SECONDS`, which only delays
    closing our end of a connection nobody uses. The rest decides as httpcore 1.0 does.
    """

    _swept_at = 0.0
    """When every connection was last asked (monotonic s); set on the instance."""

    def _assign_requests_to_connections(self) -> list[httpcore.AsyncConnectionInterface]:
        closing: list[httpcore.AsyncConnectionInterface] = []
        connections = self._connections
        now = time.monotonic()
        sweep = now >= self._swept_at + SWEEP_SECONDS
        if sweep:
            self._swept_at = now
        # Closed, expired (the server closed it: `_KeptSocketStream`), or beyond keep-alive.
        for connection in list(connections):
            if connection.is_closed():
                connections.remove(connection)
            elif (sweep and connection.has_expired()) or (
                connection.is_idle() and len(connections) > self._max_keepalive_connections
            ):
                connections.remove(connection)
                closing.append(connection)
        for pool_request in [request for request in self._requests if request.is_queued()]:
            origin = pool_request.request.url.origin
            available = self._available(origin, closing, asked=sweep)
            if available is None:
                if len(connections) >= self._max_connections:
                    idle = next((c for c in connections if c.is_idle()), None)
                    if idle is None:
                        continue  # it waits for a connection to be released
                    connections.remove(idle)
                    closing.append(idle)
                available = self.create_connection(origin)
                connections.append(available)
            pool_request.assign_to_connection(available)
        return closing

    def _available(
        self,
        origin: httpcore.Origin,
        closing: list[httpcore.AsyncConnectionInterface],
        *,
        asked: bool,
    ) -> httpcore.AsyncConnectionInterface | None:
        """The first connection that can take a request to `origin` now, asked whether it
        expired unless this walk asked them all; an expired one goes to `closing`."""
        for connection in list(self._connections):
            if connection.can_handle_request(origin) and connection.is_available():
                if asked or not connection.has_expired():
                    return connection
                self._connections.remove(connection)
                closing.append(connection)
        return None


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
    the same socket underneath), its reads growing while a body fills them (`READ_BYTES_MAX`)."""

    def __init__(self, stream: httpcore.AsyncNetworkStream) -> None:
        self._stream = stream
        self._socket: socket.socket | None = stream.get_extra_info("socket")
        self._read_size = 0

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        size = max(max_bytes, self._read_size)
        data = await self._stream.read(size, timeout)
        self._read_size = _next_read_size(size, len(data))
        return data

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


class _GrowingReadBackend(httpcore.SyncBackend):
    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        stream = super().connect_tcp(host, port, timeout, local_address, socket_options)
        return _GrowingReadStream(stream)

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        return _GrowingReadStream(super().connect_unix_socket(path, timeout, socket_options))


class _GrowingReadStream(httpcore.NetworkStream):
    """httpcore's socket stream, its reads growing while a body fills them (`READ_BYTES_MAX`)."""

    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream
        self._read_size = 0

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        size = max(max_bytes, self._read_size)
        data = self._stream.read(size, timeout)
        self._read_size = _next_read_size(size, len(data))
        return data

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, timeout)

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        return _GrowingReadStream(self._stream.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


def _next_read_size(asked: int, received: int) -> int:
    """Twice a read that came back full (up to `READ_BYTES_MAX`); 0 (httpcore's) otherwise."""
    return min(2 * asked, READ_BYTES_MAX) if received == asked else 0


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
