"""Waiting: adaptive polling, early wake-up by verified webhooks, deadlines that say resume."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from klingflow.emulator import EmulatorServer, FaultRule
from klingflow.piapi import (
    AsyncWebhookEvents,
    KlingVideoRequest,
    Task,
    TaskNotFoundError,
    TaskStatus,
    WaitPolicy,
    WaitTimeoutError,
    WebhookConfig,
    WebhookDelivery,
    WebhookEvents,
)
from klingflow.piapi.waiting import (
    LookSchedule,
    RenderTimes,
    render_kind,
    typical_render_seconds,
)

from .adapter import Api, Receiver, eventually

REQUEST = KlingVideoRequest(prompt="waves at night", duration=3)
SLOW_POLLING = WaitPolicy(
    deadline_seconds=30.0, initial_interval_seconds=5.0, max_interval_seconds=5.0, jitter=0.0
)
"""Polls every 5 s: a wait that ends much sooner than that was ended by a webhook."""


def test_wait_polls_until_completed_and_reports_each_change(api: Api) -> None:
    """`on_progress` hears each distinct state once, ending with the completed task."""
    seen: list[Task] = []
    task = api.submit(REQUEST)
    done = api.wait(task.task_id, on_progress=seen.append)
    assert done.status is TaskStatus.COMPLETED
    statuses = [t.status for t in seen]
    assert statuses[-1] is TaskStatus.COMPLETED
    assert all(a != b for a, b in itertools.pairwise(seen))  # only news is reported
    order = [TaskStatus.PENDING, TaskStatus.PROCESSING, TaskStatus.COMPLETED]
    assert [order.index(s) for s in statuses] == sorted(order.index(s) for s in statuses)


def test_wait_ends_early_on_a_verified_webhook(
    api: Api, emulator: EmulatorServer, receiver: Receiver
) -> None:
    """With 5 s polling, a webhook delivery ends the wait within a fraction of a second."""
    events = api.events()
    receiver.events.append(events)
    hook = WebhookConfig(endpoint=receiver.url, secret=receiver.secret)
    task = api.submit(REQUEST, webhook=hook, intent_id="intent-hook-1")
    started = time.monotonic()
    done = api.wait(task.task_id, policy=SLOW_POLLING, events=events)
    assert time.monotonic() - started < 2.5
    assert done.status is TaskStatus.COMPLETED
    assert [d.task.task_id for d in receiver.deliveries] == [task.task_id]
    assert receiver.paths == ["/hooks/piapi?intent_id=intent-hook-1"]
    assert emulator.stats()["tasks"][task.task_id]["gets"] <= 3  # first look + confirmation


def test_wait_returns_at_once_when_the_webhook_came_first(
    api: Api, emulator: EmulatorServer, receiver: Receiver
) -> None:
    """A delivery stored before `wait` starts is used: the first GET already confirms it."""
    events = api.events()
    receiver.events.append(events)
    task = api.submit(REQUEST, webhook=WebhookConfig(endpoint=receiver.url, secret=receiver.secret))
    assert eventually(lambda: bool(receiver.deliveries))
    assert events.latest(task.task_id) is not None
    done = api.wait(task.task_id, policy=SLOW_POLLING, events=events)
    assert done.status is TaskStatus.COMPLETED
    assert emulator.stats()["tasks"][task.task_id]["gets"] == 1


def test_webhook_with_a_wrong_secret_is_ignored_and_polling_finishes(
    api: Api, receiver: Receiver
) -> None:
    """A delivery that fails verification never reaches the waiter; polling still ends the wait."""
    events = api.events()
    receiver.events.append(events)
    hook = WebhookConfig(endpoint=receiver.url, secret="not-the-receivers-secret")
    task = api.submit(REQUEST, webhook=hook)
    done = api.wait(task.task_id, events=events)
    assert done.status is TaskStatus.COMPLETED
    assert events.latest(task.task_id) is None
    assert eventually(lambda: receiver.rejected >= 1)


def test_deadline_raises_wait_timeout_that_says_resume_not_resubmit(
    api: Api, emulator: EmulatorServer
) -> None:
    """At the deadline WaitTimeoutError names the task, its last status, and says to resume."""
    emulator.configure(processing_seconds=1_000_000)
    task = api.submit(REQUEST)
    policy = WaitPolicy(
        deadline_seconds=0.3, initial_interval_seconds=0.05, max_interval_seconds=0.1
    )
    started = time.monotonic()
    with pytest.raises(WaitTimeoutError) as caught:
        api.wait(task.task_id, policy=policy)
    assert 0.3 <= time.monotonic() - started < 2
    error = caught.value
    assert error.task_id == task.task_id
    assert error.last_status == "processing"
    message = str(error)
    assert "resume" in message
    assert "do not resubmit" in message
    assert emulator.stats()["creates"] == 1


def test_wait_rides_out_transient_errors(
    make_api: Callable[..., Api], emulator: EmulatorServer
) -> None:
    """With retries off, 5xx answers during a wait are tolerated until the task completes."""
    api = make_api(max_retries=0)
    task = api.submit(REQUEST)
    emulator.add_fault(FaultRule(action="error", method="GET", path="/api/v1/task/", times=3))
    assert api.wait(task.task_id).status is TaskStatus.COMPLETED


def test_wait_on_an_unknown_task_fails_at_once(api: Api) -> None:
    """A 404 is not transient: the wait raises TaskNotFoundError instead of polling on."""
    started = time.monotonic()
    with pytest.raises(TaskNotFoundError):
        api.wait("0c8f2d4e-0000-4000-8000-000000000000")
    assert time.monotonic() - started < 1


def test_wait_policy_intervals_grow_by_factor_to_the_cap() -> None:
    """Without jitter the pauses are initial x factor^n, capped at max_interval_seconds."""
    policy = WaitPolicy(initial_interval_seconds=2, max_interval_seconds=10, factor=1.5, jitter=0.0)
    assert list(itertools.islice(policy.intervals(), 6)) == [2, 3, 4.5, 6.75, 10, 10]


def test_wait_policy_jitter_stays_within_bounds() -> None:
    """Each jittered pause lies within ±jitter of its base."""
    policy = WaitPolicy(initial_interval_seconds=1, max_interval_seconds=1, jitter=0.2)
    pauses = list(itertools.islice(policy.intervals(), 200))
    assert all(0.8 <= p <= 1.2 for p in pauses)
    assert len(set(pauses)) > 1


def test_default_wait_policy_suits_kling() -> None:
    """The default waits an hour, starting at 2 s and backing off to 30 s, or to a quarter of
    the expected render time when that is longer."""
    policy = WaitPolicy()
    assert (policy.deadline_seconds, policy.initial_interval_seconds) == (3600, 2)
    assert (policy.max_interval_seconds, policy.factor, policy.jitter) == (None, 1.5, 0.1)
    assert (policy.cap_seconds(), policy.cap_seconds(60), policy.cap_seconds(600)) == (30, 30, 150)


@pytest.mark.parametrize(
    "options",
    [
        {"deadline_seconds": -1},
        {"initial_interval_seconds": 0},
        {"factor": 0.5},
        {"jitter": 1.0},
        {"initial_interval_seconds": 5, "max_interval_seconds": 1},
    ],
)
def test_wait_policy_rejects_nonsense(options: dict[str, float]) -> None:
    """Impossible policies are programming mistakes (ValueError)."""
    with pytest.raises(ValueError, match="must be"):
        WaitPolicy(**options)


def _task(status: str, task_id: str = "t-1") -> Task:
    return Task.model_validate({"task_id": task_id, "status": status})


def test_event_source_drops_duplicate_deliveries() -> None:
    """The same delivery twice (PiAPI retries) is recorded once; a new status is news."""
    events = WebhookEvents()
    first = WebhookDelivery(timestamp=100, task=_task("completed"))
    assert events.put_delivery(first) is True
    assert events.put_delivery(first.model_copy()) is False
    assert events.put_delivery(WebhookDelivery(timestamp=101, task=_task("completed"))) is True
    event = events.wait_for("t-1", timeout_seconds=0)
    assert event is not None
    assert event.sequence == 2
    assert events.wait_for("t-1", timeout_seconds=0.01, after_sequence=2) is None


def test_sync_event_source_wakes_a_waiting_thread() -> None:
    """`put` from another thread wakes a blocked `wait_for` at once."""
    events = WebhookEvents()
    timer = threading.Timer(0.05, lambda: events.put(_task("completed")))
    timer.start()
    started = time.monotonic()
    event = events.wait_for("t-1", timeout_seconds=5)
    timer.join()
    assert event is not None
    assert event.task.status is TaskStatus.COMPLETED
    assert time.monotonic() - started < 1


def test_async_event_source_is_fed_from_another_thread() -> None:
    """An asyncio waiter wakes when a receiver thread puts a task; others keep waiting."""
    events = AsyncWebhookEvents()

    async def main() -> tuple[str | None, object]:
        timer = threading.Timer(0.05, lambda: events.put(_task("failed")))
        timer.start()
        other = asyncio.create_task(events.wait_for("t-2", timeout_seconds=0.3))
        event = await events.wait_for("t-1", timeout_seconds=5)
        timer.join()
        return (event.task.status.value if event else None), await other

    assert asyncio.run(main()) == ("failed", None)


def test_event_source_forgets_the_oldest_tasks_beyond_its_bound() -> None:
    """Memory stays bounded: past `max_tasks`, the oldest task's update is dropped."""
    events = WebhookEvents(max_tasks=2)
    for n in range(3):
        events.put(_task("completed", task_id=f"t-{n}"))
    assert events.latest("t-0") is None
    assert events.latest("t-2") is not None


def test_event_source_of_the_other_flavour_is_a_type_error(api: Api) -> None:
    """Passing the async event source to the sync client (or vice versa) fails loudly."""
    wrong = (
        WebhookEvents() if isinstance(api.events(), AsyncWebhookEvents) else AsyncWebhookEvents()
    )
    with pytest.raises(TypeError, match="WebhookEvents"):
        api.wait("t-1", events=wrong)


TEN_MINUTES = KlingVideoRequest(
    prompt="a slow sunrise", version="2.6", mode="pro", duration=10, enable_audio=True
)
"""PiAPI-typical render time about 9 minutes (`typical_render_seconds`)."""
SPEED = 300.0
"""The emulator and the client's expectations both run 300 times faster than real time."""
SCALED = WaitPolicy(initial_interval_seconds=2.0 / SPEED, time_scale=SPEED, jitter=0.0)
"""The default policy (2 s first look, no pause cap), at the emulator's speed."""


def test_a_ten_minute_render_costs_at_most_twelve_gets_polling(
    api: Api, emulator: EmulatorServer
) -> None:
    """Polling a 10-minute render looks a dozen times at most: the first look at once, then
    doubling pauses and one just past the typical time, instead of one every 30 s."""
    emulator.configure(time_scale=SPEED, pending_seconds=2, processing_seconds=600)
    task = api.submit(TEN_MINUTES)
    done = api.wait(task.task_id, policy=SCALED)
    assert done.status is TaskStatus.COMPLETED
    assert 2 <= emulator.stats()["tasks"][task.task_id]["gets"] <= 12


def test_a_ten_minute_render_costs_one_get_with_a_webhook(
    api: Api, emulator: EmulatorServer, receiver: Receiver, tmp_path: Path
) -> None:
    """With a webhook, `generate` waits for it and confirms with its only status GET."""
    emulator.configure(time_scale=SPEED, pending_seconds=2, processing_seconds=600)
    events = api.events()
    receiver.events.append(events)
    hook = WebhookConfig(endpoint=receiver.url, secret=receiver.secret)
    done, _path = api.call(
        "generate", TEN_MINUTES, tmp_path / "v.mp4", webhook=hook, events=events, policy=SCALED
    )
    assert done.status is TaskStatus.COMPLETED
    assert emulator.stats()["tasks"][done.task_id]["gets"] == 1
    assert emulator.stats()["webhook_failures"] == 0


def test_a_learned_render_time_puts_the_first_look_just_after_it(
    api: Api, emulator: EmulatorServer
) -> None:
    """Once a kind of render has been seen finishing, the next wait on one looks about twice:
    at once and just after the learned time."""
    emulator.configure(time_scale=SPEED, pending_seconds=2, processing_seconds=600)
    first = api.submit(TEN_MINUTES)
    api.wait(first.task_id, policy=SCALED)
    second = api.submit(TEN_MINUTES)
    api.wait(second.task_id, policy=SCALED)
    gets = emulator.stats()["tasks"]
    assert gets[second.task_id]["gets"] < gets[first.task_id]["gets"]
    assert gets[second.task_id]["gets"] <= 4


def test_render_times_narrow_down_on_the_render_time() -> None:
    """Each finish brackets the render time between two looks; the brackets of a kind
    intersect, and the expected time is the middle of what is left."""
    times = RenderTimes()
    kind = render_kind(TEN_MINUTES.to_input())
    assert times.expected(kind, TEN_MINUTES.to_input()) == (
        typical_render_seconds(TEN_MINUTES.to_input()),
        False,
    )
    times.observe(kind, lower_seconds=0, upper_seconds=20)
    times.observe(kind, lower_seconds=15, upper_seconds=25)
    assert times.expected(kind, {}) == (17.5, True)
    times.observe(kind, lower_seconds=17.5, upper_seconds=18)
    assert times.learned(kind) == 17.75
    assert times.bracket(kind) == (17.5, 18)
    assert times.learned("another kind") is None
    times.observe(kind, lower_seconds=19, upper_seconds=21)  # renders vary: no common bracket
    assert times.bracket(kind) is None
    assert times.learned(kind) == 18.875  # the median of the midpoints 10, 20, 17.75, 20


def test_a_look_that_came_too_early_halves_the_rest_of_the_bracket() -> None:
    """A task not done at its first look, when every one seen was done by 20 s, is looked at
    halfway to 20 s, not a back-off pause later."""
    schedule = LookSchedule(WaitPolicy(jitter=0), 16.0, upper_seconds=20.0)
    assert schedule.next_look(0) == pytest.approx(16.8)
    assert schedule.next_look(16.8) == pytest.approx(18.4)
    assert schedule.next_look(20.5) == pytest.approx(22.5)  # past it: back off from 2 s


def test_looks_come_just_after_the_expected_time_then_back_off() -> None:
    """Without a webhook: 5 % past the expected time, then a tenth of it, growing 1.5x."""
    schedule = LookSchedule(WaitPolicy(jitter=0), 100.0)
    looks = [0.0]
    for _ in range(4):
        looks.append(schedule.next_look(looks[-1]))
    assert looks == pytest.approx([0, 105, 115, 130, 152.5])


def test_with_a_webhook_looks_are_a_sparse_safety_net() -> None:
    """With a webhook coming, the first look is at twice the expected time, then one per
    expected time; a `max_interval_seconds` that is set still caps the pauses."""
    schedule = LookSchedule(WaitPolicy(jitter=0), 600.0, has_webhook=True)
    assert (schedule.next_look(0), schedule.next_look(1200)) == (1200, 1800)
    capped = LookSchedule(WaitPolicy(max_interval_seconds=5), 600.0, has_webhook=True)
    assert capped.next_look(0) == 5
