"""One status poller per client: every waiting task's looks, in one loop, on one budget.

A batch of waits that each poll on their own spends the account's requests per minute on
looks at tasks that cannot be done yet, while the next creates wait behind them. The poller
keeps one schedule for all the tasks waited on (each task's `LookSchedule`, from its expected
render time), looks at the due tasks most likely done first (the largest share of their
expected time elapsed), and sends its GETs as *deferrable* requests, which the client's rate
limit lets creates overtake.

Every answer the client gets for a task (the poller's looks, a webhook receiver's confirming
GET, a submit) passes through `observe`: a terminal task resolves its waiters at once and
teaches `RenderTimes` how long its kind of render takes. So with webhooks configured, the
looks are only a sparse safety net and a task usually costs the one confirming GET.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from klingflow.errors import PiAPIError, UnexpectedResponseError, WaitTimeoutError
from klingflow.piapi.models import Task, TaskStatus
from klingflow.piapi.server_clock import ServerClock
from klingflow.piapi.waiting import LookSchedule, RenderTimes, WaitPolicy, render_kind

if TYPE_CHECKING:
    from klingflow.piapi._client import AsyncPiAPI

__all__ = ["StatusPoller"]

logger = logging.getLogger("klingflow.piapi")

PROBE_FACTOR = 1.5
"""How the pauses of the one task probing a kind never seen finish grow (PiAPI's own CLI
grows by 1.5): a steady 5 s beat cost a 10-minute render 120 looks, which set the pace of a
batch at 60 requests a minute; growing, it costs about ten, and once a render of the kind
finishes the others look when it says.

Those pauses are divided by the square root of the tasks of the kind being waited on (the
probe's `probe_density`). A probe look every `p` seconds finds the first finish `p / 2` late
on average, and each of the `k` tasks waiting on what it learns (their next looks, their
slots' next creates) pays that delay, while the looks cost `T / p` requests for a render of
`T`: `k p / 2 + c T / p` is least at `p` proportional to `1 / sqrt(k)` (the square-root law
of polling). Per video, the probe then costs `sqrt(k)` times its lone looks shared by `k`
tasks: fewer requests per video as `k` grows, and a first wave found sooner."""


@dataclass
class _Watch:
    task_id: str
    since: float  # wall-clock time of the submission (time.time())
    kind: str | None
    task_input: Mapping[str, Any] | None
    schedule: LookSchedule | None  # None until the task's input is known
    due: float  # wall-clock time of the next look
    looked_at: float = 0.0  # seconds after `since` of the last look that found it running
    status: str = "unknown"  # as the last answer about it said
    waiters: list[asyncio.Future[Task]] = field(default_factory=list)

    @property
    def expected_seconds(self) -> float:
        # A render learned from PiAPI's own clock may take 0 s (an emulator with no delay).
        return max(self.schedule.expected_seconds, 1e-3) if self.schedule else 1.0


class StatusPoller:
    """Looks at every task waited on through one `AsyncPiAPI`, one GET at a time.

    Create it inside the event loop that uses the client; it attaches itself to the client
    (one per client) and `aclose()` detaches it. `has_webhook` says PiAPI will report each
    task's end to a receiver that GETs it through this client: looks are then a safety net.
    """

    def __init__(
        self,
        client: AsyncPiAPI,
        *,
        policy: WaitPolicy | None = None,
        render_times: RenderTimes | None = None,
        has_webhook: bool = False,
    ) -> None:
        if client.poller is not None:
            raise RuntimeError("this client already has a StatusPoller")
        self.client = client
        self.policy = policy or client.wait_policy
        self.render_times = render_times or client.render_times
        self.has_webhook = has_webhook
        self.server_clock = ServerClock(self.policy.time_scale)
        """PiAPI's clock against ours: exact render times from a task's timestamps."""
        self.looks = 0
        """GETs this poller has sent."""
        self._watches: dict[str, _Watch] = {}
        self._changed = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._rng = random.Random(0)
        self._looking: str | None = None  # the task whose look is under way
        client.poller = self

    # -- what waiters call ---------------------------------------------------------------------

    async def wait(
        self,
        task_id: str,
        *,
        since: float | None = None,
        task_input: Mapping[str, Any] | None = None,
        task_type: str = "video_generation",
        deadline_seconds: float | None = None,
    ) -> Task:
        """The task once it is terminal (any status; the caller decides what failed means).

        `since` is when it was submitted (wall clock; default now) and `task_input` its input
        (without it, the first look comes at once and its answer tells). Raises
        `WaitTimeoutError` after `deadline_seconds` (default: the policy's deadline); the task
        keeps running, so wait again rather than resubmit.
        """
        deadline = self.policy.deadline_seconds if deadline_seconds is None else deadline_seconds
        future: asyncio.Future[Task] = asyncio.get_running_loop().create_future()
        watch = self._watch(task_id, since=since, task_input=task_input, task_type=task_type)
        watch.waiters.append(future)
        try:
            async with asyncio.timeout(deadline):
                return await future
        except TimeoutError:
            raise WaitTimeoutError(
                task_id, last_status=watch.status, waited_seconds=deadline
            ) from None
        finally:
            with contextlib.suppress(ValueError):
                watch.waiters.remove(future)

    def track(self, task_id: str) -> None:
        """Look after a task nobody waits for (so a slot it holds is freed when it ends).

        Its first look waits one `initial_interval_seconds`: a waiter that has just
        submitted it usually registers it meanwhile, with its input and schedule."""
        if task_id not in self._watches:
            watch = self._watch(task_id, since=None, task_input=None, task_type="")
            watch.due += self.policy.initial_interval_seconds

    def observe(self, task: Task) -> None:
        """Any fresh answer about a task: a terminal one resolves its waiters."""
        watch = self._watches.get(task.task_id)
        if watch is None:
            if task.status in (TaskStatus.PENDING, TaskStatus.STAGED):  # a submission's answer
                self.server_clock.submitted(task, time.time())
            return
        watch.status = task.status.value
        if watch.schedule is None and task.input:
            self._shape(watch, task.input, task.task_type)
        if not task.is_terminal:
            return
        del self._watches[task.task_id]
        if task.status.value == "completed" and watch.kind is not None:
            now = time.time() - watch.since
            # PiAPI's timestamps give the render time exactly, when they agree with the
            # looks; else our own look brackets the end between it and the look before, and
            # an answer someone else asked for (a webhook's confirming GET) reports it as
            # it happens.
            exact = self.server_clock.exact(task, lower_seconds=watch.looked_at, upper_seconds=now)
            if exact is not None:
                lower = now = exact
            else:
                lower = watch.looked_at if self._looking == task.task_id else now
            self.render_times.observe(watch.kind, lower_seconds=lower, upper_seconds=now)
            self._reshape(watch.kind)
        elif watch.kind is not None:
            self._keep_probing(watch.kind)
        for future in watch.waiters:
            if not future.done():
                future.set_result(task)

    async def aclose(self) -> None:
        """Stop looking and detach from the client; waiters still waiting are cancelled."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
            self._loop_task = None
        for watch in self._watches.values():
            for future in watch.waiters:
                future.cancel()
        self._watches.clear()
        if self.client.poller is self:
            self.client.poller = None

    @property
    def watching(self) -> int:
        """How many tasks are being looked after."""
        return len(self._watches)

    # -- scheduling ----------------------------------------------------------------------------

    def _watch(
        self,
        task_id: str,
        *,
        since: float | None,
        task_input: Mapping[str, Any] | None,
        task_type: str,
    ) -> _Watch:
        watch = self._watches.get(task_id)
        if watch is None:
            now = time.time()
            watch = _Watch(task_id, since or now, None, None, None, due=now)
            self._watches[task_id] = watch
            if task_input:
                self._shape(watch, task_input, task_type)
            self._changed.set()
        elif watch.schedule is None and task_input:  # tracked first, now waited on
            self._shape(watch, task_input, task_type)
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = asyncio.get_running_loop().create_task(self._run())
        return watch

    def _shape(self, watch: _Watch, task_input: Mapping[str, Any], task_type: str) -> None:
        """Give `watch` its schedule from its kind of render; its next look follows it."""
        kind = render_kind(task_input, task_type=task_type)
        expected, is_learned = self.render_times.expected(
            kind, task_input, time_scale=self.policy.time_scale
        )
        # Only the oldest task of a kind never seen finish probes; the others wait for what
        # it teaches (or, failing that, their typical time).
        is_probing = (
            not self.has_webhook
            and not is_learned
            and not any(
                w.schedule is not None and w.schedule.is_probing and w.kind == kind
                for w in self._watches.values()
            )
        )
        watch.kind, watch.task_input = kind, task_input
        watch.schedule = LookSchedule(
            self.policy,
            expected,
            has_webhook=self.has_webhook,
            is_probing=is_probing,
            probe_factor=PROBE_FACTOR,
            upper_seconds=self._upper(kind),
            rng=self._rng,
        )
        watch.due = watch.since + watch.schedule.next_look(watch.looked_at)
        if not is_probing and not is_learned:
            self._densify(kind)
        self._changed.set()

    def _densify(self, kind: str) -> None:
        """Probe `kind` as densely as the tasks waiting on what it learns are worth: see
        `PROBE_FACTOR`. Bring the probe's next look forward to match."""
        same = [w for w in self._watches.values() if w.kind == kind]
        for probe in same:
            if probe.schedule is not None and probe.schedule.is_probing:
                probe.schedule.probe_density = math.sqrt(len(same))
                due = probe.since + probe.schedule.next_look(probe.looked_at)
                probe.due = min(probe.due, max(due, time.time()))

    def _reshape(self, kind: str) -> None:
        """`kind` has just been learned: move its waiting tasks' next looks to match.

        Only the schedules the finish changes are made anew: one finish per task in flight
        re-shaping every task in flight was quadratic (bench/notes.md, section 4), and a
        schedule with the same expected time and bound already says when to look."""
        upper = self._upper(kind)
        learned = self.render_times.learned(kind)
        for watch in self._watches.values():
            if watch.kind != kind or watch.task_input is None:
                continue
            if learned is None:
                expected, _ = self.render_times.expected(
                    kind, watch.task_input, time_scale=self.policy.time_scale
                )
            else:
                expected = learned
            old = watch.schedule
            if (
                old is not None
                and not old.is_probing
                and old.has_webhook == self.has_webhook
                and old.expected_seconds == expected
                and old.upper_seconds == upper
            ):
                continue
            watch.schedule = LookSchedule(
                self.policy,
                expected,
                has_webhook=self.has_webhook,
                upper_seconds=upper,
                rng=self._rng,
            )
            watch.due = watch.since + watch.schedule.next_look(watch.looked_at)
        self._changed.set()

    def _keep_probing(self, kind: str) -> None:
        """A task of a kind still unlearned ended (failed, say) or left: if none of its kind
        probes any more, the oldest one left takes over, so none waits the typical time."""
        if self.has_webhook or self.render_times.learned(kind) is not None:
            return
        same = [w for w in self._watches.values() if w.kind == kind and w.schedule is not None]
        if not same or any(w.schedule is not None and w.schedule.is_probing for w in same):
            return
        oldest = min(same, key=lambda w: w.since)
        assert oldest.schedule is not None
        oldest.schedule.is_probing = True
        oldest.schedule.probe_factor = PROBE_FACTOR
        oldest.due = min(oldest.due, time.time() + self.policy.initial_interval_seconds)
        self._densify(kind)
        self._changed.set()

    def _upper(self, kind: str) -> float | None:
        bracket = self.render_times.bracket(kind)
        return None if bracket is None else bracket[1]

    def _next_due(self) -> list[_Watch]:
        """The watches due now, most likely done first."""
        now = time.time()
        due = [w for w in self._watches.values() if w.due <= now]
        due.sort(key=lambda w: (now - w.since) / w.expected_seconds, reverse=True)
        return due

    async def _run(self) -> None:
        try:
            await self._look_when_due()
        except Exception as error:  # a bug here must fail the waits, not leave them hanging
            logger.exception("the status poller stopped")
            for watch in self._watches.values():
                for future in watch.waiters:
                    if not future.done():
                        future.set_exception(error)
            self._watches.clear()

    async def _look_when_due(self) -> None:
        while self._watches:
            due = self._next_due()
            if not due:
                self._changed.clear()
                pause = min(w.due for w in self._watches.values()) - time.time()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(pause, 0.0)):
                        await self._changed.wait()
                continue
            for watch in due:
                if self._watches.get(watch.task_id) is watch and watch.due <= time.time():
                    await self._look(watch)

    async def _look(self, watch: _Watch) -> None:
        elapsed = time.time() - watch.since
        self.looks += 1
        self._looking = watch.task_id
        try:
            task = await self.client._look(watch.task_id)  # observe() hears the answer
        except PiAPIError as error:
            if error.retryable or isinstance(error, UnexpectedResponseError):
                watch.due = time.time() + self.policy.initial_interval_seconds
                logger.info("status look at %s failed (%s); again soon", watch.task_id, error)
                return
            self._watches.pop(watch.task_id, None)
            if watch.kind is not None:
                self._keep_probing(watch.kind)
            for future in watch.waiters:
                if not future.done():
                    future.set_exception(error)
            return
        if task.is_terminal or self._watches.get(watch.task_id) is not watch:
            return
        watch.looked_at = elapsed
        if watch.schedule is None:  # a task with no input in its answer: plain backoff
            watch.schedule = LookSchedule(self.policy, 1.0, is_probing=True, rng=self._rng)
        elif watch.schedule.is_probing and watch.kind is not None:
            same = sum(1 for w in self._watches.values() if w.kind == watch.kind)
            watch.schedule.probe_density = math.sqrt(same)
        watch.due = watch.since + watch.schedule.next_look(elapsed)
