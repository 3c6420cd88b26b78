"""Outgoing webhook deliveries, with the faults a receiver must survive.

PiAPI POSTs `{"timestamp", "data": <task>}` and echoes the task's secret in
`x-webhook-secret`. Its retry policy is undocumented; we retry non-2xx answers and
connection errors `webhook_max_attempts` times, `webhook_retry_seconds` apart (emulated
clock). Faults: extra delay, duplicates, drops, and reordering, which holds a task's
non-terminal deliveries back until just after its terminal one, so they arrive stale.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from klingflow.emulator.config import EmulatorConfig
from klingflow.emulator.tasks import Clock

__all__ = ["WebhookSender"]

TERMINAL = frozenset({"completed", "failed", "cancelled"})


@dataclass
class WebhookSender:
    """Sends deliveries in the background on the emulator's event loop."""

    config: Callable[[], EmulatorConfig]
    clock: Clock
    rng: random.Random
    on_attempt: Callable[[str, bool], None]  # (task_id, delivered with a 2xx)
    _client: httpx.AsyncClient | None = None
    _inflight: set[asyncio.Task[None]] = field(default_factory=set)
    _held: dict[str, list[tuple[str, str, dict[str, Any]]]] = field(default_factory=dict)

    def send(self, endpoint: str, secret: str, task: dict[str, Any]) -> None:
        """Schedule the delivery of one status of one task."""
        config = self.config()
        faults = config.webhook_faults
        task_id, status = task["task_id"], task["status"]
        if faults.reorder and status not in TERMINAL:
            self._held.setdefault(task_id, []).append((endpoint, secret, task))
            return
        payload = {"timestamp": int(self.clock.now()), "data": task}
        self._launch(endpoint, secret, payload, faults.delay_seconds)
        for endpoint_, secret_, held in reversed(self._held.pop(task_id, [])):
            held_payload = {"timestamp": int(self.clock.now()), "data": held}
            self._launch(endpoint_, secret_, held_payload, faults.delay_seconds + 0.001)

    def _launch(self, endpoint: str, secret: str, payload: dict[str, Any], delay: float) -> None:
        faults = self.config().webhook_faults
        if faults.drop_probability and self.rng.random() < faults.drop_probability:
            return
        copies = 2 if self.rng.random() < faults.duplicate_probability else 1
        for copy in range(copies):
            job = asyncio.get_running_loop().create_task(
                self._deliver(endpoint, secret, payload, delay, copy)
            )
            self._inflight.add(job)
            job.add_done_callback(self._inflight.discard)

    async def _deliver(
        self, endpoint: str, secret: str, payload: dict[str, Any], delay: float, copy: int
    ) -> None:
        config = self.config()
        # Real seconds: a duplicate trails its twin by a hair so the order is stable.
        await asyncio.sleep(self.clock.real_seconds(delay) + copy * 0.001)
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=config.webhook_timeout_seconds)
        headers = {"content-type": "application/json"}
        if secret:
            headers["x-webhook-secret"] = secret
        task_id = payload["data"]["task_id"]
        for attempt in range(config.webhook_max_attempts):
            if attempt:
                await asyncio.sleep(self.clock.real_seconds(config.webhook_retry_seconds))
            try:
                response = await self._client.post(endpoint, json=payload, headers=headers)
            except httpx.HTTPError:
                self.on_attempt(task_id, False)
                continue
            ok = response.is_success
            self.on_attempt(task_id, ok)
            if ok:
                return

    async def aclose(self) -> None:
        """Cancel pending deliveries and close the HTTP client."""
        for job in list(self._inflight):
            job.cancel()
        await asyncio.gather(*self._inflight, return_exceptions=True)
        self._held.clear()
        if self._client is not None:
            await self._client.aclose()
            self._client = None
