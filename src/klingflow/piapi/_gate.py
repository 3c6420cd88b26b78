"""How many requests one client has on the wire at once, creates first.

httpx queues every request its pool cannot serve yet, and httpcore rescans that whole queue
against every pooled connection on each change: with thousands of tasks waited on at once,
submitting slowed to a crawl (74% of the process in the pool's bookkeeping, docs/benchmarks.md
section 5). A client holds its requests here instead, a few dozen on the wire and the rest
waiting in O(1) queues, so httpcore's queue stays short whatever the number of tasks.

Who goes next matters as it does for the rate limit (`throttle.py`): a create starts a render,
a status look can come a moment later at no cost. So a waiting request that is not deferrable
(a create, a confirming GET) always goes before a deferrable one (a poller's look), whatever
their arrival order; each kind is served first come, first served.

A freed place is handed to the next waiter directly (it never goes back to a shared count that
a newcomer could take first), and a waiter that gives up (a cancelled coroutine) after being
handed one passes it on: no place is ever lost.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from typing import Generic, TypeVar

__all__ = ["DEFAULT_MAX_IN_FLIGHT", "AsyncRequestGate", "RequestGate"]

DEFAULT_MAX_IN_FLIGHT = 32
"""Requests a client has on the wire at once by default: far more than any PiAPI rate limit
needs (32 in flight at 300 ms each is 6,400 requests a minute), few enough for httpcore."""

W = TypeVar("W")


class _Places(Generic[W]):
    """The bookkeeping, without waiting: free places and the two queues of waiters.

    A waiter is whatever its shell wakes (a future, an event); callers hold a lock (or run on
    one event loop with no await inside a call)."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("max_in_flight_requests must be >= 1")
        self.size = size
        self.free = size
        self._urgent: deque[W] = deque()
        self._deferred: deque[W] = deque()

    @property
    def waiting(self) -> int:
        """Requests waiting for a place."""
        return len(self._urgent) + len(self._deferred)

    def take(self) -> bool:
        """Take a place now if one is free (one never is while anyone waits: see `release`)."""
        if self.free:
            self.free -= 1
            return True
        return False

    def enqueue(self, waiter: W, *, is_deferrable: bool) -> None:
        """Queue a request that found no place; `release` hands it one."""
        (self._deferred if is_deferrable else self._urgent).append(waiter)

    def release(self) -> W | None:
        """Give a place back: to the first urgent waiter, else the first deferred one (the
        returned waiter now holds it: wake it), else to the free count."""
        for queue in (self._urgent, self._deferred):
            if queue:
                return queue.popleft()
        self.free += 1
        return None

    def forget(self, waiter: W) -> bool:
        """Remove a waiter that gives up; False when it was already handed a place."""
        for queue in (self._urgent, self._deferred):
            try:
                queue.remove(waiter)
            except ValueError:
                continue
            return True
        return False


class RequestGate:
    """At most `size` requests on the wire at once, across threads (`PiAPI`)."""

    def __init__(self, size: int = DEFAULT_MAX_IN_FLIGHT) -> None:
        self._places: _Places[threading.Event] = _Places(size)
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        """How many requests may be on the wire at once."""
        return self._places.size

    @property
    def waiting(self) -> int:
        """Requests waiting for a place now."""
        with self._lock:
            return self._places.waiting

    def acquire(self, *, is_deferrable: bool = False) -> None:
        """Block until this request may go out; a deferrable one lets the others go first."""
        with self._lock:
            if self._places.take():
                return
            handed = threading.Event()
            self._places.enqueue(handed, is_deferrable=is_deferrable)
        try:
            handed.wait()
        except BaseException:  # KeyboardInterrupt in the main thread
            with self._lock:
                if self._places.forget(handed):
                    raise
            self.release()  # it was handed a place meanwhile: pass it on
            raise

    def release(self) -> None:
        """The request's answer arrived: its place goes to the next waiter."""
        with self._lock:
            waiter = self._places.release()
        if waiter is not None:
            waiter.set()


class AsyncRequestGate:
    """At most `size` requests on the wire at once, across coroutines (`AsyncPiAPI`)."""

    def __init__(self, size: int = DEFAULT_MAX_IN_FLIGHT) -> None:
        self._places: _Places[asyncio.Future[None]] = _Places(size)

    @property
    def size(self) -> int:
        """How many requests may be on the wire at once."""
        return self._places.size

    @property
    def waiting(self) -> int:
        """Requests waiting for a place now."""
        return self._places.waiting

    async def acquire(self, *, is_deferrable: bool = False) -> None:
        """Wait until this request may go out; a deferrable one lets the others go first."""
        if self._places.take():  # no await between the check and the take: atomic
            return
        handed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._places.enqueue(handed, is_deferrable=is_deferrable)
        try:
            await handed
        except asyncio.CancelledError:
            if handed.done() and not handed.cancelled():
                self.release()  # it was handed a place as it was cancelled: pass it on
            else:
                self._places.forget(handed)
            raise

    def release(self) -> None:
        """The request's answer arrived: its place goes to the next waiter."""
        while (waiter := self._places.release()) is not None:
            if not waiter.done():  # a cancelled waiter's future is done: try the next
                waiter.set_result(None)
                return
