"""The durable engine: runs are DBOS workflows. The only package that imports `dbos`.

Each run is one DBOS workflow whose id is the run id (an idempotency key maps to one run).
Its nodes call `Durable.step` (a DBOS step: recorded, not repeated after a crash) and
`Durable.sleep` (a durable sleep, or a `recv` a webhook can cut short). A paused run stays
alive in a durable `recv` on its control topic, so retry, skip, restart and cancel are
messages, and a restart of the process finds the run exactly where it was.

Loops fan out over the `klingflow-piapi` queue in chunks: one child workflow runs many items
(each with its own journal entries in the run log), so 1,000 videos cost tens of DBOS
workflows rather than thousands of steps.

The traps of shared/dbos-notes.md, and what we do about each:
- steps run at least once -> paid submissions are guarded by the run log's intents;
- a code edit strands in-flight runs -> `application_version` is pinned (ENGINE_VERSION);
- two processes with one executor id run steps twice -> each process locks its own slot;
- unbounded thread pool -> `max_executor_threads`;
- pickle by default, secrets in arguments -> portable JSON, and only ids are arguments;
- attempts are not stored -> the run log stores every attempt;
- Python >= 3.12 with SQLite < 3.42 cannot launch -> refused with a clear message.

What a run does and what a command decides live outside, free of DBOS: lifecycle.py (a
run's life), steering.py (retry, skip, restart, cancel; webhook reconciliation),
starting.py (checks before a run starts). Here, only the wiring:
- `_durable.py`: the names DBOS knows, the process's engine, steps, the run workflow, and
  the one private DBOS call (`recover_executor`);
- `_fanout.py`: a loop's items in chunks, each a child workflow on the PiAPI queue;
- `_engine.py`: `Engine`, DBOS launched in this process; `_queue.py`: `RunQueue`, which
  only queues runs (`klingflow run --detach`).
"""

from klingflow.workflows.engine._durable import ENGINE_VERSION, recover_executor
from klingflow.workflows.engine._engine import Engine
from klingflow.workflows.engine._queue import RunQueue

__all__ = ["ENGINE_VERSION", "Engine", "RunQueue", "recover_executor"]
