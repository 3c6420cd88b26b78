"""Webhook deliveries into a real receiver on loopback: payload, secret, triggers, retries, faults.

Each test posts to an endpoint path of its own and filters by task id, so a stray delivery
of an earlier test (whose ids would repeat after a reset under a fixed `seed`) never counts.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from klingflow.emulator import EmulatorServer, FaultRule
from klingflow.piapi.models import Task

from ..loopback import LoopbackServer, loopback_client, without_proxies

WAIT_SECONDS = 10.0  # an upper bound for slow machines, never a timing assertion


@dataclass(frozen=True)
class Delivery:
    """One POST the receiver got."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def status(self) -> str:
        status: str = self.body["data"]["status"]
        return status

    @property
    def task_id(self) -> str:
        task_id: str = self.body["data"]["task_id"]
        return task_id


class Receiver:
    """A webhook endpoint under uvicorn in a thread that records every delivery."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._deliveries: list[Delivery] = []
        self._answers: deque[int] = deque()
        app = Starlette(routes=[Route("/{path:path}", self._hook, methods=["POST"])])
        self._app = app
        self._server = LoopbackServer()
        self.base_url = self._server.url
        self.path = "/hook"

    async def _hook(self, request: Request) -> Response:
        body = await request.json()
        with self._lock:
            self._deliveries.append(Delivery(request.url.path, dict(request.headers), body))
            status = self._answers.popleft() if self._answers else 200
        return Response(status_code=status)

    def start(self) -> None:
        self._server.start(
            self._app, lifespan="off", access_log=False, timeout_seconds=WAIT_SECONDS
        )

    def stop(self) -> None:
        self._server.stop(timeout_seconds=WAIT_SECONDS)

    @property
    def url(self) -> str:
        """The endpoint of the current test."""
        return self.base_url + self.path

    def reset(self) -> None:
        """Forget everything and move to a new endpoint path."""
        with self._lock:
            self._deliveries.clear()
            self._answers.clear()
            self.path = f"/hook/{uuid.uuid4().hex}"

    def answer(self, *statuses: int) -> None:
        """Answer the next deliveries with these HTTP statuses (then 200 again)."""
        with self._lock:
            self._answers.extend(statuses)

    def got(self, task_id: str, *, path: str | None = None) -> list[Delivery]:
        """The task's deliveries to the current endpoint (or to `path`) so far."""
        with self._lock:
            wanted = path or self.path
            return [d for d in self._deliveries if d.task_id == task_id and d.path == wanted]

    def wait_for(self, task_id: str, count: int) -> list[Delivery]:
        """The task's deliveries once there are at least `count` of them."""
        deadline = time.monotonic() + WAIT_SECONDS
        while len(got := self.got(task_id)) < count:
            assert time.monotonic() < deadline, f"only {len(got)} of {count} deliveries came"
            time.sleep(0.005)
        return got


@pytest.fixture(scope="module")
def receiver_server() -> Iterator[Receiver]:
    """One receiver for the module."""
    receiver = Receiver()
    receiver.start()
    yield receiver
    receiver.stop()


@pytest.fixture
def receiver(receiver_server: Receiver, emulator: EmulatorServer) -> Receiver:
    """The receiver, emptied after the emulator reset (which cancels old deliveries)."""
    receiver_server.reset()
    return receiver_server


def _create(
    client: httpx.Client,
    endpoint: str,
    secret: str = "shh",  # noqa: S107 - a test secret
    **input_: Any,
) -> dict[str, Any]:
    body = {
        "model": "kling",
        "task_type": "video_generation",
        "input": {"prompt": "a heron", "version": "3.0", "duration": 3, **input_},
        "config": {"webhook_config": {"endpoint": endpoint, "secret": secret}},
    }
    response = client.post("/api/v1/task", json=body)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def _get(client: httpx.Client, task_id: str) -> dict[str, Any]:
    data: dict[str, Any] = client.get(f"/api/v1/task/{task_id}").json()["data"]
    return data


def _wait_status(client: httpx.Client, task_id: str, status: str) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT_SECONDS
    while (task := _get(client, task_id))["status"] != status:
        assert time.monotonic() < deadline, f"task stayed {task['status']}"
        time.sleep(0.005)
    return task


def _stat(emulator: EmulatorServer, task_id: str, name: str) -> int:
    value: int = emulator.stats()["tasks"].get(task_id, {}).get(name, 0)
    return value


def _wait_stat(emulator: EmulatorServer, task_id: str, name: str, count: int) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while _stat(emulator, task_id, name) < count:
        assert time.monotonic() < deadline, f"{name} never reached {count}"
        time.sleep(0.005)


def test_terminal_delivery_carries_the_task_and_the_secret(
    emulator: EmulatorServer, client: httpx.Client, receiver: Receiver
) -> None:
    """On completion the endpoint gets {timestamp, data: <the GET task>} and x-webhook-secret."""
    task_id = _create(client, receiver.url)["task_id"]
    [delivery] = receiver.wait_for(task_id, 1)
    assert delivery.headers["x-webhook-secret"] == "shh"
    assert delivery.headers["content-type"] == "application/json"
    assert set(delivery.body) == {"timestamp", "data"}
    task = _get(client, task_id)
    assert delivery.body["data"] == task
    assert delivery.body["data"]["config"]["webhook_config"]["secret"] == "shh"
    ended_at = Task.model_validate(task).meta.ended_at
    assert ended_at is not None
    assert delivery.body["timestamp"] == int(ended_at.timestamp())


def test_only_terminal_statuses_are_delivered_by_default(
    emulator: EmulatorServer, client: httpx.Client, receiver: Receiver
) -> None:
    """Without webhook_on_every_status, pending and processing are never posted."""
    task_id = _create(client, receiver.url)["task_id"]
    _wait_status(client, task_id, "completed")
    # Deliveries of one task go out in order, so earlier ones would have come first.
    assert [d.status for d in receiver.wait_for(task_id, 1)] == ["completed"]


def test_without_a_secret_there_is_no_secret_header(
    emulator: EmulatorServer, client: httpx.Client, receiver: Receiver
) -> None:
    """An empty secret sends no x-webhook-secret header."""
    task_id = _create(client, receiver.url, secret="")["task_id"]
    [delivery] = receiver.wait_for(task_id, 1)
    assert "x-webhook-secret" not in delivery.headers


def test_failed_tasks_are_delivered_with_their_error(
    emulator: EmulatorServer, client: httpx.Client, receiver: Receiver
) -> None:
    """A generation failure is posted once, as `failed` with the error block."""
    emulator.add_fault(FaultRule(action="fail_task"))
    task_id = _create(client, receiver.url)["task_id"]
    [delivery] = receiver.wait_for(task_id, 1)
    assert delivery.status == "failed"
    assert delivery.body["data"]["error"]["code"] == 10000


def test_cancelled_tasks_are_delivered(
    paused: EmulatorServer, client: httpx.Client, receiver: Receiver
) -> None:
    """Cancelling a pending task posts its terminal state (failed, "task cancelled")."""
    task_id = _create(client, receiver.url)["task_id"]
    assert client.delete(f"/api/v1/task/{task_id}").status_code == 200
    [delivery] = receiver.wait_for(task_id, 1)
    assert delivery.status == "failed"
    assert delivery.body["data"]["error"]["message"] == "task cancelled"


def test_every_status_includes_the_creation_state_in_order(
    paused: EmulatorServer, client: httpx.Client, receiver: Receiver
) -> None:
    """With webhook_on_every_status the creation state comes first, then each change in order."""
    paused.configure(webhook_on_every_status=True)
    created = _create(client, receiver.url)
    task_id = created["task_id"]
    [first] = receiver.wait_for(task_id, 1)
    assert first.status == "pending"
    assert first.body["data"] == created
    paused.advance(2)
    paused.advance(60)
    deliveries = receiver.wait_for(task_id, 3)
    assert [d.status for d in deliveries] == ["pending", "processing", "completed"]
    task = Task.model_validate(_get(client, task_id))
    stamps = [task.meta.created_at, task.meta.started_at, task.meta.ended_at]
    assert [d.body["timestamp"] for d in deliveries] == [
        int(stamp.timestamp()) for stamp in stamps if stamp is not None
    ]


def test_one_clock_jump_still_delivers_every_status_in_order(
    paused: EmulatorServer, client: httpx.Client, receiver: Receiver
) -> None:
    """Changes applied together by a jump of the clock arrive in the order they happened."""
    paused.configure(webhook_on_every_status=True, concurrency_limit=1)
    _create(client, receiver.url)
    task_id = _create(client, receiver.url)["task_id"]
    paused.advance(1000)
    statuses = [d.status for d in receiver.wait_for(task_id, 4)]
    assert statuses == ["staged", "pending", "processing", "completed"]


def test_non_2xx_answers_are_retried(
    emulator: EmulatorServer, client: httpx.Client, receiver: Receiver
) -> None:
    """A 500 then a 503 are retried; the third attempt's 200 ends it; stats count all three."""
    receiver.answer(500, 503)
    task_id = _create(client, receiver.url)["task_id"]
    deliveries = receiver.wait_for(task_id, 3)
    assert [d.status for d in deliveries] == ["completed"] * 3
    assert deliveries[0].body == deliveries[1].body == deliveries[2].body
    _wait_stat(emulator, task_id, "webhook_deliveries", 3)
    assert _stat(emulator, task_id, "webhook_failures") == 2


def test_retries_stop_after_webhook_max_attempts(
    emulator: EmulatorServer, client: httpx.Client, receiver: Receiver
) -> None:
    """After max attempts a delivery is given up and the task's next status is sent."""
    emulator.configure(webhook_on_every_status=True, webhook_max_attempts=2)
    receiver.answer(500, 500)
    task_id = _create(client, receiver.url)["task_id"]
    deliveries = receiver.wait_for(task_id, 4)
    assert [d.status for d in deliveries] == ["pending", "pending", "processing", "completed"]


def test_unreachable_endpoints_are_retried_then_given_up(
    emulator: EmulatorServer, client: httpx.Client
) -> None:
    """Connection errors count as failed attempts, up to webhook_max_attempts."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    task_id = _create(client, f"http://127.0.0.1:{closed_port}/hook")["task_id"]
    _wait_stat(emulator, task_id, "webhook_failures", 3)
    assert _stat(emulator, task_id, "webhook_deliveries") == 3


def test_duplicate_fault_sends_identical_copies(
    emulator: EmulatorServer, client: httpx.Client, receiver: Receiver
) -> None:
    """With duplicate_probability 1 each delivery arrives twice, byte for byte the same."""
    emulator.configure(webhook_faults={"duplicate_probability": 1.0})
    task_id = _create(client, receiver.url)["task_id"]
    first, second = receiver.wait_for(task_id, 2)
    assert first.body == second.body
    assert first.headers["x-webhook-secret"] == second.headers["x-webhook-secret"]


def test_drop_fault_never_sends(
    emulator: EmulatorServer, client: httpx.Client, receiver: Receiver
) -> None:
    """With drop_probability 1 nothing is posted; a later task, undropped, still arrives."""
    emulator.configure(webhook_faults={"drop_probability": 1.0})
    dropped = _create(client, receiver.url)["task_id"]
    _wait_status(client, dropped, "completed")
    emulator.configure(webhook_faults={"drop_probability": 0.0})
    kept = _create(client, receiver.url)["task_id"]
    receiver.wait_for(kept, 1)
    assert receiver.got(dropped) == []
    assert _stat(emulator, dropped, "webhook_deliveries") == 0


def test_reorder_fault_delivers_stale_statuses_after_the_terminal_one(
    paused: EmulatorServer, client: httpx.Client, receiver: Receiver
) -> None:
    """With reorder, the terminal status comes first and the older ones after it, newest first."""
    paused.configure(webhook_on_every_status=True, webhook_faults={"reorder": True})
    task_id = _create(client, receiver.url)["task_id"]
    paused.advance(2)
    assert receiver.got(task_id) == []  # held back until the end
    paused.advance(60)
    statuses = [d.status for d in receiver.wait_for(task_id, 3)]
    assert statuses == ["completed", "processing", "pending"]


def test_delay_fault_holds_deliveries_back_on_the_emulated_clock(
    paused: EmulatorServer, client: httpx.Client, receiver: Receiver
) -> None:
    """A webhook delay of N emulated seconds posts the delivery N seconds after the change."""
    paused.configure(webhook_faults={"delay_seconds": 100.0})
    task_id = _create(client, receiver.url)["task_id"]
    paused.advance(62)
    assert _get(client, task_id)["status"] == "completed"
    paused.advance(99)
    assert receiver.got(task_id) == []  # the clock stands still: nothing can be due yet
    paused.advance(1)
    [delivery] = receiver.wait_for(task_id, 1)
    assert delivery.status == "completed"
    # The payload keeps the time of the change, not of the delivery.
    ended_at = Task.model_validate(delivery.body["data"]).meta.ended_at
    assert ended_at is not None
    assert delivery.body["timestamp"] == int(ended_at.timestamp())


def test_retries_follow_the_emulated_clock(
    paused: EmulatorServer, client: httpx.Client, receiver: Receiver
) -> None:
    """A retry comes webhook_retry_seconds of emulated time later, so advance brings it on."""
    paused.configure(webhook_retry_seconds=30)
    receiver.answer(500)
    task_id = _create(client, receiver.url)["task_id"]
    paused.advance(62)
    assert len(receiver.wait_for(task_id, 1)) == 1
    _wait_stat(paused, task_id, "webhook_failures", 1)  # the retry is scheduled from here
    paused.advance(29)
    assert len(receiver.got(task_id)) == 1
    paused.advance(1)
    assert len(receiver.wait_for(task_id, 2)) == 2


def test_a_proxy_in_the_environment_is_not_used_for_loopback(
    receiver: Receiver,
    emulator: EmulatorServer,
    api_key: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Behind a company's proxy (HTTP_PROXY set, loopback not in NO_PROXY), an emulator
    still reaches itself and delivers to a receiver on loopback: no proxy elsewhere could."""
    without_proxies(monkeypatch)
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    with (
        EmulatorServer(emulator.config) as fresh,  # its control client made under it
        loopback_client(fresh.url, headers={"x-api-key": api_key}, trust_env=False) as client,
    ):
        task_id = _create(client, receiver.url)["task_id"]
        _wait_status(client, task_id, "completed")
        [*_, last] = receiver.wait_for(task_id, 1)
        assert last.status == "completed"
        assert fresh.stats()["tasks"][task_id]["webhook_deliveries"] >= 1


def test_reset_cancels_deliveries_in_flight(
    emulator: EmulatorServer, client: httpx.Client, receiver: Receiver
) -> None:
    """A reset drops pending deliveries: they never arrive, and the new stats don't count them.

    The old delivery is due 3 s (real) after its task completed: the reset must come before,
    which took more than the 1 s this test first allowed in a loaded full run."""
    emulator.configure(webhook_faults={"delay_seconds": 3000.0})  # 3 s of real time at x1000
    old_path = receiver.path + "-before-reset"
    old = _create(client, receiver.base_url + old_path)["task_id"]
    _wait_status(client, old, "completed")
    due = time.monotonic() + 3.0  # at the latest: it completed before this look saw it
    emulator.reset()
    new = _create(client, receiver.url)["task_id"]
    receiver.wait_for(new, 1)
    time.sleep(max(0.0, due + 0.3 - time.monotonic()))  # past the moment it was due
    assert receiver.got(old, path=old_path) == []
    assert emulator.stats()["webhook_deliveries"] == 1
