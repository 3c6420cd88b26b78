"""A loop's output as later nodes and the run's `outputs:` see it, read from the run log
when a template uses it: in item order, across chunks, after a failure and skip, and after
an engine stopped mid-loop. The loop node records a reference to its items, not their
outputs (test_loop_output_lazy.py: a many-item output, templates over it, older runs)."""

from __future__ import annotations

import asyncio
from typing import Any

from klingflow.emulator import EmulatorServer
from klingflow.workflows import load_workflow_text
from klingflow.workflows.engine import Engine
from klingflow.workflows.loop_output import is_reference
from klingflow.workflows.records import NodeStatus, RunRecord, RunStatus
from klingflow.workflows.run_detail import run_detail
from klingflow.workflows.steering import Action, Command

from .harness import Harness

SETS = """
name: sets
inputs:
  rows: {type: array, required: true}
nodes:
  - id: each
    type: loop
    with: {items: "{{ inputs.rows }}", concurrency: 3}
    nodes:
      - {id: first, type: set, with: {values: {n: "{{ item.n }}", at: "{{ loop.index }}"}}}
      - id: second
        type: set
        if: "{{ not item.skip }}"
        with: {values: {twice: "{{ item.n * 2 }}"}}
  - id: report
    type: set
    with: {values: {count: "{{ nodes.each.output | length }}", all: "{{ nodes.each.output }}"}}
outputs:
  items: "{{ nodes.each.output }}"
  seconds: "{{ nodes.each.output | map(attribute='second') | list }}"
  report: "{{ nodes.report.output }}"
"""


def expected(rows: list[dict[str, Any]]) -> list[Any]:
    return [
        {
            "first": {"n": row["n"], "at": index},
            "second": None if row.get("skip") else {"twice": row["n"] * 2},
        }
        for index, row in enumerate(rows)
    ]


def test_later_nodes_see_every_item_s_output_in_order_across_chunks(harness: Harness) -> None:
    """Seven items in chunks of two (finishing in any order): the loop's output, as a later
    node's template and the run's outputs see it, has every item in item order, each with
    its body nodes in body order (None for one skipped by its `if`)."""
    rows = [{"n": n, "skip": n % 3 == 0} for n in range(7)]

    async def work(engine: Engine) -> RunRecord:
        run = await engine.start_run(load_workflow_text(SETS), {"rows": rows})
        [record] = await engine.wait([run.run_id], timeout_seconds=60)
        return record

    run = harness.session(work, chunk_size=2)
    assert run.status == RunStatus.COMPLETED, run.message
    assert run.outputs["items"] == expected(rows)
    assert [list(item) for item in run.outputs["items"]] == [["first", "second"]] * 7
    assert run.outputs["seconds"] == [item["second"] for item in expected(rows)]
    assert run.outputs["report"] == {"count": 7, "all": expected(rows)}
    runlog = harness.runlog()
    stored = runlog.finished_nodes(run.run_id, run.epoch)["each"].output
    assert stored == {
        "$loop_output": {"loop": "each", "length": 7, "failed": 0, "body": ["first", "second"]}
    }  # a reference to the items' nodes, not their outputs
    detail = run_detail(runlog, run.run_id)
    assert detail is not None
    assert detail.nodes[0].output == expected(rows)  # as people see it: the list


SKIPPABLE = SETS.replace(
    "  seconds: \"{{ nodes.each.output | map(attribute='second') | list }}\"\n", ""
)
CHUNK = 2
"""Every engine of a test splits loops alike: the next one replays the paused run's chunks."""


def test_a_failed_item_is_none_in_the_partial_output_and_skip_keeps_the_rest(
    harness: Harness,
) -> None:
    """An item whose body fails is None in the loop's partial output (kept in the pause's
    error); skipping the loop gives later nodes the finished items' outputs."""
    rows: list[dict[str, Any]] = [{"n": n, "skip": False} for n in range(5)]
    del rows[2]["n"]  # its first body node's template fails

    async def start(engine: Engine) -> RunRecord:
        started = await engine.start_run(load_workflow_text(SKIPPABLE), {"rows": rows})
        [record] = await engine.wait([started.run_id], timeout_seconds=60)
        return record

    paused = harness.session(start, chunk_size=CHUNK)
    assert paused.status == RunStatus.PAUSED
    assert paused.paused_node == "each"
    runlog = harness.runlog()
    [loop] = [n for n in runlog.nodes(paused.run_id) if n.node_path == "each"]
    assert loop.status is NodeStatus.FAILED
    assert loop.error is not None
    partial: list[Any] = expected([{"n": n, "skip": False} for n in range(5)])
    partial[2] = None
    assert is_reference(loop.error["partial_output"])  # the items stay in their nodes
    assert list(loop.error["failed_items"]) == ["2"]
    detail = run_detail(runlog, paused.run_id)
    assert detail is not None
    assert detail.nodes[0].error is not None
    assert detail.nodes[0].error["partial_output"] == partial
    [attempt] = [a for a in detail.attempts if a.node_path == "each"]
    assert attempt.error is not None
    assert attempt.error["partial_output"] == partial

    async def skip(engine: Engine) -> RunRecord:
        await engine.command(paused.run_id, Command(action=Action.SKIP))
        [record] = await engine.wait([paused.run_id], timeout_seconds=60)
        return record

    skipped = harness.session(skip, chunk_size=CHUNK)
    assert skipped.status == RunStatus.COMPLETED, skipped.message
    assert skipped.outputs["items"] == partial
    assert skipped.outputs["report"]["count"] == 5


VIDEOS = """
name: videos
inputs:
  prompts: {type: array, required: true}
nodes:
  - id: each
    type: loop
    with: {items: "{{ inputs.prompts }}", concurrency: 1}
    nodes:
      - {id: video, type: kling.video, with: {prompt: "{{ item }}", download: false}}
outputs:
  tasks: "{{ nodes.each.output | map(attribute='video') | map(attribute='task_id') | list }}"
"""


def test_a_loop_resumed_by_the_next_engine_outputs_every_item(
    harness: Harness, emulator: EmulatorServer
) -> None:
    """An engine stopped after the loop's first item finished (its chunk ended) and while
    the second renders: the next engine finishes the loop, and its output still holds the
    first item's video, from the run log, without paying for it again."""
    emulator.configure(processing_seconds=500.0)  # 0.5 s of real time per video
    prompts = ["a red fox", "a paper boat", "sunflowers"]

    async def start_and_stop(engine: Engine) -> str:
        run = await engine.start_run(load_workflow_text(VIDEOS), {"prompts": prompts})
        while len(emulator.tasks()) < 2:  # one item at a time: the first one is done
            await asyncio.sleep(0.01)
        return run.run_id

    run_id = harness.session(start_and_stop, chunk_size=1)
    stopped = harness.runlog().get_run(run_id)
    assert stopped is not None
    assert stopped.status == RunStatus.RUNNING, stopped.message

    async def resume(engine: Engine) -> RunRecord:
        [done] = await engine.wait([run_id], timeout_seconds=60)
        return done

    done = harness.session(resume, chunk_size=1)
    assert done.status == RunStatus.COMPLETED, done.message
    by_prompt = {task["input"]["prompt"]: task["task_id"] for task in emulator.tasks()}
    assert done.outputs["tasks"] == [by_prompt[prompt] for prompt in prompts]
    assert emulator.stats()["creates"] == 3


TOKENS = """
name: tokens
nodes:
  - id: each
    type: loop
    with: {items: [1, 2]}
    nodes:
      - {id: login, type: set, with: {values: {user: "u{{ item }}", api_token: "t{{ item }}"}}}
outputs:
  users: "{{ nodes.each.output | map(attribute='login') | map(attribute='user') | list }}"
  seen: "{{ nodes.each.output | map(attribute='login') | map(attribute='api_token') | list }}"
"""


def test_the_loop_output_holds_what_the_run_log_recorded(harness: Harness) -> None:
    """Later nodes see the items' outputs as recorded: a secret-looking key's value masked,
    as on the run's page and after a resume."""
    run = harness.run(TOKENS)
    assert run.status == RunStatus.COMPLETED, run.message
    assert run.outputs == {"users": ["u1", "u2"], "seen": ["***", "***"]}


def test_a_paused_loop_resumed_by_an_engine_with_another_chunk_size(harness: Harness) -> None:
    """The chunks a loop was split into are part of its durable record: an engine splitting
    loops differently (another `chunk_size`, a later release) resumes the paused run with
    the recorded chunks, and the loop's output is whole."""
    rows: list[dict[str, Any]] = [{"n": n, "skip": False} for n in range(5)]
    del rows[2]["n"]

    async def start(engine: Engine) -> RunRecord:
        started = await engine.start_run(load_workflow_text(SKIPPABLE), {"rows": rows})
        [record] = await engine.wait([started.run_id], timeout_seconds=60)
        return record

    paused = harness.session(start, chunk_size=2)
    assert paused.status == RunStatus.PAUSED

    async def skip(engine: Engine) -> RunRecord:
        await engine.command(paused.run_id, Command(action=Action.SKIP))
        [record] = await engine.wait([paused.run_id], timeout_seconds=60)
        return record

    skipped = harness.session(skip, chunk_size=3)
    assert skipped.status == RunStatus.COMPLETED, skipped.message
    partial: list[Any] = expected([{"n": n, "skip": False} for n in range(5)])
    partial[2] = None
    assert skipped.outputs["items"] == partial
