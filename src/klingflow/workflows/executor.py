"""Runs a workflow's nodes in order: templates, `if`, retries with backoff, pauses, loops.

A node's own work is its kind's `run` (see `klingflow.workflows.nodes`); `loop` alone is
run here, through the engine's loop runner.

This is the interpreter, and it knows nothing of DBOS: durability comes in through the
`Durable` it is given (the `engine` package supplies DBOS steps and durable sleeps; loop
chunks supply inline ones). Decisions depend only on values returned by durable steps, so a
replay after a crash takes exactly the same path.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

from klingflow.errors import (
    DownloadError,
    HTTPNodeError,
    InvalidRequestError,
    KlingflowError,
    LoopItemsFailedError,
    RecordedError,
    SubmitUncertainError,
    TaskFailedError,
)
from klingflow.workflows.loop_items import finished_top_level
from klingflow.workflows.loop_output import live_output, stored_output
from klingflow.workflows.nodes import NodeSpec
from klingflow.workflows.nodes.base import Node
from klingflow.workflows.nodes.loop import LoopNode, LoopParams
from klingflow.workflows.nodes.runtime import Durable, Runtime, Services
from klingflow.workflows.records import NodeStatus, RunRecord
from klingflow.workflows.retries import WorkflowRetry
from klingflow.workflows.spec import Workflow
from klingflow.workflows.templates import template_context

__all__ = ["LoopRunner", "NodePaused", "error_record", "execute_items", "execute_run"]


class NodePaused(Exception):
    """A node is out of attempts (or cannot be retried): the run pauses on it."""

    def __init__(self, node_path: str, error: dict[str, Any]) -> None:
        super().__init__(f"paused on {node_path}: {error['message']}")
        self.node_path = node_path
        self.error = error


def error_record(error: BaseException) -> dict[str, Any]:
    """The run log's record of an error: class, message, PiAPI codes, whether to retry.

    (Not validation's `pydantic_issue`, which turns a pydantic error into a file problem.)"""
    if isinstance(error, RecordedError):
        return dict(error.info)
    info: dict[str, Any] = {
        "type": type(error).__name__,
        "message": str(error),
        "retryable": bool(getattr(error, "retryable", False)),
        "code": getattr(error, "code", None),
        "api_message": getattr(error, "api_message", None),
        "raw_message": None,
        "task_id": None,
    }
    if isinstance(error, TaskFailedError):
        info["code"] = error.task.error.code
        info["api_message"] = error.task.error.message
        info["raw_message"] = error.task.error.raw_message
        info["task_id"] = error.task.task_id
    if isinstance(error, SubmitUncertainError):
        info["intent_id"] = error.intent_id
    if isinstance(error, HTTPNodeError):
        info["code"] = error.status_code
    if isinstance(error, DownloadError):
        info["task_id"] = error.task_id
    if isinstance(error, LoopItemsFailedError):
        info["failed_items"] = {str(k): v for k, v in error.failed.items()}
        info["partial_output"] = stored_output(error.partial_output)  # a loop's: a reference
    return info


def _jitter(key: str) -> float:
    """A deterministic factor in [0.5, 1.0): full-jitter-like spread that replays the same."""
    digest = hashlib.sha256(key.encode()).digest()
    return 0.5 + digest[0] / 512


async def record(state: RunState, write: Callable[[], Awaitable[object]]) -> None:
    """A run-log write as a durable step, so a replay after a crash does not repeat it.
    `write` is the run log's group-committed form (`*_soon`): awaited, it has landed."""

    async def once() -> None:
        await write()

    await state.durable.step("runlog", once)


LoopRunner = Callable[[RunRecord, int, LoopNode, LoopParams, dict[str, Any]], Awaitable[Any]]


@dataclass
class RunState:
    """What one pass over a run needs: the run, its epoch, the services and durability."""

    run: RunRecord
    epoch: int
    workflow: Workflow
    services: Services
    durable: Durable
    outputs: dict[str, Any] = field(default_factory=dict)

    @property
    def output_dir(self) -> Path:
        """The run's output folder, where its nodes save files."""
        return Path(self.run.output_dir)


async def run_node(
    state: RunState,
    node: NodeSpec,
    context: Mapping[str, Any],
    *,
    node_path: str,
    item_index: int | None = None,
    loop_runner: LoopRunner | None = None,
) -> Any:
    """One node, with its retry policy; raises `NodePaused` when it cannot succeed."""
    runlog = state.services.runlog
    policy: WorkflowRetry = state.workflow.retry_for(node)
    run_id = state.run.run_id
    epoch = state.epoch

    def started(inputs: Any) -> Callable[[], Awaitable[None]]:
        return lambda: runlog.node_started_soon(
            run_id, epoch, node_path, node_id=node.id, node_type=node.type,
            item_index=item_index, inputs=inputs,
        )  # fmt: skip

    def attempted(
        number: int, began: float, info: Any, delay: float | None
    ) -> Callable[[], Awaitable[None]]:
        return lambda: runlog.add_attempt_soon(
            run_id, epoch, node_path, number=number, started_at=began, error=info,
            retry_in_seconds=delay,
        )  # fmt: skip

    try:
        params = node.render_params(context)
    except (InvalidRequestError, KlingflowError) as error:
        info = error_record(error)
        await record(state, started(dict(node.with_)))
        await record(state, attempted(1, time.time(), info, None))
        await record(
            state,
            lambda: runlog.node_finished_soon(
                run_id, epoch, node_path, status=NodeStatus.FAILED, error=info
            ),
        )
        raise NodePaused(node_path, info) from None
    await record(state, started(params.model_dump(mode="json", by_alias=True)))
    runtime = Runtime(
        run_id=run_id,
        epoch=state.epoch,
        node_path=node_path,
        output_dir=state.output_dir,
        services=state.services,
        durable=state.durable,
    )
    for attempt in range(1, policy.attempts + 1):
        began = time.time()
        try:
            if isinstance(node, LoopNode):
                assert loop_runner is not None, "loops run only at the top level"
                assert isinstance(params, LoopParams)
                output = await loop_runner(state.run, state.epoch, node, params, dict(context))
            else:
                kind: Node[Any] = node  # each kind's `run` takes the params it rendered
                output = await kind.run(runtime, params)
        except KlingflowError as error:
            info = error_record(error)
            retry = info["retryable"] or (
                info["type"] == "TaskFailedError" and policy.retry_failed_generations
            )
            if retry and attempt < policy.attempts:
                delay = policy.delay_seconds(attempt) * _jitter(f"{run_id}/{node_path}/{attempt}")
                await record(state, attempted(attempt, began, info, delay))
                await state.durable.sleep(delay)
                continue
            failed = partial(
                runlog.node_finished_soon,
                status=NodeStatus.FAILED,
                error=info,
                attempt=(attempt, began),
            )
            await record(state, partial(failed, run_id, epoch, node_path))
            raise NodePaused(node_path, info) from None
        summary = output if isinstance(output, dict) else {}
        cost = summary.get("cost_usd")
        succeeded = partial(
            runlog.node_finished_soon,
            status=NodeStatus.SUCCEEDED,
            output=stored_output(output),  # a loop's: a reference to its items, not them
            task_id=summary.get("task_id"),
            cost_usd=None if cost is None else Decimal(cost),
            attempt=(attempt, began),
        )
        await record(state, partial(succeeded, run_id, epoch, node_path))
        return output
    raise AssertionError("unreachable")


async def execute_run(state: RunState, *, loop_runner: LoopRunner) -> dict[str, Any]:
    """The top-level nodes in order; returns the rendered `outputs:`. Raises `NodePaused`."""
    runlog = state.services.runlog

    async def finished() -> dict[str, Any]:
        return finished_top_level(runlog, state.run.run_id, state.epoch)

    reused: dict[str, Any] = await state.durable.step("runlog.finished", finished)
    for node in state.workflow.nodes:
        context = template_context(
            trigger=state.run.trigger, inputs=state.run.inputs, outputs=state.outputs
        )
        if node.id in reused:
            value = reused[node.id]
            if isinstance(node, LoopNode):  # its items, read when a template uses them
                value = live_output(runlog, state.run.run_id, state.epoch, value)
            state.outputs[node.id] = value
            continue
        if not await _should_run(state, node, context, node.id, None):
            state.outputs[node.id] = None
            continue
        state.outputs[node.id] = await run_node(
            state, node, context, node_path=node.id, loop_runner=loop_runner
        )
    context = template_context(
        trigger=state.run.trigger, inputs=state.run.inputs, outputs=state.outputs
    )
    try:
        return state.workflow.render_outputs(context)
    except KlingflowError as error:
        raise NodePaused("outputs", error_record(error)) from None


async def _should_run(
    state: RunState,
    node: NodeSpec,
    context: Mapping[str, Any],
    node_path: str,
    item_index: int | None,
) -> bool:
    """Whether the node's `if` holds; a skipped node is logged, a broken `if` pauses."""
    runlog, run_id, epoch = state.services.runlog, state.run.run_id, state.epoch
    info: dict[str, Any] | None = None
    try:
        if node.should_run(context):
            return True
    except KlingflowError as error:
        info = error_record(error)
    await record(
        state,
        lambda: runlog.node_started_soon(
            run_id, epoch, node_path, node_id=node.id, node_type=node.type,
            item_index=item_index, inputs=None,
        ),
    )  # fmt: skip
    status = NodeStatus.SKIPPED if info is None else NodeStatus.FAILED
    await record(
        state,
        lambda: runlog.node_finished_soon(run_id, epoch, node_path, status=status, error=info),
    )
    if info is not None:
        raise NodePaused(node_path, info)
    return False


def item_path(loop_id: str, index: int, node_id: str) -> str:
    """A loop body node's path in the run log: `loop[3].node`."""
    return f"{loop_id}[{index}].{node_id}"


async def execute_items(
    state: RunState,
    loop: LoopNode,
    items: Mapping[int, Any],
    length: int,
    outer: Mapping[str, Any],
    semaphore: asyncio.Semaphore,
) -> dict[str, Any]:
    """Run the loop body for some items (index -> item), concurrently; one item's failure
    spares the rest (an unexpected error, which crashes the run, ends them all).

    Returns `{"failed": {index: error}}`: each item's outputs are in the run log, where the
    loop's output reads them when a template uses it (`loop_output.LoopOutput`), so a
    chunk's answer, which DBOS stores twice, stays small. Body nodes finished by an
    earlier attempt (this epoch) are reused from the run log, not re-run.
    """
    runlog = state.services.runlog
    done = runlog.finished_nodes(state.run.run_id, state.epoch, item_indices=items.keys())
    failed: dict[str, Any] = {}

    halted = asyncio.Event()  # an item's unexpected error: the chunk is over

    async def one(index: int) -> None:
        async with semaphore:
            if halted.is_set():
                return  # never start an item for a run that crashed meanwhile
            item_outputs: dict[str, Any] = {}
            for node in loop.nodes:
                path = item_path(loop.id, index, node.id)
                context = template_context(
                    trigger=state.run.trigger,
                    inputs=state.run.inputs,
                    outputs={**outer, **item_outputs},
                    item=items[index],
                    index=index,
                    length=length,
                )
                if path in done:
                    item_outputs[node.id] = done[path].output
                    continue
                try:
                    if not await _should_run(state, node, context, path, index):
                        item_outputs[node.id] = None
                        continue
                    item_outputs[node.id] = await run_node(
                        state, node, context, node_path=path, item_index=index
                    )
                except NodePaused as paused:
                    failed[str(index)] = {"node_path": paused.node_path, **paused.error}
                    return

    async def guarded(index: int) -> None:
        try:
            await one(index)
        except BaseException:
            halted.set()
            raise

    tasks = [asyncio.ensure_future(guarded(index)) for index in items]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        # An item's unexpected error (a database outage beyond its window, a bug) ends the
        # chunk, so it ends the items still working too: left running, they went on sending
        # paid creates for a crashed run, unseen by shutdown and racing its `runs retry`.
        # (A create already sent still gets its answer recorded: see kling_tasks.submit_once.)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    return {"failed": failed}
