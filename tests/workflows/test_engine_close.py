"""An engine stops cleanly while DBOS's queue thread hands it a run (CI of session 8)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from dbos import _core as dbos_core
from dbos import _queue as dbos_queue

from klingflow.emulator import EmulatorServer
from klingflow.workflows import load_workflow_text
from klingflow.workflows.engine import Engine
from klingflow.workflows.records import RunStatus

from .harness import Harness, video_loop

DBOS_JOIN_SECONDS = 10.0
"""How long `DBOS.destroy()` waits for a queue thread before it leaves it running."""


def test_a_run_handed_over_while_the_engine_stops_waits_for_the_next_engine(
    harness: Harness, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DBOS's queue thread dequeued a run just as the engine stopped. It handed the run to
    the engine's loop while that loop sat in `DBOS.destroy()`, waiting for the thread: each
    waited for the other until destroy gave up after 10 s, and a thread left running later
    handed its run to a closed loop (CI: "Event loop is closed", a coroutine never awaited).
    The engine now stops at once, the run is left pending, not started, and the next engine
    runs it, with one create."""
    spec = load_workflow_text(video_loop("close", concurrency=1))
    dispatching = threading.Event()
    dispatch = dbos_core.execute_dequeued_workflow  # as `dbos._queue` imported it

    def held(dbos: Any, status: Any, owner_xid: str) -> Any:
        """DBOS's hand-over, held until `destroy` begins (the race, made certain)."""
        dispatching.set()
        deadline = time.monotonic() + 30
        while dbos._initialized and time.monotonic() < deadline:
            time.sleep(0.01)
        return dispatch(dbos, status, owner_xid)

    monkeypatch.setattr(dbos_queue, "execute_dequeued_workflow", held)
    closing: list[float] = []

    async def start(engine: Engine) -> str:
        run = await engine.start_run(spec, {"prompts": ["a fox"]})
        assert await asyncio.to_thread(dispatching.wait, 30), "DBOS never dequeued the run"
        closing.append(time.monotonic())
        return run.run_id

    run_id = harness.session(start)
    stopped_after = time.monotonic() - closing[0]
    monkeypatch.undo()
    assert stopped_after < DBOS_JOIN_SECONDS * 0.8, f"the engine took {stopped_after:.1f} s"
    assert emulator.stats()["creates"] == 0  # the run handed over did not start
    left = harness.runlog().get_run(run_id)
    assert left is not None
    assert left.status is not RunStatus.CRASHED

    async def finish(engine: Engine) -> Any:
        [record] = await engine.wait([run_id], timeout_seconds=60)
        return record

    record = harness.session(finish)
    assert record.status is RunStatus.COMPLETED, record.message
    assert emulator.stats()["creates"] == 1
