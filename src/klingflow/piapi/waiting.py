"""Waiting for a task to finish: looks shaped by the expected render time, cut short by webhooks.

Kling jobs take from a minute to many minutes, so the default deadline is an hour (the n8n
node's 60 s and the official CLI's 5 min give up on healthy jobs). A status GET spends the
same request budget (PiAPI's per-minute limit) that creates need, so a look is worth making
only when the task may be done: `RenderTimes` says how long a task of its kind (version,
mode, duration, audio) should take, from PiAPI-typical defaults and then from the durations
actually seen, and `LookSchedule` places the first look just after that time, then backs off
(`factor`, with jitter so that many waiters do not poll in step). A task whose kind was never
seen on this client is probed from `initial_interval_seconds`, growing, until one finishes.

A webhook is a hint, not the truth (PiAPI does not sign it): a verified delivery for the
task wakes the waiter early, which then confirms with a GET. When webhooks are configured,
polling is only a safety net: the first look comes well after the expected time, then
sparse looks, since deliveries can be lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import statistics
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from klingflow.errors import WaitTimeoutError
from klingflow.piapi.models import TERMINAL_STATUSES, Task
from klingflow.piapi.server_clock import ServerClock
from klingflow.piapi.webhooks import WebhookDelivery

__all__ = [
    "DEFAULT_WAIT_POLICY",
    "TERMINAL_STATUSES",
    "AsyncWebhookEvents",
    "LookSchedule",
    "RenderTimes",
    "TaskEvent",
    "WaitPolicy",
    "WebhookEvents",
]


@dataclass(frozen=True, kw_only=True)
class WaitPolicy:
    """How long to wait for a task, and how often to look.

    Without an expected render time (`intervals`), the n-th pause is
    `min(max_interval_seconds, initial_interval_seconds * factor**n)`, then scaled by a random
    factor in `[1 - jitter, 1 + jitter]`. With one, `LookSchedule` decides, and
    `max_interval_seconds` (when set) still caps every pause. `None`, the default, caps
    pauses at a quarter of the expected render time (at least 30 s), so a 10-minute render
    costs a handful of looks rather than one every 30 s. The last pause is cut to end at the
    deadline, where one final look decides between a result and `WaitTimeoutError`.

    `margin` is how far past the expected time the first look comes (0.05: 5 % later);
    `webhook_grace` multiplies the expected time before the first safety-net look when a
    webhook is coming. `time_scale` says how much faster than PiAPI the server renders (an
    emulator's `time_scale`): PiAPI-typical render times are divided by it.
    """

    deadline_seconds: float = 3600.0
    initial_interval_seconds: float = 2.0
    max_interval_seconds: float | None = None
    factor: float = 1.5
    jitter: float = 0.1
    margin: float = 0.05
    webhook_grace: float = 2.0
    time_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.deadline_seconds < 0 or self.initial_interval_seconds <= 0:
            raise ValueError("deadline_seconds must be >= 0 and initial_interval_seconds > 0")
        if self.factor < 1 or not 0 <= self.jitter < 1:
            raise ValueError("factor must be >= 1 and jitter in [0, 1)")
        if self.max_interval_seconds is not None and (
            self.max_interval_seconds < self.initial_interval_seconds
        ):
            raise ValueError("max_interval_seconds must be >= initial_interval_seconds")
        if self.margin < 0 or self.webhook_grace < 1 or self.time_scale <= 0:
            raise ValueError("margin must be >= 0, webhook_grace >= 1 and time_scale > 0")

    def cap_seconds(self, expected_seconds: float | None = None) -> float:
        """The longest pause: `max_interval_seconds`, else a quarter of the expected time."""
        if self.max_interval_seconds is not None:
            return self.max_interval_seconds
        floor = max(DEFAULT_MAX_INTERVAL_SECONDS, self.initial_interval_seconds)
        return max(floor, 0.25 * (expected_seconds or 0.0))

    def intervals(self, rng: random.Random | None = None) -> Iterator[float]:
        """The pauses between looks, forever (the deadline is applied by the waiter)."""
        base = self.initial_interval_seconds
        cap = self.cap_seconds()
        while True:
            spread = (rng or random).uniform(-self.jitter, self.jitter)
            yield base * (1 + spread)
            base = min(cap, base * self.factor)


DEFAULT_MAX_INTERVAL_SECONDS = 30.0
"""The longest pause between looks when nothing says a task will take long."""


DEFAULT_WAIT_POLICY = WaitPolicy()


TYPICAL_RENDER_SECONDS = 150.0
"""What a std-mode, 5-second Kling video usually takes at PiAPI (2-3 minutes)."""
PRO_MODE_FACTOR = 2.0
AUDIO_EXTRA_SECONDS = 60.0
HISTORY = 20
"""Recent finishes of one kind of task that its expected time is learned from."""
AGREE = 0.02
"""Render times within 2 % of each other count as one (noise of converting clocks)."""


def render_kind(task_input: Mapping[str, Any], *, task_type: str = "video_generation") -> str:
    """The kind of render a task is, for learning how long such renders take."""
    duration = task_input.get("duration", 5)
    shots = task_input.get("multi_shots")
    if isinstance(shots, list):
        duration = sum(int(shot.get("duration", 0)) for shot in shots if isinstance(shot, dict))
    audio = "/audio" if task_input.get("enable_audio") else ""
    mode = task_input.get("mode", "std")
    return f"{task_type}/{task_input.get('version', '')}/{mode}/{duration}s{audio}"


def typical_render_seconds(task_input: Mapping[str, Any]) -> float:
    """PiAPI-typical render time (seconds) for a task input, before any has been seen.

    Rough on purpose: 150 s for 5 s of std video, twice that in pro mode, growing with the
    duration as `(seconds / 5) ** 0.7`, plus a minute for audio. A 10-second pro video with
    audio comes to about 9 minutes.
    """
    try:
        duration = float(task_input.get("duration", 5) or 5)
    except (TypeError, ValueError):
        duration = 5.0
    seconds: float = TYPICAL_RENDER_SECONDS * (max(duration, 1.0) / 5.0) ** 0.7
    if task_input.get("mode") == "pro" or task_input.get("professional_mode"):
        seconds *= PRO_MODE_FACTOR
    if task_input.get("enable_audio"):
        seconds += AUDIO_EXTRA_SECONDS
    return seconds


class RenderTimes:
    """How long each kind of render takes, learned from the tasks seen finishing.

    A finish is known only between two looks: the task was not done `lower_seconds` after its
    submission and was done at `upper_seconds`. For one kind of render, the latest lower
    bound and the earliest upper bound of the last `HISTORY` finishes pin the render time
    down (each look at the estimate halves the gap, as a bisection); when renders vary so
    much that the bounds cross, the median of the midpoints is used. Thread-safe.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[str, deque[tuple[float, float]]] = {}

    def observe(self, kind: str, *, lower_seconds: float, upper_seconds: float) -> None:
        """A task of `kind` was not done at `lower_seconds` and done at `upper_seconds`."""
        lower, upper = max(0.0, lower_seconds), max(lower_seconds, upper_seconds)
        with self._lock:
            self._seen.setdefault(kind, deque(maxlen=HISTORY)).append((lower, upper))

    def to_json(self) -> dict[str, list[list[float]]]:
        """What was seen, per kind, as JSON-ready data (for `from_json` in a later process)."""
        with self._lock:
            return {kind: [list(pair) for pair in seen] for kind, seen in self._seen.items()}

    @classmethod
    def from_json(cls, data: Any) -> RenderTimes:
        """Render times from `to_json`'s data; anything malformed in it is skipped."""
        times = cls()
        if isinstance(data, dict):
            for kind, seen in data.items():
                for pair in seen if isinstance(seen, list) else []:
                    with contextlib.suppress(TypeError, ValueError):
                        lower, upper = (float(value) for value in pair)
                        times.observe(str(kind), lower_seconds=lower, upper_seconds=upper)
        return times

    def bracket(self, kind: str) -> tuple[float, float] | None:
        """(latest lower bound, earliest upper bound) of `kind`'s render time, when the
        finishes seen agree on one (else None, as when nothing was seen). Exact times
        (PiAPI's timestamps) that differ by less than `AGREE` of themselves agree: the
        bracket is then the range they span."""
        with self._lock:
            seen = list(self._seen.get(kind, ()))
        if not seen:
            return None
        lower = max(low for low, _ in seen)
        upper = min(high for _, high in seen)
        if lower <= upper:
            return lower, upper
        return (upper, lower) if lower - upper <= AGREE * lower else None

    def learned(self, kind: str) -> float | None:
        """The expected render time of `kind` from what was seen, or None if nothing was."""
        bracket = self.bracket(kind)
        if bracket is not None:
            return (bracket[0] + bracket[1]) / 2
        with self._lock:
            seen = list(self._seen.get(kind, ()))
        if not seen:
            return None
        return statistics.median((low + high) / 2 for low, high in seen)

    def expected(
        self, kind: str, task_input: Mapping[str, Any], *, time_scale: float = 1.0
    ) -> tuple[float, bool]:
        """(expected render seconds, whether it was learned rather than a typical default);
        `time_scale` divides the typical default (a server faster than PiAPI)."""
        learned = self.learned(kind)
        if learned is not None:
            return learned, True
        return typical_render_seconds(task_input) / time_scale, False


@dataclass
class LookSchedule:
    """When to look at one task next, in seconds since it was submitted (sans-I/O).

    - With a webhook coming, looks are a safety net: the first at `webhook_grace` times the
      expected time, then one every expected time (at least the pause cap).
    - `is_probing` (its kind was never seen finish, so the expected time is only typical):
      the pause after a look at `t` is `initial_interval_seconds + (probe_factor - 1) * t`
      (pauses growing by `probe_factor` from the initial interval: doubling, a lone wait
      finds a fast server's finish early and a 10-minute render in a dozen looks; the poller
      probes one task per kind, growing by 1.5), divided by `probe_density`, and one look
      just past the typical time. The poller sets `probe_density` to the square root of the
      tasks waiting on what the probe learns (see piapi/polling.py).
    - Otherwise the first look is `margin` past the expected time, but no later than a
      fifth of that margin past `upper_seconds` (when renders agree, as PiAPI's exact
      timestamps show, the margin would only delay every wave). A task not done by then
      is looked at again halfway to `upper_seconds` (when every finish seen so far came
      before it), else after a tenth of the expected time, growing by `factor`.

    Back-off pauses are at most `policy.cap_seconds(expected_seconds)`; a
    `max_interval_seconds` that is set bounds every pause.
    """

    policy: WaitPolicy
    expected_seconds: float
    has_webhook: bool = False
    is_probing: bool = False
    probe_factor: float = 2.0
    probe_density: float = 1.0
    upper_seconds: float | None = None
    """By when every finish of this kind seen so far had happened (`RenderTimes.bracket`)."""
    rng: random.Random = field(default_factory=random.Random)
    _late_looks: int = 0

    def next_look(self, elapsed_seconds: float) -> float:
        """The time (since submission) of the look after one made at `elapsed_seconds`."""
        policy, expected = self.policy, self.expected_seconds
        cap = policy.cap_seconds(expected)
        spread = 1 + self.rng.uniform(-policy.jitter, policy.jitter)
        first = expected * (1 + policy.margin)
        if self.upper_seconds is not None and self.upper_seconds >= expected:
            # every finish seen was done by `upper`: past it, the margin buys nothing
            first = min(first, self.upper_seconds * (1 + policy.margin / 5))
        if self.has_webhook:  # a safety net
            first = expected * policy.webhook_grace
            at = first if elapsed_seconds < first else elapsed_seconds + max(cap, expected)
        elif self.is_probing and elapsed_seconds < first:
            growth = (self.probe_factor - 1) * elapsed_seconds
            pause = (policy.initial_interval_seconds + growth) / self.probe_density
            at = min(elapsed_seconds + min(pause * spread, cap), first)
        elif elapsed_seconds < first:
            at = first
        elif self.upper_seconds is not None and elapsed_seconds < self.upper_seconds:
            # Not done yet, but every one seen was done by `upper`: halve the rest of it.
            step = max((self.upper_seconds - elapsed_seconds) / 2, 0.02 * expected)
            return elapsed_seconds + min(step, cap)
        else:  # late: back off, within the cap
            base = max(0.1 * expected, policy.initial_interval_seconds)
            pause = base * policy.factor**self._late_looks * spread
            self._late_looks += 1
            return elapsed_seconds + min(pause, cap)
        if policy.max_interval_seconds is not None:  # a cap the user set bounds every pause
            return min(at, elapsed_seconds + cap)
        return at


@dataclass
class WaitClock:
    """The sans-I/O part of a wait: pauses, the deadline, and which tasks are news.

    Until the task's input is known (`expect`), pauses follow `policy.intervals()`.
    """

    task_id: str
    policy: WaitPolicy
    started: float = field(default_factory=time.monotonic)
    last: Task | None = None
    last_event: int = 0
    render_times: RenderTimes | None = None
    has_webhook: bool = False
    schedule: LookSchedule | None = None
    kind: str | None = None
    looked_at: float = 0.0
    asked_at: float | None = None
    """Seconds after `started` the look being answered was sent (`asking`)."""
    _pauses: Iterator[float] = field(init=False)

    def __post_init__(self) -> None:
        self._pauses = self.policy.intervals()

    def expect(self, task: Task | None = None, *, expected_seconds: float | None = None) -> None:
        """Shape the looks after an expected render time: `expected_seconds`, else what
        `render_times` expects for `task`'s kind. The first call that knows one decides."""
        is_probing = False
        if task is not None and task.input and self.kind is None:
            self.kind = render_kind(task.input, task_type=task.task_type)
            if expected_seconds is None and self.schedule is None:
                times = self.render_times or RenderTimes()
                expected_seconds, learned = times.expected(
                    self.kind, task.input, time_scale=self.policy.time_scale
                )
                is_probing = not learned
        if self.schedule is None and expected_seconds is not None:
            self.schedule = LookSchedule(
                self.policy,
                expected_seconds,
                has_webhook=self.has_webhook,
                is_probing=is_probing and not self.has_webhook,
            )

    def is_news(self, task: Task) -> bool:
        """True when `task` differs from the last one seen (so progress hears about it)."""
        news = task != self.last
        self.last = task
        return news

    def asking(self) -> None:
        """A look is sent now: a task it finds running was running at this time at least
        (PiAPI answered later, and its answer may take long to reach us)."""
        self.asked_at = time.monotonic() - self.started

    def looked(self, task: Task) -> None:
        """Note a look; a terminal task teaches `render_times` how long its kind takes:
        exactly from PiAPI's timestamps when they agree with the looks (piapi/server_clock.py),
        else between this look and the one before."""
        now = time.monotonic() - self.started
        asked_at, self.asked_at = self.asked_at, None
        completed = task.status.value == "completed"
        if completed and self.kind is not None and self.render_times is not None:
            server = ServerClock(self.policy.time_scale)
            exact = server.exact(task, lower_seconds=self.looked_at, upper_seconds=now)
            lower, upper = (self.looked_at, now) if exact is None else (exact, exact)
            self.render_times.observe(self.kind, lower_seconds=lower, upper_seconds=upper)
        # The end's lower bound is when this look was sent, not when its answer came: a
        # slow answer (a loaded machine) learned 2.033 s for PiAPI's exact 2.007 s.
        self.looked_at = now if asked_at is None else asked_at  # None: a webhook's event

    def next_pause(self) -> float | None:
        """Seconds until the next look, or None when the deadline has passed."""
        elapsed = time.monotonic() - self.started
        left = self.policy.deadline_seconds - elapsed
        if left <= 0:
            return None
        if self.schedule is None:
            return min(next(self._pauses), left)
        return min(max(0.0, self.schedule.next_look(elapsed) - elapsed), left)

    def timeout_error(self) -> WaitTimeoutError:
        """The error for a wait past its deadline, with the last status: resume, not resubmit."""
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
