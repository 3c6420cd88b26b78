"""Fixtures for the client tests: one adapter runs a test body on `PiAPI` or `AsyncPiAPI`."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

import pytest

from klingflow.emulator import EmulatorServer

from ..policies import FAST_RETRY, FAST_WAIT
from .adapter import Api, Flavour, Receiver


@pytest.fixture(params=["sync", "async"])
def flavour(request: pytest.FixtureRequest) -> Flavour:
    return cast(Flavour, request.param)


@pytest.fixture
def make_api(
    flavour: Flavour, emulator: EmulatorServer, api_key: str
) -> Iterator[Callable[..., Api]]:
    """Build clients of the test's flavour against the emulator; all are closed afterwards."""
    made: list[Api] = []

    def make(**options: Any) -> Api:
        settings: dict[str, Any] = {
            "api_key": api_key,
            "base_url": emulator.url,
            "wait_policy": FAST_WAIT,
            "retry_policy": FAST_RETRY,
            **options,
        }
        api = Api(flavour, **settings)
        made.append(api)
        return api

    yield make
    for api in made:
        api.close()


@pytest.fixture
def api(make_api: Callable[..., Api]) -> Api:
    """A client of the test's flavour with fast waits and retries."""
    return make_api()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A webhook receiver (http.server in a thread) on 127.0.0.1 at a free port."""
    state = Receiver(secret="whsec-test-0a9b8c")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            status = state.handle(self.path, dict(self.headers.items()), body)
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep test output quiet

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/piapi"
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)
