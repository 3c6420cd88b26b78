"""The account's limits shared through Postgres leases: what a stopping engine leaves held."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa

from klingflow.workflows.database import make_engine
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
