"""The account's limits shared through Postgres leases: what a stopping engine leaves held."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from klingflow.settings import Settings
from klingflow.workflows.database import make_engine
from klingflow.workflows.engine import Engine
from klingflow.workflows.leases import LeasedRequests, LeasedTasks, Leases


def _held(engine: sa.Engine) -> int:
    with engine.connect() as connection:
        return int(
            connection.execute(
                sa.text("SELECT count(*) FROM kf_leases WHERE holder IS NOT NULL")
            ).scalar_one()
        )


async def _reserve(leases: Leases) -> None:
    await LeasedTasks(leases, 1).reserve(5)


@pytest.mark.parametrize("kind", ["request", "task"])
def test_a_take_cancelled_while_its_thread_runs_gives_the_slot_back(
    postgres_url: str, kind: str
) -> None:
    """A stopping engine cancels workflows waiting for a slot, while the thread taking it for
    them is still at the database: the slot it took is given back, not left for the
    heartbeat to renew for as long as the process lives (and the other workers short)."""
    engine = make_engine(postgres_url)
    leases = Leases(engine, "worker-1", lease_seconds=300)

    async def cancel_a_take() -> None:
        # One thread: the jobs sent to it end in the order they were sent.
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=1))
        take = LeasedRequests(leases, 1).acquire() if kind == "request" else _reserve(leases)
        taking = asyncio.create_task(take)
        await asyncio.sleep(0)  # its thread is taking the slot
        taking.cancel()
        with pytest.raises(asyncio.CancelledError):
            await taking
        await asyncio.to_thread(lambda: None)  # queued after the take: it has ended
        for _ in range(10):  # and its end has reached the event loop
            await asyncio.sleep(0)
        await leases.drain()

    try:
        asyncio.run(cancel_a_take())
        assert _held(engine) == 0
    finally:
        engine.dispose()


def test_waiters_for_a_busy_slot_ask_the_database_one_at_a_time_and_in_turn(
    postgres_url: str,
) -> None:
    """While every task slot is taken, this process's waiting creates queue: one of them
    asks the database (each asking for itself sent a burst of takes twice a second, which
    the webhooks' confirming GETs waited behind), and they get the slots freed here in the
    order they came."""
    engine = make_engine(postgres_url)
    leases = Leases(engine, "worker-1", lease_seconds=300)
    asking = [0, 0]  # takes at the database now, and the most at once
    counting = threading.Lock()

    def is_take(statement: str) -> bool:
        return "SKIP LOCKED" in statement

    @sa.event.listens_for(engine, "before_cursor_execute")
    def sent(_c: sa.Connection, _cursor: object, statement: str, *_: object) -> None:
        if is_take(statement):
            with counting:
                asking[0] += 1
                asking[1] = max(asking)

    @sa.event.listens_for(engine, "after_cursor_execute")
    def answered(_c: sa.Connection, _cursor: object, statement: str, *_: object) -> None:
        if is_take(statement):
            with counting:
                asking[0] -= 1

    async def in_turn() -> list[str]:
        slots = LeasedTasks(leases, 1)
        assert await slots.reserve(5)
        slots.bind("t-0")
        served: list[str] = []

        async def wait(name: str) -> None:
            assert await slots.reserve(60)
            served.append(name)
            slots.bind(f"t-{name}")

        waiters = []
        for name in "abc":
            waiters.append(asyncio.create_task(wait(name)))
            for _ in range(500):  # the first asks; the rest queue behind it
                if leases.queue("task").turn.locked():
                    break
                await asyncio.sleep(0.01)
            assert leases.queue("task").turn.locked()
            await asyncio.sleep(0.05)
        asking[1] = 0  # from here on, every waiter waits for a slot
        for turn, done in enumerate(("t-0", "t-a", "t-b"), 1):
            slots.finish(done)  # given back here: the first in line takes it
            while len(served) < turn:
                await asyncio.sleep(0.01)
        await asyncio.gather(*waiters)
        slots.finish("t-c")
        await leases.drain()
        return served

    try:
        assert asyncio.run(in_turn()) == ["a", "b", "c"]
        assert asking[1] == 1
        assert _held(engine) == 0
    finally:
        engine.dispose()


def test_a_take_looks_on_from_its_last_slot_and_wraps_round_to_a_freed_one(
    postgres_url: str,
) -> None:
    """A take starts after the slot this process took last, so it does not walk past the
    minute's busy request slots from slot 0 each time; with none free from there to the
    limit it wraps round and still finds a slot freed behind it, and says None only when
    every slot is busy."""
    engine = make_engine(postgres_url)
    leases, other = (Leases(engine, name, lease_seconds=300) for name in ("w1", "w2"))
    starts: list[int] = []

    @sa.event.listens_for(engine, "before_cursor_execute")
    def sent(_c: sa.Connection, _cursor: object, statement: str, params: Any, *_: object) -> None:
        if "SKIP LOCKED" in statement:
            starts.append(params["start"])

    def take(holder: Leases) -> int | None:
        taken = holder.take("request", 4, window_seconds=60)
        return None if taken is None else taken[0]

    try:
        leases.ensure_slots("request", 4)
        taken = [leases.take("request", 4, window_seconds=60) for _ in range(3)]
        assert [t[0] for t in taken if t] == [0, 1, 2]
        assert starts == [0, 1, 2]  # each looked from the slot after the last one on
        assert take(other) == 3  # another worker's take: every slot is busy now
        slot, lease_id = taken[1] or (0, "")
        leases.give_back("request", slot, lease_id, answered=False)  # free at once
        starts.clear()
        assert take(leases) == 1  # nothing free from slot 3 on: round from slot 0
        assert starts == [3, 0]
        assert take(leases) is None
        assert take(other) is None
    finally:
        leases.release_all()
        other.release_all()
        engine.dispose()


def test_the_heartbeat_renews_past_slots_a_write_back_has_locked(postgres_url: str) -> None:
    """A write-back gives several slots back in one statement while the heartbeat extends
    every lease of the holder: the heartbeat skips the rows the write-back holds instead of
    waiting for it (in another order the two could deadlock), and extends the others."""
    engine = make_engine(postgres_url)
    leases = Leases(engine, "worker-1", lease_seconds=300)

    def expiries() -> dict[int, object]:
        with engine.connect() as connection:
            rows = connection.execute(
                sa.text("SELECT slot, expires_at FROM kf_leases WHERE holder = 'worker-1'")
            )
            return {int(slot): expires for slot, expires in rows}

    try:
        leases.ensure_slots("task", 2)
        first, second = leases.take("task", 2), leases.take("task", 2)
        assert first is not None
        assert second is not None
        before = expiries()
        with engine.begin() as write_back:  # a write-back under way on the first slot
            write_back.execute(
                sa.text("SELECT 1 FROM kf_leases WHERE kind = 'task' AND slot = :slot FOR UPDATE"),
                {"slot": first[0]},
            )
            renewing = threading.Thread(target=leases.renew)
            renewing.start()
            renewing.join(timeout=5)
            assert not renewing.is_alive()  # it did not wait for the write-back
        after = expiries()
        assert after[first[0]] == before[first[0]]  # skipped: the next beat extends it
        assert after[second[0]] > before[second[0]]  # type: ignore[operator]
    finally:
        leases.release_all()
        engine.dispose()


def test_a_restarted_worker_gives_back_the_slot_of_a_task_that_finished_before_it_died(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker saw a task finish and died before that slot's release was written. Restarted,
    it reclaimed the slot with its tasks in flight and held it, renewed by its heartbeat, for
    as long as it ran: one task fewer for the whole account. A reclaimed slot whose task the
    run log no longer has in flight is given back at start; one still running is kept."""
    monkeypatch.setenv("PIAPI_API_KEY", "leases-test-key")
    engine = make_engine(postgres_url)

    def worker() -> Leases:
        return Leases(engine, "worker-1", lease_seconds=300)

    async def died_after_a_task_finished() -> None:
        leases = worker()
        slots = LeasedTasks(leases, 5)
        for task_id in ("task-finished", "task-running"):
            assert await slots.reserve(5)
            slots.bind(task_id)
        await leases.drain()  # then the process died: no release

    async def restarted_engine() -> int:
        settings = Settings(home=tmp_path, database_url=postgres_url)
        async with Engine(settings, executor_id="worker-1"):
            return _held(engine)

    try:
        asyncio.run(died_after_a_task_finished())
        assert _held(engine) == 2
        slots = LeasedTasks(worker(), 5)  # restarted: "task-running" is still in flight
        slots.adopt(["task-running"])
        assert (slots.running(), _held(engine)) == (["task-running"], 1)
        # The engine adopts what its run log has in flight: here nothing is.
        assert asyncio.run(restarted_engine()) == 0
    finally:
        engine.dispose()
