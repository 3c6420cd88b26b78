"""Test helpers for the client tests: a sync/async adapter and a webhook receiver's state."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from klingflow.errors import WebhookVerificationError
from klingflow.piapi import (
    AccountInfo,
    ActiveTaskCounts,
    AsyncPiAPI,
    AsyncWebhookEvents,
    PiAPI,
    Task,
    WebhookDelivery,
    WebhookEvents,
    verify_webhook,
)

Flavour = Literal["sync", "async"]


class Api:
    """One client, sync or async, driven through blocking calls so one test body fits both."""

    def __init__(self, flavour: Flavour, **options: Any) -> None:
        self.flavour = flavour
        self.options = options
        self._loop: asyncio.AbstractEventLoop | None = None
        self.client: PiAPI | AsyncPiAPI
        if flavour == "sync":
            self.client = PiAPI(**options)
        else:
            self._loop = asyncio.new_event_loop()
            self.client = AsyncPiAPI(**options)

    def run(self, outcome: Any) -> Any:
        """Return a sync result as is, or run an async one to completion."""
        if self._loop is None:
            return outcome
        return self._loop.run_until_complete(outcome)

    def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return self.run(getattr(self.client, name)(*args, **kwargs))

    def submit(self, request: Any, **kwargs: Any) -> Task:
        return cast(Task, self.call("submit", request, **kwargs))

    def get(self, task_id: str, **kwargs: Any) -> Task:
        return cast(Task, self.call("get", task_id, **kwargs))

    def wait(self, task_id: str, **kwargs: Any) -> Task:
        return cast(Task, self.call("wait", task_id, **kwargs))

    def cancel(self, task_id: str, **kwargs: Any) -> Task:
        return cast(Task, self.call("cancel", task_id, **kwargs))

    def account(self, **kwargs: Any) -> AccountInfo:
        return cast(AccountInfo, self.call("account", **kwargs))

    def active_tasks(self, **kwargs: Any) -> dict[str, ActiveTaskCounts]:
        return cast(dict[str, ActiveTaskCounts], self.call("active_tasks", **kwargs))

    def download(self, task_or_url: Task | str, dest: Path | str, **kwargs: Any) -> Path:
        return cast(Path, self.call("download", task_or_url, dest, **kwargs))

    def generate(self, request: Any, dest: Path, **kwargs: Any) -> tuple[Task, Path]:
        return cast(tuple[Task, Path], self.call("generate", request, dest, **kwargs))

    def events(self) -> WebhookEvents | AsyncWebhookEvents:
        """The webhook event source that fits this client's `wait`."""
        return WebhookEvents() if self._loop is None else AsyncWebhookEvents()

    def later(self, name: str, *args: Any, **kwargs: Any) -> Callable[[], Any]:
        """A call of one client method, to run later with `concurrently`."""
        return lambda: getattr(self.client, name)(*args, **kwargs)

    def submit_and_wait_later(self, request: Any) -> Callable[[], Any]:
        """A submit followed by a wait on the new task, to run later with `concurrently`."""
        client = self.client
        if isinstance(client, PiAPI):
            return lambda: client.wait(client.submit(request).task_id)

        async def job() -> Task:
            task = await client.submit(request)
            return await client.wait(task.task_id)

        return job

    def concurrently(self, calls: list[Callable[[], Any]]) -> list[Any]:
        """Run zero-argument calls at once: threads for sync, `gather` for async."""
        if self._loop is None:
            with ThreadPoolExecutor(max_workers=len(calls)) as pool:
                return [f.result() for f in [pool.submit(call) for call in calls]]

        async def gather() -> list[Any]:
            return list(await asyncio.gather(*(cast(Coroutine[Any, Any, Any], c()) for c in calls)))

        return self._loop.run_until_complete(gather())

    def close(self) -> None:
        if isinstance(self.client, PiAPI):
            self.client.close()
        elif self._loop is not None:
            self._loop.run_until_complete(self.client.aclose())
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()


@dataclass
class Receiver:
    """A real webhook receiver on loopback: verifies each delivery, then feeds `events`."""

    secret: str
    url: str = ""
    events: list[WebhookEvents | AsyncWebhookEvents] = field(default_factory=list)
    deliveries: list[WebhookDelivery] = field(default_factory=list)
    rejected: int = 0
    paths: list[str] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> int:
        self.paths.append(path)
        self.bodies.append(body)
        try:
            delivery = verify_webhook(headers, body, secret=self.secret)
        except WebhookVerificationError:
            self.rejected += 1
            return 401
        self.deliveries.append(delivery)
        for source in self.events:
            source.put_delivery(delivery)
        return 200


def eventually(condition: Callable[[], bool], *, timeout_seconds: float = 5.0) -> bool:
    """Poll `condition` every 10 ms until it holds (True) or the timeout passes (False)."""
    deadline = time.monotonic() + timeout_seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True
