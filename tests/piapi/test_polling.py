"""The status poller learns render times from PiAPI's clock and probes at the batch's pace.

Sans-I/O parts (`ServerClock`, `RenderTimes`, `LookSchedule`) are checked on numbers; the
poller itself against the emulator over loopback, counting its requests (never timing them).
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from klingflow.emulator import EmulatorServer
from klingflow.piapi import AsyncPiAPI, KlingVideoRequest, WaitPolicy
from klingflow.piapi.models import Task
from klingflow.piapi.polling import StatusPoller
from klingflow.piapi.server_clock import ServerClock
from klingflow.piapi.waiting import LookSchedule, RenderTimes, WaitClock, render_kind

from ..policies import FAST_RETRY
from .adapter import Api

ORIGIN = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def stamped(created: float, ended: float | None = None, status: str = "completed") -> Task:
    """A task stamped by PiAPI's clock, `created` and `ended` seconds after `ORIGIN`."""
    meta = {"created_at": (ORIGIN + timedelta(seconds=created)).isoformat()}
    if ended is not None:
        meta["ended_at"] = (ORIGIN + timedelta(seconds=ended)).isoformat()
    return Task.model_validate({"task_id": "t-1", "status": status, "meta": meta})


def test_a_finished_task_s_timestamps_give_its_render_time_exactly() -> None:
    """ended_at - created_at is the render time, kept inside what the looks proved; a time
    the looks contradict (a server clock running at another rate) is not believed."""
    clock = ServerClock()
    assert clock.exact(stamped(100, 116.25), lower_seconds=14, upper_seconds=19) == 16.25
    # our `since` comes a moment after PiAPI's created_at: clamped to the look that saw it done
    assert clock.exact(stamped(100, 116.25), lower_seconds=14, upper_seconds=16) == 16
    assert clock.exact(stamped(100, 132.5), lower_seconds=14, upper_seconds=19) is None
    assert clock.exact(stamped(100), lower_seconds=14, upper_seconds=19) is None  # no end


def test_the_server_clock_rate_is_learned_from_submissions() -> None:
    """An emulator 8x faster than ours, not declared: once submissions span 2 s of our time,
    its stamps convert at 8; a rate within 5 % of the stated one is taken to be it."""
    clock = ServerClock(nominal_rate=1.0)
    clock.submitted(stamped(0, status="pending"), received_at=1000.0)
    clock.submitted(stamped(8, status="pending"), received_at=1001.0)  # 1 s: too short
    assert clock.rate == 1.0
    clock.submitted(stamped(24.09, status="pending"), received_at=1003.0)
    assert clock.rate == pytest.approx(8.03)
    assert clock.exact(stamped(200, 232.12), lower_seconds=3.5, upper_seconds=4.5) == (
        pytest.approx(4.0)
    )
    steady = ServerClock(nominal_rate=1.0)
    steady.submitted(stamped(0, status="pending"), received_at=1000.0)
    steady.submitted(stamped(10.3, status="pending"), received_at=1010.0)
    assert steady.rate == 1.0


def test_exact_render_times_that_differ_by_clock_noise_agree() -> None:
    """Exact times within 2 % of each other make a bracket spanning them (so the next look
    comes just after the latest of them); farther apart, renders vary: no bracket."""
    times = RenderTimes()
    for seconds in (16.0, 16.1, 15.95):
        times.observe("k", lower_seconds=seconds, upper_seconds=seconds)
    assert times.bracket("k") == (15.95, 16.1)
    times.observe("k", lower_seconds=17.0, upper_seconds=17.0)
    assert times.bracket("k") is None


def test_the_first_look_comes_just_past_every_finish_seen() -> None:
    """When every finish seen was done by 16.1 s, the first look is 1 % past it, not 5 %
    past the middle: the margin would only delay each wave of a batch."""
    schedule = LookSchedule(WaitPolicy(jitter=0), 16.0, upper_seconds=16.1)
    assert schedule.next_look(0) == pytest.approx(16.1 * 1.01)
    wide = LookSchedule(WaitPolicy(jitter=0), 16.0, upper_seconds=20.0)
    assert wide.next_look(0) == pytest.approx(16.8)


def test_a_probe_looks_more_often_when_more_tasks_wait_on_it() -> None:
    """A probe's pause after a look at `t` is (initial + (factor - 1) t) / density: the
    poller sets the density to the square root of the tasks waiting on what it learns."""
    policy = WaitPolicy(initial_interval_seconds=5, jitter=0)
    lone = LookSchedule(policy, 150.0, is_probing=True, probe_factor=1.5)
    assert [lone.next_look(t) for t in (0, 10)] == [5, 20]
    batch = LookSchedule(policy, 150.0, is_probing=True, probe_factor=1.5, probe_density=2)
    assert [batch.next_look(t) for t in (0, 10)] == [2.5, 15]


SPEED = 300.0
TEN_MINUTES = KlingVideoRequest(prompt="a slow tide", version="2.1", mode="pro", duration=10)
"""PiAPI-typical render time about 8 minutes; the emulator renders 602 s, 300 times faster."""


def scaled_policy() -> WaitPolicy:
    """The engine's defaults (a first look after 5 s) at the emulator's speed, declared."""
    return WaitPolicy(initial_interval_seconds=5.0 / SPEED, time_scale=SPEED, jitter=0.1)


async def wait_all(client: AsyncPiAPI, videos: int) -> tuple[list[Task], StatusPoller]:
    poller = StatusPoller(client)
    try:
        tasks = [await client.submit(TEN_MINUTES) for _ in range(videos)]
        done = await asyncio.gather(
            *(poller.wait(t.task_id, task_input=t.input, task_type=t.task_type) for t in tasks)
        )
        return list(done), poller
    finally:
        await poller.aclose()


def test_the_poller_learns_the_exact_render_time_of_a_kind(
    emulator: EmulatorServer, api_key: str
) -> None:
    """After one task of a kind never seen finishes, its render time is known exactly (to
    the 602 s / 300 the emulator took), not as the gap between two looks."""
    emulator.configure(time_scale=SPEED, pending_seconds=2, processing_seconds=600)

    async def scenario() -> RenderTimes:
        async with AsyncPiAPI(
            api_key=api_key,
            base_url=emulator.url,
            wait_policy=scaled_policy(),
            retry_policy=FAST_RETRY,
        ) as client:
            done, _ = await wait_all(client, 1)
            assert done[0].status == "completed"
            return client.render_times

    times = asyncio.run(scenario())
    kind = render_kind(TEN_MINUTES.to_input(), task_type="video_generation")
    bracket = times.bracket(kind)
    assert bracket is not None
    assert bracket[0] == bracket[1] == pytest.approx(602 / SPEED, rel=0.01)


def test_probing_a_batch_of_unseen_ten_minute_renders_stays_within_twelve_requests(
    emulator: EmulatorServer, api_key: str
) -> None:
    """Five 10-minute renders of a kind never seen finish (issue 16, item 2): the probe
    looks more often because five tasks wait on it, and still every video costs at most 12
    requests (its create and the status GETs), each created once."""
    emulator.configure(time_scale=SPEED, pending_seconds=2, processing_seconds=600)
    videos = 5

    async def scenario() -> int:
        async with AsyncPiAPI(
            api_key=api_key,
            base_url=emulator.url,
            wait_policy=scaled_policy(),
            retry_policy=FAST_RETRY,
        ) as client:
            done, poller = await wait_all(client, videos)
            assert all(task.status == "completed" for task in done)
            return poller.looks

    looks = asyncio.run(scenario())
    stats = emulator.stats()
    assert stats["creates"] == stats["create_requests"] == videos
    assert stats["gets"] == looks
    assert (stats["gets"] + stats["create_requests"]) / videos <= 12


def test_an_older_task_answered_late_does_not_skew_the_rate() -> None:
    """Only tasks created after every one seen pair their `created_at` with our clock: an
    older task looked up later (a listing) would make PiAPI's clock look slower."""
    clock = ServerClock(nominal_rate=1.0)
    clock.submitted(stamped(0, status="pending"), received_at=1000.0)
    clock.submitted(stamped(3, status="pending"), received_at=1003.0)
    clock.submitted(stamped(1, status="staged"), received_at=1009.0)
    assert clock.rate == 1.0


def test_a_lone_wait_learns_the_exact_render_time_too(api: Api, emulator: EmulatorServer) -> None:
    """`wait` without a poller (the CLI's `klingflow video`, the library) also keeps the
    render time PiAPI stamped, at the time scale its policy states."""
    emulator.configure(time_scale=SPEED, pending_seconds=2, processing_seconds=600)
    task = api.submit(TEN_MINUTES)
    assert api.wait(task.task_id, policy=scaled_policy()).status == "completed"
    bracket = api.client.render_times.bracket(render_kind(task.input, task_type=task.task_type))
    assert bracket is not None
    assert bracket[0] == bracket[1] == pytest.approx(602 / SPEED, rel=0.01)


def test_a_slow_answer_does_not_stretch_the_learned_render_time() -> None:
    """A look that found the task running proves it was running when PiAPI answered, which
    is before the answer reached us: the end is bounded by when the look was sent. Bounded by
    the answer's arrival, an answer slowed by a loaded machine pushed PiAPI's exact render
    time up (2.033 s learned for 2.007 s)."""
    times = RenderTimes()
    clock = WaitClock("t-1", WaitPolicy(), render_times=times, kind="pro-10s")
    clock.started -= 10.0  # submitted 10 s ago
    clock.asking()
    time.sleep(0.3)  # the answer takes 0.3 s to arrive
    clock.looked(stamped(0, status="processing"))
    clock.asking()
    clock.looked(stamped(0, 10.1))  # done; PiAPI's stamps: a 10.1 s render
    assert times.bracket("pro-10s") == pytest.approx((10.1, 10.1))


def test_renders_that_take_no_time_are_still_looked_at(
    emulator: EmulatorServer, api_key: str
) -> None:
    """An emulator with no delay finishes a render in 0 s by its own clock: once that is
    learned, the next tasks of the kind are still looked at and found done (the poller
    ranked them by elapsed / expected time and died dividing by 0, leaving them waiting)."""
    emulator.configure(time_scale=1000.0, pending_seconds=0, processing_seconds=0)

    async def scenario() -> list[Task]:
        async with AsyncPiAPI(
            api_key=api_key,
            base_url=emulator.url,
            wait_policy=WaitPolicy(initial_interval_seconds=0.01, time_scale=1000.0),
            retry_policy=FAST_RETRY,
        ) as client:
            first, _ = await wait_all(client, 1)
            async with asyncio.timeout(30):
                rest, _ = await wait_all(client, 3)
            return first + rest

    done = asyncio.run(scenario())
    assert [task.status for task in done] == ["completed"] * 4


def test_a_finish_re_shapes_only_the_schedules_it_changes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A finish that teaches nothing new (the same exact render time as the last) leaves
    the other tasks' schedules as they are: re-shaping every task waited on at every finish
    was quadratic in the tasks in flight (bench/notes.md, section 4). One that moves the
    kind's bound re-shapes each task still waiting, once."""
    made: list[LookSchedule] = []

    def counted(*args: Any, **kwargs: Any) -> LookSchedule:
        made.append(LookSchedule(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr("klingflow.piapi.polling.LookSchedule", counted)
    request = KlingVideoRequest(prompt="a wave", duration=5)

    async def scenario() -> list[int]:
        # Webhooks coming: the first looks are far off (the typical 150 s), so none is sent
        # to this address, where nothing listens.
        client = AsyncPiAPI(api_key="k" * 32, base_url="http://127.0.0.1:9")
        poller = StatusPoller(client, policy=WaitPolicy(jitter=0), has_webhook=True)
        since = time.time() - 20
        waits = [
            asyncio.ensure_future(poller.wait(f"t-{n}", since=since, task_input=request.to_input()))
            for n in range(6)
        ]
        await asyncio.sleep(0)
        counts = [len(made)]  # one schedule each, from the typical time
        for n, ended in enumerate((16.0, 16.0, 17.0)):
            poller.observe(stamped(100, 100 + ended).model_copy(update={"task_id": f"t-{n}"}))
            counts.append(len(made))
        await asyncio.sleep(0)
        assert [w.done() for w in waits] == [True, True, True, False, False, False]
        await poller.aclose()
        await asyncio.gather(*waits, return_exceptions=True)
        await client.aclose()
        return counts

    counts = asyncio.run(scenario())
    # 6 shaped; the first finish (16 s) re-shapes the 5 left; the second, also 16 s, none;
    # the third (17 s: no longer one bracket, so no bound) the 3 left.
    assert counts == [6, 11, 11, 14]
