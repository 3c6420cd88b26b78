"""Run the emulator in-process on a free loopback port, for tests, the demo and scripts.

`EmulatorServer` starts uvicorn in a thread, waits until it accepts connections, gives back
its URL, and stops cleanly. Its helper methods talk to the control API over HTTP, like any
other client would, so a test drives exactly what a user could drive.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx
import uvicorn
from pydantic_core import to_jsonable_python

from klingflow.emulator.app import create_app
from klingflow.emulator.config import EmulatorConfig, FaultRule
from klingflow.piapi.tls import default_ssl_context
from klingflow.settings import KEEP_ALIVE_SECONDS

__all__ = ["KEEP_ALIVE_SECONDS", "EmulatorServer"]


STOP_GRACE_SECONDS = 1
"""How long `stop()` lets requests in flight finish before cancelling them."""

_EXPECTED = ("without completing response", "timeout graceful shutdown exceeded")


class _QuietDrops(logging.Filter):
    """Injected drops and requests cut at stop are on purpose: don't log them as errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(expected in message for expected in _EXPECTED)


class EmulatorServer:
    """The emulator on `http://host:port` in a background thread (port 0 picks a free one)."""

    def __init__(
        self,
        config: EmulatorConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        files_dir: Path | None = None,
        log_level: str = "warning",
    ) -> None:
        self.config = config or EmulatorConfig()
        self.app = create_app(self.config, files_dir=files_dir)
        # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets that say TCP,
        # and without it every keep-alive request stalls ~40 ms on Nagle + delayed ACKs.
        self._socket = socket.socket(
            socket.AF_INET6 if ":" in host else socket.AF_INET,
            socket.SOCK_STREAM,
            socket.IPPROTO_TCP,
        )
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, port))
        self.host, self.port = host, self._socket.getsockname()[1]
        self._server = uvicorn.Server(
            uvicorn.Config(
                self.app,
                log_level=log_level,
                access_log=False,
                lifespan="on",
                timeout_graceful_shutdown=STOP_GRACE_SECONDS,
                timeout_keep_alive=KEEP_ALIVE_SECONDS,
            )
        )
        self._thread: threading.Thread | None = None
        self._control: httpx.Client | None = None
        logging.getLogger("uvicorn.error").addFilter(_QuietDrops())

    @property
    def url(self) -> str:
        """The base URL clients use; an IPv6 host is bracketed, as URLs require."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self, *, timeout_seconds: float = 10.0) -> Self:
        """Serve in a daemon thread and return once it accepts connections.

        Raises RuntimeError when it does not within `timeout_seconds`, so a test fails
        loudly instead of talking to nothing.
        """
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._socket]},
            name=f"klingflow-emulator-{self.port}",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + timeout_seconds
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the emulator did not start on {self.url}")
            time.sleep(0.005)
        # The process's TLS context: httpx would otherwise load a CA bundle (~25 ms of CPU)
        # for this plain-HTTP client, on every emulator start. It talks to this server
        # only: never through a proxy the environment names.
        self._control = httpx.Client(
            base_url=self.url, timeout=30.0, verify=default_ssl_context(), trust_env=False
        )
        return self

    def stop(self) -> None:
        """Stop serving, within about a second.

        `slow` faults in flight answer 503 at once; any other request still running after
        `STOP_GRACE_SECONDS` is cancelled.
        """
        if self._control is not None:
            self._control.close()
            self._control = None
        if self._thread is not None:
            self.app.state.emulator.interrupt()
            self._server.should_exit = True
            self._thread.join(timeout=10)
            thread, self._thread = self._thread, None
            if thread.is_alive():
                raise RuntimeError(f"the emulator on {self.url} did not stop within 10 s")
        self._socket.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- control API helpers (plain HTTP underneath) ----------------------------------------

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        if self._control is None:
            raise RuntimeError("the emulator is not running: call start() first")
        response = self._control.request(method, path, json=body)
        response.raise_for_status()
        return response.json()

    def configure(self, **patch: Any) -> dict[str, Any]:
        """Change settings at run time (PATCH /_emulator/config); returns the new config."""
        result: dict[str, Any] = self._call("PATCH", "/_emulator/config", to_jsonable_python(patch))
        return result

    def add_fault(self, rule: FaultRule) -> None:
        """Inject a fault (POST /_emulator/faults)."""
        self._call("POST", "/_emulator/faults", rule.model_dump(mode="json"))

    def stats(self) -> dict[str, Any]:
        """What clients really did (GET /_emulator/stats)."""
        result: dict[str, Any] = self._call("GET", "/_emulator/stats")
        return result

    def reset(self, *, keep_config: bool = False) -> None:
        """Forget tasks, stats and faults; restore the starting config unless told otherwise."""
        self._call("POST", "/_emulator/reset", {"keep_config": keep_config})

    def clear_faults(self) -> None:
        """Remove every injected fault (DELETE /_emulator/faults)."""
        self._call("DELETE", "/_emulator/faults")

    def advance(self, seconds: float) -> None:
        """Jump the emulated clock forward."""
        self._call("POST", "/_emulator/time", {"advance_seconds": seconds})

    def now(self) -> float:
        """The emulated time, in epoch seconds (GET /_emulator/time)."""
        return float(self._call("GET", "/_emulator/time")["epoch_seconds"])

    def tasks(self) -> list[dict[str, Any]]:
        """Every task of every key, as PiAPI would show it."""
        result: list[dict[str, Any]] = self._call("GET", "/_emulator/tasks")["tasks"]
        return result
