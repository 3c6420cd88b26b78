"""PiAPI's own clock: a finished task's exact render time, in our seconds.

Our looks only bracket a task's end between the last look that found it running and the one
that found it done, and the middle of that bracket is often a second or more off, which the
next tasks of the kind pay in extra looks. But PiAPI stamps every task with `meta.created_at`
and `meta.ended_at`: their difference is the render time (queue included) exactly, measured
on one clock, so no skew between PiAPI's clock and ours enters it.

Its *rate* can differ from ours, though: an emulator sped up `time_scale` times stamps
emulated seconds. `ServerClock` converts at the rate the policy states (`time_scale`; 1 for
PiAPI), or, once submissions span a few seconds of our time, at the rate they show (the
created_at of each submission against when its answer reached us): so an engine that was not
told an emulator's speed still learns exact times from its second wave on. An exact time is
used only when it agrees with what the looks proved (done by the look that saw it done, not
done at the one before, within a tolerance); otherwise the looks' bracket stands.
"""

from __future__ import annotations

import threading

from klingflow.piapi.models import Task

__all__ = ["ServerClock"]

MIN_SPAN_SECONDS = 2.0
"""Our seconds that submissions must span before their timestamps estimate PiAPI's rate
(an answer arrives some milliseconds after its `created_at`: over 2 s, a 1-2 % error)."""
SNAP = 0.05
"""An estimated rate within 5 % of the stated one is taken to be it (PiAPI runs at ours)."""
TOLERANCE_SECONDS = 0.5
TOLERANCE_SHARE = 0.05
"""How far outside the looks' bracket an exact time may fall and still be believed (our
`since` for a task is taken a moment after PiAPI's `created_at`)."""


class ServerClock:
    """How fast PiAPI's clock runs against ours, and exact render times from it. Thread-safe.

    `rate` is PiAPI seconds per our second: the stated `nominal_rate` (a policy's
    `time_scale`) until `submitted` has seen submissions spanning `MIN_SPAN_SECONDS`.
    """

    def __init__(self, nominal_rate: float = 1.0) -> None:
        self.nominal_rate = nominal_rate
        self._lock = threading.Lock()
        self._first: tuple[float, float] | None = None  # (our time, PiAPI's created_at)
        self._last: tuple[float, float] | None = None

    def submitted(self, task: Task, received_at: float) -> None:
        """A submission's answer (its `created_at` set) reached us at `received_at` (epoch)."""
        created = task.meta.created_at
        if created is None:
            return
        pair = (received_at, created.timestamp())
        with self._lock:
            latest = self._last or self._first
            if latest is None:
                self._first = pair
            elif pair[0] > latest[0] and pair[1] > latest[1]:
                # only a task created after every one seen: an older one, looked up late
                # (a listing, say), would pair its creation with a later time of ours
                self._last = pair

    @property
    def rate(self) -> float:
        """PiAPI seconds per our second, as best known."""
        with self._lock:
            first, last = self._first, self._last
        if first is None or last is None or last[0] - first[0] < MIN_SPAN_SECONDS:
            return self.nominal_rate
        estimate = (last[1] - first[1]) / (last[0] - first[0])
        if abs(estimate / self.nominal_rate - 1) <= SNAP:
            return self.nominal_rate
        return estimate

    def render_seconds(self, task: Task) -> float | None:
        """The task's render time (created to ended) in our seconds, or None if unstamped."""
        created, ended = task.meta.created_at, task.meta.ended_at
        if created is None or ended is None or ended < created:
            return None
        return (ended - created).total_seconds() / self.rate

    def exact(self, task: Task, *, lower_seconds: float, upper_seconds: float) -> float | None:
        """The exact render time of a finished task when it agrees with what the looks
        proved (not done at `lower_seconds`, done at `upper_seconds`, since our submission),
        clamped into that bracket; None when it is unknown or disagrees (a rate not known)."""
        seconds = self.render_seconds(task)
        if seconds is None:
            return None
        tolerance = TOLERANCE_SECONDS + TOLERANCE_SHARE * upper_seconds
        if not lower_seconds - tolerance <= seconds <= upper_seconds + tolerance:
            return None
        return min(max(seconds, lower_seconds), upper_seconds)
