"""Waiting for a task to finish: adaptive polling, optionally cut short by webhooks.

Kling jobs take from a minute to many minutes, so the default deadline is an hour (the n8n
node's 60 s and the official CLI's 5 min give up on healthy jobs). Polling starts short
and grows by `factor` to a cap, with jitter so that many waiters do not poll in step.

A webhook is a hint, not the truth (PiAPI does not sign it): a verified delivery for the
task wakes the waiter early, which then confirms with a GET. Polling stays the fallback,
since deliveries can be lost.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field

from klingflow.errors import WaitTimeoutError
from klingflow.piapi.models import TERMINAL_STATUSES, Task
from klingflow.piapi.webhooks import WebhookDelivery

__all__ = [
    "DEFAULT_WAIT_POLICY",
    "TERMINAL_STATUSES",
    "AsyncWebhookEvents",
    "TaskEvent",
    "WaitPolicy",
    "WebhookEvents",
]


@dataclass(frozen=True, kw_only=True)
class WaitPolicy:
    """How long to wait for a task, and how often to look.

    The n-th pause is `min(max_interval_seconds, initial_interval_seconds * factor**n)`,
    then scaled by a random factor in `[1 - jitter, 1 + jitter]`. The last pause is cut to
    end at the deadline, where one final look decides between a result and
    `WaitTimeoutError`.
    """

    deadline_seconds: float = 3600.0
    initial_interval_seconds: float = 2.0
    max_interval_seconds: float = 30.0
    factor: float = 1.5
    jitter: float = 0.1

    def __post_init__(self) -> None:
        if self.deadline_seconds < 0 or self.initial_interval_seconds <= 0:
            raise ValueError("deadline_seconds must be >= 0 and initial_interval_seconds > 0")
        if self.factor < 1 or not 0 <= self.jitter < 1:
            raise ValueError("factor must be >= 1 and jitter in [0, 1)")
        if self.max_interval_seconds < self.initial_interval_seconds:
            raise ValueError("max_interval_seconds must be >= initial_interval_seconds")

    def intervals(self, rng: random.Random | None = None) -> Iterator[float]:
        """The pauses between looks, forever (the deadline is applied by the waiter)."""
        base = self.initial_interval_seconds
        while True:
            spread = (rng or random).uniform(-self.jitter, self.jitter)
            yield base * (1 + spread)
            base = min(self.max_interval_seconds, base * self.factor)


DEFAULT_WAIT_POLICY = WaitPolicy()


@dataclass
class WaitClock:
    """The sans-I/O part of a wait: pauses, the deadline, and which tasks are news."""

    task_id: str
    policy: WaitPolicy
    started: float = field(default_factory=time.monotonic)
    last: Task | None = None
    last_event: int = 0
    _pauses: Iterator[float] = field(init=False)

    def __post_init__(self) -> None:
        self._pauses = self.policy.intervals()

    def is_news(self, task: Task) -> bool:
        """True when `task` differs from the last one seen (so progress hears about it)."""
        news = task != self.last
        self.last = task
        return news

    def next_pause(self) -> float | None:
        """Seconds until the next look, or None when the deadline has passed."""
        left = self.started + self.policy.deadline_seconds - time.monotonic()
        if left <= 0:
            return None
        return min(next(self._pauses), left)

    def timeout_error(self) -> WaitTimeoutError:
        status = self.last.status.value if self.last is not None else "unknown"
        return WaitTimeoutError(
            self.task_id,
            last_status=status,
            waited_seconds=time.monotonic() - self.started,
        )


@dataclass(frozen=True)
class TaskEvent:
    """A task update from a webhook; `sequence` orders the updates an event source received."""

    sequence: int
    task: Task


class _EventStore:
    """What webhook deliveries said, per task, safe to feed from any thread."""

    def __init__(self, *, max_tasks: int = 10_000) -> None:
        self._lock = threading.Lock()
        self._latest: OrderedDict[str, TaskEvent] = OrderedDict()
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._sequence = 0
        self._max = max_tasks

    def put(self, task: Task) -> TaskEvent:
        """Record an update for `task.task_id` (call it only for verified deliveries)."""
        with self._lock:
            self._sequence += 1
            event = TaskEvent(self._sequence, task)
            self._latest[task.task_id] = event
            self._latest.move_to_end(task.task_id)
            while len(self._latest) > self._max:
                self._latest.popitem(last=False)
        self._notify(event)
        return event

    def put_delivery(self, delivery: WebhookDelivery) -> bool:
        """Record a verified delivery unless it is a duplicate; True when it was new."""
        with self._lock:
            if delivery.dedupe_key in self._seen:
                return False
            self._seen[delivery.dedupe_key] = None
            while len(self._seen) > self._max:
                self._seen.popitem(last=False)
        self.put(delivery.task)
        return True

    def latest(self, task_id: str) -> Task | None:
        """The newest update received for `task_id`, if any."""
        with self._lock:
            event = self._latest.get(task_id)
        return None if event is None else event.task

    def _newer(self, task_id: str, after_sequence: int) -> TaskEvent | None:
        event = self._latest.get(task_id)
        return event if event is not None and event.sequence > after_sequence else None

    def _notify(self, event: TaskEvent) -> None:
        raise NotImplementedError


class WebhookEvents(_EventStore):
    """A webhook event source for `PiAPI.wait`: a receiver `put`s, waiters wake at once.

    Feed it from your webhook receiver after `verify_webhook` (any thread).
    """

    def __init__(self, *, max_tasks: int = 10_000) -> None:
        super().__init__(max_tasks=max_tasks)
        self._cond = threading.Condition(self._lock)

    def _notify(self, event: TaskEvent) -> None:
        with self._cond:
            self._cond.notify_all()

    def wait_for(
        self, task_id: str, *, timeout_seconds: float, after_sequence: int = 0
    ) -> TaskEvent | None:
        """The first update for `task_id` newer than `after_sequence`, or None on timeout."""
        deadline = time.monotonic() + timeout_seconds
        with self._cond:
            while (event := self._newer(task_id, after_sequence)) is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)
            return event


class AsyncWebhookEvents(_EventStore):
    """A webhook event source for `AsyncPiAPI.wait`; `put` may be called from any thread."""

    def __init__(self, *, max_tasks: int = 10_000) -> None:
        super().__init__(max_tasks=max_tasks)
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    def _notify(self, event: TaskEvent) -> None:
        with self._lock:
            waiters = list(self._waiters)
        for loop, flag in waiters:
            if not loop.is_closed():
                loop.call_soon_threadsafe(flag.set)

    async def wait_for(
        self, task_id: str, *, timeout_seconds: float, after_sequence: int = 0
    ) -> TaskEvent | None:
        """The first update for `task_id` newer than `after_sequence`, or None on timeout."""
        flag = asyncio.Event()
        waiter = (asyncio.get_running_loop(), flag)
        with self._lock:
            self._waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout_seconds):
                while True:
                    with self._lock:
                        event = self._newer(task_id, after_sequence)
                        flag.clear()
                    if event is not None:
                        return event
                    await flag.wait()
        except TimeoutError:
            return None
        finally:
            with self._lock:
                self._waiters.remove(waiter)
