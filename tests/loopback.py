"""ASGI apps of the tests (the service, a webhook receiver) under uvicorn in a thread.

The socket is bound before the app is built, so the app may be told its own URL (the service's
settings need `public_url` for the webhooks PiAPI sends back to it). Also the tests' plain
httpx clients of such servers.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from typing import Any, Literal

import httpx
import pytest
import uvicorn

from klingflow.piapi.tls import default_ssl_context
from klingflow.settings import KEEP_ALIVE_SECONDS, STOP_GRACE_SECONDS


def without_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy variable in the environment for the rest of the test (a test then sets its
    own): `HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY`, `NO_PROXY`, in either case."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def loopback_client(url: str, **options: Any) -> httpx.Client:
    """An httpx client of `url` on the process's TLS context: httpx would load a CA bundle
    (about 25 ms of CPU) for each client it is given no context, plain HTTP too."""
    return httpx.Client(base_url=url, verify=default_ssl_context(), **options)


class _Server(uvicorn.Server):
    """uvicorn's server, closing at the end of its stop every connection its event loop still
    has open.

    uvicorn closes the connections it holds when a stop begins, and after its grace goes on
    without the rest. `klingflow serve` then exits, and the system closes them; a test's
    server runs in the test process, where such a socket was left to the garbage collector,
    which reported it in whatever test ran then (twice in one CI run, each opened during the
    teardown of a test_unstorable_text service that had webhooks on the way: tests/leaks.py).
    """

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await super().shutdown(sockets)
        transports = getattr(asyncio.get_running_loop(), "_transports", {})  # selector loops
        for transport in list(transports.values()):
            if not transport.is_closing():
                transport.abort()
        await asyncio.sleep(0)  # the aborts close their sockets on the next turn


class LoopbackServer:
    """One uvicorn server on a free port of 127.0.0.1, started and stopped by the test."""

    def __init__(self) -> None:
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def start(
        self,
        app: Any,
        *,
        lifespan: Literal["on", "off"] = "on",
        access_log: bool = True,
        timeout_seconds: float = 20.0,
    ) -> None:
        """Serve `app` and return once uvicorn says it has started (and its lifespan ran)."""
        config = uvicorn.Config(
            app,
            log_level="warning",
            lifespan=lifespan,
            access_log=access_log,
            timeout_keep_alive=KEEP_ALIVE_SECONDS,  # as `klingflow serve` does
            timeout_graceful_shutdown=STOP_GRACE_SECONDS,
        )
        self._server = server = _Server(config)
        self._thread = thread = threading.Thread(
            target=server.run, kwargs={"sockets": [self.socket]}, daemon=True
        )
        thread.start()
        deadline = time.monotonic() + timeout_seconds
        while not server.started:
            assert thread.is_alive(), "the server stopped while starting"
            assert time.monotonic() < deadline, "the server did not start in time"
            time.sleep(0.005)

    def stop(self, *, timeout_seconds: float = 30.0) -> None:
        """Ask uvicorn to exit (the app's lifespan shuts down), wait for it, free the port.

        A server still running after `timeout_seconds` fails the test that owns it: left
        behind, its engine (one a process) and socket would fail some later, innocent test.
        """
        try:
            if self._server is not None and self._thread is not None:
                self._server.should_exit = True
                self._thread.join(timeout=timeout_seconds)
                assert not self._thread.is_alive(), (
                    f"the server at {self.url} did not stop within {timeout_seconds} s"
                )
        finally:
            self.socket.close()
