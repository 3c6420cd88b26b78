"""Client-side throttling: never faster than the account's rate, never more tasks than allowed."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from klingflow.emulator import EmulatorServer, FaultRule
from klingflow.piapi import AsyncPiAPI, KlingVideoRequest, RateLimit, TaskStatus
from klingflow.piapi.throttle import AsyncRequestThrottle, AsyncTaskSlots, RequestThrottle

from ..policies import FAST_RETRY, FAST_WAIT
from .adapter import Api

REQUEST = KlingVideoRequest(prompt="a paper boat", duration=3)


def test_rate_limit_equal_to_the_servers_never_draws_a_429(
    make_api: Callable[..., Api], emulator: EmulatorServer
) -> None:
    """Twelve concurrent requests under a 5-per-0.5 s limit all pass, spread over >= 1 s."""
    emulator.configure(rate_limit={"requests": 5, "window_seconds": 0.5})
    api = make_api(rate_limit=RateLimit(requests=5, per_seconds=0.5), max_retries=0)
    started = time.monotonic()
    infos = api.concurrently([api.later("account") for _ in range(12)])
    elapsed = time.monotonic() - started
    assert len(infos) == 12
    assert emulator.stats()["rate_limited"] == 0
    assert elapsed >= 1.0  # requests 6-10 waited one window, 11-12 two


def test_rate_limit_counts_every_kind_of_request(
    make_api: Callable[..., Api], emulator: EmulatorServer
) -> None:
    """Submits, polls and account reads share one budget: a whole batch draws no 429."""
    emulator.configure(rate_limit={"requests": 8, "window_seconds": 0.4})
    api = make_api(rate_limit=RateLimit(requests=8, per_seconds=0.4), max_retries=0)
    done = api.concurrently([api.submit_and_wait_later(REQUEST) for _ in range(4)])
    assert all(task.status is TaskStatus.COMPLETED for task in done)
    stats = emulator.stats()
    assert stats["rate_limited"] == 0
    assert stats["creates"] == 4


def test_without_a_client_limit_the_server_does_rate_limit(
    make_api: Callable[..., Api], emulator: EmulatorServer
) -> None:
    """The control case: the same burst without client throttling meets 429s."""
    emulator.configure(rate_limit={"requests": 5, "window_seconds": 0.5})
    api = make_api(max_retries=0)
    outcomes: list[Any] = []
    for _ in range(8):
        try:
            outcomes.append(api.account())
        except Exception as error:
            outcomes.append(error)
    assert emulator.stats()["rate_limited"] >= 1


def test_max_concurrent_tasks_caps_the_servers_peak(
    make_api: Callable[..., Api], emulator: EmulatorServer
) -> None:
    """Six concurrent submit-and-wait jobs with max_concurrent_tasks=2 never run 3 at once."""
    api = make_api(max_concurrent_tasks=2)
    done = api.concurrently([api.submit_and_wait_later(REQUEST) for _ in range(6)])
    assert all(task.status is TaskStatus.COMPLETED for task in done)
    stats = emulator.stats()
    assert stats["creates"] == 6
    assert stats["peak_concurrency"] == 2


def test_max_concurrent_tasks_equal_to_the_accounts_is_never_rejected(
    make_api: Callable[..., Api], emulator: EmulatorServer
) -> None:
    """Against an account that rejects a 3rd running task, a cap of 2 draws no 429 at all."""
    emulator.configure(concurrency_limit=2, over_concurrency="reject")
    api = make_api(max_concurrent_tasks=2, max_retries=0)
    done = api.concurrently([api.submit_and_wait_later(REQUEST) for _ in range(6)])
    assert all(task.status is TaskStatus.COMPLETED for task in done)
    stats = emulator.stats()
    assert stats["rate_limited"] == 0
    assert stats["create_requests"] == 6


def test_sequential_submits_beyond_the_cap_do_not_deadlock(
    make_api: Callable[..., Api], emulator: EmulatorServer
) -> None:
    """A single caller submitting past the cap is unblocked by the submit's own polling."""
    api = make_api(max_concurrent_tasks=2)
    tasks = [api.submit(REQUEST) for _ in range(5)]
    stats = emulator.stats()
    assert stats["creates"] == 5
    assert stats["peak_concurrency"] <= 2
    # submitting the 3rd, 4th and 5th needed earlier tasks seen finished, by polling them
    assert sum(stats["tasks"][t.task_id]["gets"] for t in tasks) >= 3


def test_on_sending_is_called_only_once_a_slot_is_free(
    make_api: Callable[..., Api], emulator: EmulatorServer
) -> None:
    """A create queued behind the task cap is reported as leaving only after the cap let it."""
    api = make_api(max_concurrent_tasks=1)
    api.submit(REQUEST)
    seen: list[list[str]] = []

    def sending() -> None:  # what PiAPI holds at the moment the second create leaves
        seen.append([task["status"] for task in emulator.tasks()])

    api.submit(REQUEST, on_sending=sending)
    assert seen == [["completed"]]
    assert emulator.stats()["creates"] == 2


def test_a_failing_on_sending_sends_nothing(
    make_api: Callable[..., Api], emulator: EmulatorServer
) -> None:
    """If the caller cannot journal the create, the POST does not leave."""
    api = make_api()

    def broken() -> None:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        api.submit(REQUEST, on_sending=broken)
    assert emulator.stats()["create_requests"] == 0


def test_an_async_on_sending_is_awaited_before_the_post_leaves(
    emulator: EmulatorServer, api_key: str
) -> None:
    """The async client awaits a coroutine hook (the engine journals "sent" through its
    group commit there): the POST leaves once the hook is done, and not at all if it fails."""
    seen: list[int] = []

    async def journal() -> None:
        await asyncio.sleep(0.05)  # a write committing in another thread
        seen.append(emulator.stats()["create_requests"])

    async def broken() -> None:
        await asyncio.sleep(0)
        raise OSError("disk full")

    async def main() -> None:
        async with AsyncPiAPI(
            api_key=api_key, base_url=emulator.url, wait_policy=FAST_WAIT, retry_policy=FAST_RETRY
        ) as client:
            await client.submit(REQUEST, on_sending=journal)
            with pytest.raises(OSError, match="disk full"):
                await client.submit(REQUEST, on_sending=broken)

    asyncio.run(main())
    assert seen == [0]
    assert emulator.stats()["create_requests"] == 1


def test_without_max_concurrent_tasks_the_peak_is_higher(
    api: Api, emulator: EmulatorServer
) -> None:
    """The control case: five quick submits run five tasks at once."""
    emulator.configure(pending_seconds=10_000)
    for _ in range(5):
        api.submit(REQUEST)
    assert emulator.stats()["peak_concurrency"] == 5


@pytest.mark.parametrize(("requests", "per_seconds"), [(0, 1.0), (1, 0.0)])
def test_rate_limit_rejects_nonsense(requests: int, per_seconds: float) -> None:
    """A rate limit needs at least one request per positive window."""
    with pytest.raises(ValueError, match="rate limit"):
        RateLimit(requests=requests, per_seconds=per_seconds)


def test_requests_per_minute_is_a_sixty_second_window(emulator: EmulatorServer) -> None:
    """`requests_per_minute=N` is `RateLimit(N, 60)`; giving both forms is a TypeError."""
    from klingflow.piapi import PiAPI

    with PiAPI(api_key="k", base_url=emulator.url, requests_per_minute=30) as client:
        assert client.rate_limit == RateLimit(requests=30, per_seconds=60.0)
    with pytest.raises(TypeError, match="not both"):
        PiAPI(api_key="k", requests_per_minute=1, rate_limit=RateLimit(requests=1))


def test_a_create_goes_before_status_looks_when_the_limit_binds() -> None:
    """With the window full, a request that came later but is not deferrable (a create) is
    let through before a deferrable one (a status look), in both shells."""
    limit = RateLimit(requests=1, per_seconds=0.2)

    async def in_asyncio() -> list[str]:
        throttle = AsyncRequestThrottle(limit)
        order: list[str] = []
        await throttle.acquire()
        await throttle.release()  # the window is now full for 0.2 s

        async def take(name: str, *, is_deferrable: bool) -> None:
            await throttle.acquire(is_deferrable=is_deferrable)
            order.append(name)
            await throttle.release()

        look = asyncio.create_task(take("look", is_deferrable=True))
        await asyncio.sleep(0)  # the look waits first
        await asyncio.gather(look, take("create", is_deferrable=False))
        return order

    assert asyncio.run(in_asyncio()) == ["create", "look"]

    throttle = RequestThrottle(limit)
    order: list[str] = []
    throttle.acquire()
    throttle.release()
    look_waits = threading.Event()

    def look() -> None:
        look_waits.set()
        throttle.acquire(is_deferrable=True)
        order.append("look")
        throttle.release()

    thread = threading.Thread(target=look)
    thread.start()
    look_waits.wait()
    throttle.acquire()
    order.append("create")
    throttle.release()
    thread.join()
    assert order == ["create", "look"]


def test_limits_shared_while_a_create_is_on_the_wire_are_settled_where_taken(
    emulator: EmulatorServer, api_key: str
) -> None:
    """An engine shares the account's limits once it has started (`share_limits`); a create
    already past the old limiters binds its task on the slots it reserved, and leaves the new
    ones untouched (else one limiter leaks a slot and the other counts a task twice)."""
    emulator.add_fault(FaultRule(action="slow", method="POST", delay_seconds=0.5))

    async def main() -> tuple[str, list[str], list[str], bool]:
        before, after = AsyncTaskSlots(1), AsyncTaskSlots(1)
        async with AsyncPiAPI(
            api_key=api_key, base_url=emulator.url, wait_policy=FAST_WAIT, retry_policy=FAST_RETRY
        ) as client:
            client.share_limits(throttle=AsyncRequestThrottle(RateLimit(60, 60)), slots=before)
            sending = asyncio.Event()
            submitting = asyncio.create_task(client.submit(REQUEST, on_sending=sending.set))
            await sending.wait()  # past both limiters: the POST is leaving (0.5 s to answer)
            client.share_limits(throttle=AsyncRequestThrottle(RateLimit(60, 60)), slots=after)
            task = await submitting
            return task.task_id, before.running(), after.running(), await after.reserve(0)

    task_id, on_before, on_after, after_is_free = asyncio.run(main())
    assert on_before == [task_id]
    assert on_after == []
    assert after_is_free
