"""The first run on a new database starts at once: DBOS polls the engine's queues from launch.

DBOS gives a queue a worker thread at launch when the queue is already in its database, and
notices one registered later only at its queue manager's next rescan, up to a second on:
the first run of a new home used to wait that second before its first node.
"""

from __future__ import annotations

import threading

import pytest

from klingflow.workflows.engine import Engine
from klingflow.workflows.engine._durable import PIAPI_QUEUE, RUNS_QUEUE

from .harness import Harness


@pytest.mark.empty_database
def test_a_new_database_s_queues_are_polled_from_launch(harness: Harness) -> None:
    """Right after the engine has launched on a database it has never seen, both of its
    queues have their DBOS worker thread, ready for the first run's enqueue."""

    async def workers(engine: Engine) -> set[str]:
        return {thread.name for thread in threading.enumerate()}

    running = harness.session(workers)
    assert {f"queue-worker-{RUNS_QUEUE}", f"queue-worker-{PIAPI_QUEUE}"} <= running
