"""A loop's items fan out over the PiAPI queue in chunks, each chunk a child workflow.

One child workflow runs many items (each with its own journal entries in the run log), so
1,000 videos cost tens of DBOS workflows rather than thousands of steps. Inside a chunk the
items are not steps: the chunk is one, and the run log's intents and node records make each
item's work exactly-once when the chunk is run again.
"""

from __future__ import annotations

import asyncio
import uuid
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dbos import DBOS, SetWorkflowID

from klingflow.errors import LoopItemsFailedError
from klingflow.piapi import AsyncWebhookEvents
from klingflow.redaction import redact_values
from klingflow.workflows.engine._durable import PIAPI_QUEUE, WorkflowDurable, current, durable_step
from klingflow.workflows.executor import RunState, execute_items
from klingflow.workflows.loop_output import LoopOutput, live_output, stored_output
from klingflow.workflows.nodes.loop import LoopNode, LoopParams
from klingflow.workflows.records import RunRecord
from klingflow.workflows.secret_inputs import open_run
from klingflow.workflows.spec import Workflow

if TYPE_CHECKING:
    from klingflow.workflows.engine._engine import Engine

__all__ = ["CHUNK_SIZE", "fan_out", "run_chunk"]

CHUNK_SIZE = 50
"""Loop items per child workflow (a loop keeps the size it started with: `_plan`)."""


class InlineDurable:
    """Durability inside a loop chunk: the chunk is one step; the run log's intents and node
    records make each item's work exactly-once when the chunk is run again."""

    def __init__(self, events: AsyncWebhookEvents) -> None:
        self.events = events

    async def step(self, name: str, fn: Callable[[], Awaitable[Any]]) -> Any:
        """Just run `fn`: the chunk around it is the step."""
        return await fn()

    async def sleep(self, seconds: float, *, wake_topic: str | None = None) -> None:
        """Sleep in memory; a task's webhook (seen by this process) ends it early."""
        if wake_topic is not None and wake_topic.startswith("task:"):
            await self.events.wait_for(wake_topic.removeprefix("task:"), timeout_seconds=seconds)
        else:
            await asyncio.sleep(seconds)


@DBOS.workflow(name="klingflow.loop_chunk", max_recovery_attempts=50)
async def chunk_workflow(
    run_id: str,
    epoch: int,
    loop_id: str,
    indices: list[int],
    items: list[Any],
    length: int,
    outer: dict[str, Any],
    concurrency: int,
) -> dict[str, Any]:
    """Items `indices` of a run's loop (the run's workflow waits for every chunk)."""
    engine = current()
    with engine.running():
        result = await run_chunk(
            engine,
            run_id,
            epoch,
            loop_id,
            dict(zip(indices, items, strict=True)),
            length,
            outer,
            concurrency,
        )
        masked: dict[str, Any] = redact_values(result, engine.runlog.secrets)  # DBOS stores it
        return masked


async def fan_out(
    engine: Engine,
    run: RunRecord,
    epoch: int,
    loop: LoopNode,
    params: LoopParams,
    context: dict[str, Any],
) -> LoopOutput:
    """Fan the items out over the PiAPI queue in chunks; the output is the items' body nodes
    in the run log, read when a later template uses it (`LoopOutput`): the process holds no
    item's output while the loop runs or when it ends, however many items it has."""
    generation, chunk_size = await _plan(engine)
    items = params.items
    # Earlier loops' outputs go to the chunks as their references (`run_chunk` reads them).
    outer = {node_id: stored_output(value["output"]) for node_id, value in context["nodes"].items()}
    queue = await DBOS.retrieve_queue_async(PIAPI_QUEUE)
    assert queue is not None
    handles = []
    for start in range(0, len(items), chunk_size):
        indices = list(range(start, min(start + chunk_size, len(items))))
        with SetWorkflowID(f"{run.run_id}.{loop.id}.{generation}.{start}"):
            handles.append(
                await queue.enqueue_async(
                    chunk_workflow,
                    run.run_id,
                    epoch,
                    loop.id,
                    indices,
                    # DBOS stores a workflow's arguments: known secrets masked
                    redact_values([items[i] for i in indices], engine.runlog.secrets),
                    len(items),
                    redact_values(outer, engine.runlog.secrets),
                    params.concurrency,
                )
            )
    failed: dict[str, Any] = {}
    for handle in handles:  # a chunk answers with its failed items only (`run_chunk`)
        result = await handle.get_result(polling_interval_sec=0.1)
        failed.update(result["failed"])
    del handles
    engine._semaphores.pop((run.run_id, epoch, loop.id), None)
    output = LoopOutput(
        engine.runlog, run.run_id, epoch, loop.id, body=[node.id for node in loop.nodes],
        length=len(items), failed=len(failed),
    )  # fmt: skip
    if failed:
        raise LoopItemsFailedError(
            loop.id, failed={int(k): v for k, v in failed.items()}, total=len(items),
            partial_output=output,
        )  # fmt: skip
    return output


async def _plan(engine: Engine) -> tuple[str, int]:
    """The loop's generation (its chunks' workflow ids) and chunk size, recorded as one step:
    a replay enqueues the same chunks even when this engine splits loops differently. A
    generation recorded alone comes from a release whose chunks were always `CHUNK_SIZE`."""

    async def new_plan() -> str:
        return f"{uuid.uuid4().hex[:8]}/{engine.chunk_size}"

    plan: str = await WorkflowDurable().step("loop.generation", new_plan)
    generation, _, size = plan.partition("/")
    return generation, int(size) if size else CHUNK_SIZE


@dataclass(eq=False)
class _StoredRun:
    """A run's record and workflow as its chunks read them."""

    record: RunRecord
    workflow: Workflow


_stored_runs: weakref.WeakValueDictionary[tuple[int, str, int], _StoredRun] = (
    weakref.WeakValueDictionary()
)
"""One copy of each run per process, shared by the run's chunks executing there: each chunk
used to read its own, and a loop's chunks are all dequeued at once, so a 20,000-video loop
held 400 copies of its 20,000 prompts (6 GB). Weak: it is gone when no chunk holds it."""


def _stored_run(engine: Engine, run_id: str, epoch: int) -> _StoredRun:
    key = (id(engine.runlog), run_id, epoch)
    stored = _stored_runs.get(key)
    if stored is None:
        run = engine.runlog.get_run(run_id)
        assert run is not None
        stored = _StoredRun(run, Workflow.model_validate(run.workflow))
        _stored_runs[key] = stored
    return stored


async def run_chunk(
    engine: Engine,
    run_id: str,
    epoch: int,
    loop_id: str,
    items: dict[int, Any],
    length: int,
    outer: dict[str, Any],
    concurrency: int,
) -> dict[str, Any]:
    """Run the chunk's items, at most `concurrency` at once across the run's chunks in this
    process, as one step."""
    stored = _stored_run(engine, run_id, epoch)
    workflow = stored.workflow
    # Its secret inputs, held in this task's context (a shallow copy of the shared record).
    run = open_run(engine.runlog, stored.record, workflow, engine.client.api_key)
    loop = workflow.node(loop_id)
    assert isinstance(loop, LoopNode)
    key = (run_id, epoch, loop_id)
    semaphore = engine._semaphores.setdefault(key, asyncio.Semaphore(concurrency))
    state = RunState(run, epoch, workflow, engine.services(), InlineDurable(engine.events))
    outer = {  # an earlier loop's output, by reference: read when a template uses it
        node_id: live_output(engine.runlog, run_id, epoch, value)
        if isinstance(workflow.node(node_id), LoopNode)
        else value
        for node_id, value in outer.items()
    }

    async def run_items() -> dict[str, Any]:
        return await execute_items(state, loop, items, length, outer, semaphore)

    result: dict[str, Any] = (await durable_step("loop.items", run_items))["ok"]
    return result
