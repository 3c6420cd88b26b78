"""Client-side limits: a request rate, and how many of our tasks may run at once.

Both are shared by everything that uses one client instance (threads for `PiAPI`, coroutines
for `AsyncPiAPI`). Each is a sans-I/O counter with thin sync and async shells on one base.

The rate limit is a sliding window that counts a request from the moment it is sent until
`per_seconds` after its answer arrived. PiAPI stamps a request somewhere between those two
instants, so no window of `per_seconds` on PiAPI's side ever sees more than `requests` of
ours, whatever the network latency: a client set to the account's limit never gets a 429
for going too fast.

When the limit binds, what is sent first matters: a create starts a render (the account's
slots are what a batch waits on), while a status look can come a moment later at no cost.
So a request marked `is_deferrable` (a status look) waits while any other request waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from collections import deque
from collections.abc import Generator
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "AsyncRequestLimiter",
    "AsyncRequestThrottle",
    "AsyncTaskLimiter",
    "AsyncTaskSlots",
    "RateLimit",
    "RequestThrottle",
    "TaskSlots",
]


@dataclass(frozen=True)
class RateLimit:
    """At most `requests` API requests in any `per_seconds` (60 for "per minute")."""

    requests: int
    per_seconds: float = 60.0

    def __post_init__(self) -> None:
        if self.requests < 1 or self.per_seconds <= 0:
            raise ValueError("a rate limit needs requests >= 1 and per_seconds > 0")

    @classmethod
    def per_minute(cls, requests: int) -> RateLimit:
        """`requests` per minute, the unit PiAPI's plans state their limits in."""
        return cls(requests=requests, per_seconds=60.0)


class _Window:
    """The sliding-window bookkeeping; callers hold a lock around it."""

    def __init__(self, limit: RateLimit) -> None:
        self.limit = limit
        self._in_flight = 0
        self._ended: deque[float] = deque()  # answer times, oldest first
        self.urgent_waiting = 0  # requests that are not deferrable, waiting for their turn

    def try_acquire(self, now: float, *, is_deferrable: bool = False) -> float:
        """0 when a request may go now (and counts it); else seconds to wait (inf: a release).

        A deferrable request waits (inf) while an urgent one does."""
        while self._ended and self._ended[0] <= now - self.limit.per_seconds:
            self._ended.popleft()
        if is_deferrable and self.urgent_waiting:
            return math.inf
        if self._in_flight + len(self._ended) < self.limit.requests:
            self._in_flight += 1
            return 0.0
        if self._ended:
            return self._ended[0] + self.limit.per_seconds - now
        return math.inf

    def release(self, now: float) -> None:
        """Count the answer of a request that went: it leaves the window `per_seconds` later."""
        self._in_flight -= 1
        self._ended.append(now)

    def pauses(self, *, is_deferrable: bool) -> Generator[float | None, None, None]:
        """The pauses before one request may go (None: until a release), then it is counted.

        Both throttles loop over this under their lock, so the turn-taking rule is written
        once: an urgent request that must wait is counted as waiting (deferrable ones wait
        behind it) until it goes or gives up. Close it under the lock, then wake the others.
        """
        is_waiting = False
        try:
            while (wait := self.try_acquire(time.monotonic(), is_deferrable=is_deferrable)) > 0:
                if not is_deferrable and not is_waiting:
                    is_waiting = True
                    self.urgent_waiting += 1
                yield None if math.isinf(wait) else wait
        finally:
            if is_waiting:
                self.urgent_waiting -= 1


class _Throttle:
    """What both throttles share: the limit and its window."""

    def __init__(self, limit: RateLimit) -> None:
        self.limit = limit
        self._window = _Window(limit)


class RequestThrottle(_Throttle):
    """Blocks threads so that requests stay within a `RateLimit`."""

    def __init__(self, limit: RateLimit) -> None:
        super().__init__(limit)
        self._cond = threading.Condition()

    def acquire(self, *, is_deferrable: bool = False) -> None:
        """Block until a request may go; a deferrable one lets the others go first."""
        with self._cond:
            try:
                with contextlib.closing(self._window.pauses(is_deferrable=is_deferrable)) as pauses:
                    for pause in pauses:
                        self._cond.wait(pause)
            finally:
                self._cond.notify_all()  # a waiting urgent request left: deferrable ones may go

    def release(self) -> None:
        """The request's answer arrived: count it, and wake the requests waiting for room."""
        with self._cond:
            self._window.release(time.monotonic())
            self._cond.notify_all()


class AsyncRequestThrottle(_Throttle):
    """Suspends coroutines so that requests stay within a `RateLimit`."""

    def __init__(self, limit: RateLimit) -> None:
        super().__init__(limit)
        self._cond: asyncio.Condition | None = None  # made on first use, inside the loop

    def _condition(self) -> asyncio.Condition:
        self._cond = self._cond or asyncio.Condition()
        return self._cond

    async def acquire(self, *, is_deferrable: bool = False) -> None:
        """Wait until a request may go; a deferrable one lets the others go first."""
        cond = self._condition()
        async with cond:
            try:
                with contextlib.closing(self._window.pauses(is_deferrable=is_deferrable)) as pauses:
                    for pause in pauses:
                        try:
                            async with asyncio.timeout(pause):
                                await cond.wait()
                        except TimeoutError:
                            pass
            finally:
                cond.notify_all()  # a waiting urgent request left: deferrable ones may go

    async def release(self) -> None:
        """The request's answer arrived: count it, and wake the requests waiting for room."""
        cond = self._condition()
        async with cond:
            self._window.release(time.monotonic())
            cond.notify_all()


class _Slots:
    """Which of our tasks are running, plus reservations for submits under way."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("max_concurrent_tasks must be >= 1")
        self.limit = limit
        self.running: dict[str, None] = {}  # insertion-ordered: oldest first
        self.reserved = 0

    def try_reserve(self) -> bool:
        """Take a slot for a submit if one is free (the shells wait and retry)."""
        if len(self.running) + self.reserved < self.limit:
            self.reserved += 1
            return True
        return False

    def bind(self, task_id: str | None) -> None:
        """Turn a reservation into a running task (None: the submit did not create one)."""
        self.reserved -= 1
        if task_id is not None:
            self.running[task_id] = None

    def finish(self, task_id: str) -> bool:
        """Free the task's slot; whether it held one (only then is anyone woken)."""
        return self.running.pop(task_id, 0) is None

    def adopt(self, task_ids: list[str]) -> None:
        """Count tasks submitted elsewhere (an earlier process) until seen finished."""
        for task_id in task_ids:
            self.running.setdefault(task_id, None)


class _TaskSlotsBase:
    """What both task-slot shells share: every change under the shell's lock, and a wake-up
    for submits waiting in `reserve` when a slot frees. Only `reserve` differs (it waits)."""

    def __init__(self, limit: int) -> None:
        self._slots = _Slots(limit)

    @property
    def limit(self) -> int:
        """How many of our tasks may run at once (`max_concurrent_tasks`)."""
        return self._slots.limit

    def _locked(self) -> contextlib.AbstractContextManager[object]:
        raise NotImplementedError

    def _changed(self) -> None:
        raise NotImplementedError

    def running(self) -> list[str]:
        """Ids of the tracked tasks not yet seen in a terminal state, oldest first."""
        with self._locked():
            return list(self._slots.running)

    def bind(self, task_id: str | None) -> None:
        """Turn a submit's reservation into its running task (None: no task was created)."""
        with self._locked():
            self._slots.bind(task_id)
            self._changed()

    def finish(self, task_id: str) -> None:
        """The task was seen terminal (or gone): its slot frees."""
        with self._locked():
            if self._slots.finish(task_id):
                self._changed()

    def adopt(self, task_ids: list[str]) -> None:
        """Count tasks submitted elsewhere (an earlier process) until seen finished."""
        with self._locked():
            self._slots.adopt(task_ids)


class TaskSlots(_TaskSlotsBase):
    """Limits the tasks this client submitted that it has not yet seen finish (threads)."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self._cond = threading.Condition()

    def _locked(self) -> contextlib.AbstractContextManager[object]:
        return self._cond

    def _changed(self) -> None:
        self._cond.notify_all()

    def reserve(self, timeout_seconds: float) -> bool:
        """Take a slot for a submit, waiting up to `timeout_seconds` for one to free up."""
        deadline = time.monotonic() + timeout_seconds
        with self._cond:
            while not self._slots.try_reserve():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True


class AsyncTaskSlots(_TaskSlotsBase):
    """Limits the tasks this client submitted that it has not yet seen finish (asyncio)."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self._event: asyncio.Event | None = None  # made on first use, inside the loop

    def _locked(self) -> contextlib.AbstractContextManager[object]:
        return contextlib.nullcontext()  # one event loop, no await inside: already atomic

    def _event_now(self) -> asyncio.Event:
        self._event = self._event or asyncio.Event()
        return self._event

    def _changed(self) -> None:
        self._event_now().set()

    async def reserve(self, timeout_seconds: float) -> bool:
        """Take a slot for a submit, waiting up to `timeout_seconds` for one to free up."""
        deadline = time.monotonic() + timeout_seconds
        while not self._slots.try_reserve():  # no await between check and take: atomic
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            event = self._event_now()
            event.clear()
            try:
                async with asyncio.timeout(left):
                    await event.wait()
            except TimeoutError:
                return False
        return True


class AsyncRequestLimiter(Protocol):
    """What `AsyncPiAPI` needs of a request throttle; `AsyncRequestThrottle` is one, a limit
    shared by several processes (klingflow's Postgres leases) another."""

    async def acquire(self, *, is_deferrable: bool = False) -> None:
        """Wait until a request may go; a deferrable one lets the others go first."""

    async def release(self) -> None:
        """The request's answer arrived."""


class AsyncTaskLimiter(Protocol):
    """What `AsyncPiAPI` needs of task slots; `AsyncTaskSlots` is one."""

    @property
    def limit(self) -> int:
        """How many of the tasks may run at once."""

    def running(self) -> list[str]:
        """Ids of the tracked tasks not yet seen terminal, oldest first."""

    async def reserve(self, timeout_seconds: float) -> bool:
        """Take a slot for a submit, waiting up to `timeout_seconds`; whether one was taken."""

    def bind(self, task_id: str | None) -> None:
        """Turn a submit's reservation into its running task (None: no task was created)."""

    def finish(self, task_id: str) -> None:
        """The task was seen terminal (or gone): its slot frees."""

    def adopt(self, task_ids: list[str]) -> None:
        """Count tasks submitted elsewhere until seen finished."""
