"""Outgoing webhook deliveries, with the faults a receiver must survive.

PiAPI POSTs `{"timestamp", "data": <task>}` and echoes the task's secret in
`x-webhook-secret`. Its retry policy is undocumented; we retry non-2xx answers and
connection errors up to `webhook_max_attempts` attempts in all, `webhook_retry_seconds` apart.
Delays and retry intervals run on the emulated clock, so `advance` hurries them too.
Deliveries of one task go out one after the other, in the order of its status changes, so
without faults a receiver never sees a stale status after a newer one.

Faults: extra delay, duplicates (a second copy right after the first), drops (never sent),
and reordering, which holds a task's non-terminal deliveries back until just after its
terminal one, newest first, so they arrive stale.
"""

from __future__ import annotations

import asyncio
import functools
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from klingflow.emulator.clock import Clock
from klingflow.emulator.config import EmulatorConfig
from klingflow.piapi._pool import new_client
from klingflow.piapi.models import TERMINAL_STATUSES

__all__ = ["WebhookSender"]

POLL_SECONDS = 0.02  # how soon a waiting delivery notices a jump of the clock (real time)


@dataclass(frozen=True)
class _Delivery:
    endpoint: str
    secret: str
    payload: dict[str, Any]
    at: float  # emulated time of the status change it reports


@dataclass
class WebhookSender:
    """Sends deliveries in the background on the emulator's event loop."""

    config: Callable[[], EmulatorConfig]
    clock: Clock
    rng: random.Random
    on_attempt: Callable[[str, bool], None]  # (task_id, delivered with a 2xx)
    _client: httpx.AsyncClient | None = None
    _inflight: set[asyncio.Task[None]] = field(default_factory=set)
    _tails: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    _held: dict[str, list[_Delivery]] = field(default_factory=dict)
    _closed: bool = False

    def send(
        self, endpoint: str, secret: str, task: dict[str, Any], *, at: float | None = None
    ) -> None:
        """Schedule the delivery of one status of one task (`at`: emulated time of it)."""
        if self._closed:
            return
        task_id, status = task["task_id"], task["status"]
        at = self.clock.now() if at is None else at
        delivery = _Delivery(endpoint, secret, {"timestamp": int(at), "data": task}, at)
        if self.config().webhook_faults.reorder and status not in TERMINAL_STATUSES:
            self._held.setdefault(task_id, []).append(delivery)
            return
        self._queue(task_id, delivery)
        for stale in reversed(self._held.pop(task_id, [])):
            self._queue(task_id, stale)

    def _queue(self, task_id: str, delivery: _Delivery) -> None:
        faults = self.config().webhook_faults
        if faults.drop_probability and self.rng.random() < faults.drop_probability:
            return
        duplicated = faults.duplicate_probability and (
            self.rng.random() < faults.duplicate_probability
        )
        loop = asyncio.get_running_loop()
        due = delivery.at + faults.delay_seconds
        for _copy in range(2 if duplicated else 1):
            # Each delivery waits for the one queued before it for the same task.
            job = loop.create_task(self._deliver(delivery, self._tails.get(task_id), due))
            self._tails[task_id] = job
            self._inflight.add(job)
            job.add_done_callback(functools.partial(self._forget, task_id))

    def _forget(self, task_id: str, job: asyncio.Task[None]) -> None:
        self._inflight.discard(job)
        if self._tails.get(task_id) is job:
            del self._tails[task_id]

    async def _deliver(
        self, delivery: _Delivery, previous: asyncio.Task[None] | None, due: float
    ) -> None:
        if previous is not None:
            await asyncio.wait([previous])
        await self._sleep_until(due)
        config = self.config()
        if self._client is None:
            # A receiver on loopback is reached directly, whatever proxy is set.
            self._client = new_client(httpx.AsyncClient, timeout=config.webhook_timeout_seconds)
        headers = {"content-type": "application/json"}
        if delivery.secret:
            headers["x-webhook-secret"] = delivery.secret
        task_id = delivery.payload["data"]["task_id"]
        for attempt in range(config.webhook_max_attempts):
            if attempt:
                await self._sleep_until(self.clock.now() + config.webhook_retry_seconds)
            try:
                response = await self._client.post(
                    delivery.endpoint,
                    json=delivery.payload,
                    headers=headers,
                    timeout=config.webhook_timeout_seconds,
                )
            except (httpx.HTTPError, httpx.InvalidURL):
                self.on_attempt(task_id, False)
                continue
            ok = response.is_success
            self.on_attempt(task_id, ok)
            if ok:
                return

    async def _sleep_until(self, due: float) -> None:
        """Wait until the emulated clock reads `due`; jumps of the clock count."""
        while (left := due - self.clock.now()) > 0:
            await asyncio.sleep(min(self.clock.real_seconds(left), POLL_SECONDS))

    async def aclose(self) -> None:
        """Cancel pending deliveries, refuse new ones, and close the HTTP client."""
        self._closed = True
        self._held.clear()
        for job in list(self._inflight):
            job.cancel()
        await asyncio.gather(*self._inflight, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None
