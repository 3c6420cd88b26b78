"""EmulatorServer stops promptly, whatever is in flight, so tests never wait on teardown."""

from __future__ import annotations

import threading
import time

import httpx

from klingflow.emulator import EmulatorConfig, EmulatorServer, FaultRule

from ..loopback import loopback_client

BODY = {
    "model": "kling",
    "task_type": "video_generation",
    "input": {"prompt": "a fox", "version": "3.0", "duration": 5},
}


def test_stop_cuts_a_slow_fault_in_flight_and_leaves_no_thread() -> None:
    """A 60 s `slow` fault in flight does not hold stop(): its client gets a 503 at once."""
    server = EmulatorServer(EmulatorConfig(time_scale=1e-6)).start()
    server.add_fault(FaultRule(action="slow", method="POST", delay_seconds=60))
    outcome: list[object] = []

    def call() -> None:
        with loopback_client(server.url, headers={"x-api-key": "k"}, timeout=120) as http:
            try:
                outcome.append(http.post("/api/v1/task", json=BODY).status_code)
            except httpx.HTTPError as error:
                outcome.append(error)

    caller = threading.Thread(target=call)
    caller.start()
    while server.stats()["create_requests"] == 0:  # the request is now held by the fault
        time.sleep(0.01)
    name = f"klingflow-emulator-{server.port}"
    server.stop()
    assert name not in {thread.name for thread in threading.enumerate()}
    caller.join()
    assert outcome == [503]


def test_reset_cuts_a_slow_fault_in_flight_so_it_creates_nothing_afterwards(
    emulator: EmulatorServer, api_key: str
) -> None:
    """A create held by a `slow` fault when the emulator is reset answers 503, no task."""
    emulator.add_fault(FaultRule(action="slow", method="POST", delay_seconds=60))
    outcome: list[int] = []

    def call() -> None:
        with loopback_client(emulator.url, headers={"x-api-key": api_key}) as http:
            outcome.append(http.post("/api/v1/task", json=BODY, timeout=120).status_code)

    caller = threading.Thread(target=call)
    caller.start()
    while emulator.stats()["create_requests"] == 0:
        time.sleep(0.01)
    emulator.reset()
    caller.join()
    assert outcome == [503]
    assert emulator.tasks() == []
    assert emulator.stats()["creates"] == 0


def test_an_idle_connection_outlives_the_client_pools_expiry() -> None:
    """A client reuses a connection idle for 5.5 s (past httpx's 5 s default): the emulator
    keeps it open (as nginx would, 75 s), so a create never meets a server closing it."""
    server = EmulatorServer(EmulatorConfig(time_scale=1e-6)).start()
    peers: list[tuple[str, int]] = []

    def remember(response: httpx.Response) -> None:
        stream = response.extensions["network_stream"]
        peers.append(stream.get_extra_info("client_addr"))

    limits = httpx.Limits(keepalive_expiry=30)
    try:
        with loopback_client(
            server.url, headers={"x-api-key": "k"}, limits=limits,
            event_hooks={"response": [remember]},
        ) as http:  # fmt: skip
            assert http.get("/account/info").status_code == 200
            time.sleep(5.5)
            assert http.post("/api/v1/task", json=BODY).status_code == 200
    finally:
        server.stop()
    assert peers[0] == peers[1]  # the same connection, from the same local port
