"""Requests on the wire at once: a client waiting on thousands of tasks sends a few dozen
requests at a time (httpx's pool degrades with a long queue), and creates go before looks."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import httpx
import pytest

from klingflow.emulator import EmulatorServer, FaultRule
from klingflow.piapi import AsyncPiAPI, KlingVideoRequest, PiAPI
from klingflow.piapi._gate import AsyncRequestGate
from klingflow.piapi.tls import default_ssl_context

from ..policies import FAST_RETRY, FAST_WAIT
from .adapter import Api, Flavour

REQUEST = KlingVideoRequest(prompt="a paper boat", duration=3)
TASK_PATH = "/api/v1/task"


class Witness:
    """What reaches httpx's real transport (its connection pool): the requests in order, and
    how many were open at once (from handing over to the answer's headers)."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.open = 0
        self.peak = 0
        self._lock = threading.Lock()

    def enter(self, request: httpx.Request) -> None:
        with self._lock:
            self.sent.append(request.method)
            self.open += 1
            self.peak = max(self.peak, self.open)

    def leave(self) -> None:
        with self._lock:
            self.open -= 1


class Watched(httpx.BaseTransport):
    def __init__(self, witness: Witness) -> None:
        self.witness, self.inner = witness, httpx.HTTPTransport(verify=default_ssl_context())

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.witness.enter(request)
        try:
            return self.inner.handle_request(request)
        finally:
            self.witness.leave()

    def close(self) -> None:
        self.inner.close()


class AsyncWatched(httpx.AsyncBaseTransport):
    def __init__(self, witness: Witness) -> None:
        self.witness, self.inner = witness, httpx.AsyncHTTPTransport(verify=default_ssl_context())

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.witness.enter(request)
        try:
            return await self.inner.handle_async_request(request)
        finally:
            self.witness.leave()

    async def aclose(self) -> None:
        await self.inner.aclose()


def watched(flavour: Flavour, witness: Witness) -> httpx.BaseTransport | httpx.AsyncBaseTransport:
    return Watched(witness) if flavour == "sync" else AsyncWatched(witness)


def test_many_concurrent_requests_keep_only_max_in_flight_on_the_wire(
    make_api: Callable[..., Api], flavour: Flavour, emulator: EmulatorServer
) -> None:
    """30 status reads at once, each held 0.1 s by the server, reach the pool 4 at a time,
    and all are answered."""
    witness = Witness()
    api = make_api(max_in_flight_requests=4, transport=watched(flavour, witness))
    task = api.submit(REQUEST)
    emulator.add_fault(
        FaultRule(action="slow", method="GET", path=TASK_PATH, delay_seconds=0.1, times=None)
    )
    answers = api.concurrently([api.later("get", task.task_id) for _ in range(30)])
    assert [a.task_id for a in answers] == [task.task_id] * 30
    assert witness.peak == 4
    assert emulator.stats()["gets"] == 30


def test_the_default_bound_is_a_few_dozen(
    make_api: Callable[..., Api], flavour: Flavour, emulator: EmulatorServer
) -> None:
    """Without the option, 80 reads at once still reach the pool at most 32 at a time."""
    witness = Witness()
    api = make_api(transport=watched(flavour, witness))
    task = api.submit(REQUEST)
    emulator.add_fault(
        FaultRule(action="slow", method="GET", path=TASK_PATH, delay_seconds=0.2, times=None)
    )
    api.concurrently([api.later("get", task.task_id) for _ in range(80)])
    assert witness.peak == 32


def test_max_in_flight_requests_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="max_in_flight_requests"):
        PiAPI(api_key="k", max_in_flight_requests=0)


def test_a_create_overtakes_status_looks_queued_before_it_sync(
    emulator: EmulatorServer, api_key: str
) -> None:
    """One request on the wire at a time; four waits look at a task (the first look held
    1 s by the server, three queued behind it); a create that comes after them goes next."""
    witness = Witness()
    with PiAPI(
        api_key=api_key,
        base_url=emulator.url,
        wait_policy=FAST_WAIT,
        retry_policy=FAST_RETRY,
        max_in_flight_requests=1,
        transport=Watched(witness),
    ) as client:
        first = client.submit(REQUEST)
        emulator.add_fault(FaultRule(action="slow", method="GET", path=TASK_PATH, delay_seconds=1))
        waits = [threading.Thread(target=client.wait, args=(first.task_id,)) for _ in range(4)]
        for thread in waits:
            thread.start()
        deadline = time.monotonic() + 10
        while client._gate.waiting < 3 and time.monotonic() < deadline:
            time.sleep(0.005)  # until three looks queue behind the held one
        client.submit(REQUEST)
        for thread in waits:
            thread.join()
    assert witness.sent[:3] == ["POST", "GET", "POST"]
    assert emulator.stats()["creates"] == 2


def test_a_create_overtakes_status_looks_queued_before_it_async(
    emulator: EmulatorServer, api_key: str
) -> None:
    """The same in asyncio: the create goes right after the look that holds the wire."""
    witness = Witness()

    async def scenario() -> None:
        async with AsyncPiAPI(
            api_key=api_key,
            base_url=emulator.url,
            wait_policy=FAST_WAIT,
            retry_policy=FAST_RETRY,
            max_in_flight_requests=1,
            transport=AsyncWatched(witness),
        ) as client:
            first = await client.submit(REQUEST)
            emulator.add_fault(
                FaultRule(action="slow", method="GET", path=TASK_PATH, delay_seconds=1)
            )
            waits = [asyncio.create_task(client.wait(first.task_id)) for _ in range(4)]
            async with asyncio.timeout(10):
                while client._gate.waiting < 3:
                    await asyncio.sleep(0)  # until three looks queue behind the held one
            await client.submit(REQUEST)
            await asyncio.gather(*waits)

    asyncio.run(scenario())
    assert witness.sent[:3] == ["POST", "GET", "POST"]
    assert emulator.stats()["creates"] == 2


def test_a_cancelled_waiter_never_loses_a_place() -> None:
    """A coroutine cancelled while queued, or just as it was handed the place, passes the
    place on: the next waiter still gets it (else it would wait forever)."""

    async def scenario() -> list[str]:
        gate = AsyncRequestGate(1)
        got: list[str] = []
        await gate.acquire()

        async def take(name: str) -> None:
            await gate.acquire()
            got.append(name)
            gate.release()

        queued = asyncio.create_task(take("cancelled while queued"))
        handed = asyncio.create_task(take("cancelled when handed"))
        last = asyncio.create_task(take("last"))
        await asyncio.sleep(0)
        queued.cancel()
        await asyncio.sleep(0)
        gate.release()  # hands the place to `handed`...
        handed.cancel()  # ...which is cancelled before it runs
        async with asyncio.timeout(5):
            await last
        return got

    assert asyncio.run(scenario()) == ["last"]
