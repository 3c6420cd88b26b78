"""A run's detail (`GET /api/runs/{id}`, `klingflow runs show --json`) is one page of its
loops' items, counted by status in the database, with big values left out: its size does
not grow with the batch."""

from __future__ import annotations

import json

import sqlalchemy as sa

from klingflow.workflows.database import make_engine
from klingflow.workflows.run_detail import MAX_VALUE_BYTES, ItemStatus, run_detail
from klingflow.workflows.runlog import RunLog

from .harness import Harness

BIG = """\
name: big
inputs:
  rows: {type: array, required: true}
nodes:
  - id: each
    type: loop
    with: {items: "{{ inputs.rows }}", concurrency: 20}
    nodes:
      - id: note
        type: set
        if: "{{ item.n % 3 != 0 }}"
        with: {values: {text: "{{ item.title }}"}}
"""
ROWS = [{"title": f"row {n:03d}", "n": n, "pad": "x" * 1000} for n in range(300)]


def test_a_big_loop_is_counted_paged_and_its_big_values_left_out(harness: Harness) -> None:
    """300 items of 1 KB: every third skipped by its `if`; the detail counts them all, shows
    50, names them from the stored list, and leaves the 300 KB lists out."""
    assert len(json.dumps(ROWS)) > MAX_VALUE_BYTES
    run = harness.run(BIG, {"rows": ROWS})
    assert run.status == "completed", run.message
    runlog = harness.runlog()

    detail = run_detail(runlog, run.run_id)
    assert detail is not None
    [loop] = detail.loops
    assert (loop.total, loop.counts) == (300, {"succeeded": 200, "skipped": 100})
    assert (loop.offset, loop.matching, loop.next_offset) == (0, 300, 50)
    assert [item.label for item in loop.items] == [f"row {n:03d}" for n in range(50)]
    assert [item.status for item in loop.items[:3]] == ["skipped", "succeeded", "succeeded"]
    assert [n.node_path for n in detail.nodes] == ["each"] + [f"each[{i}].note" for i in range(50)]
    assert sorted(detail.elided) == ["nodes[each].inputs", "run.inputs", "run.trigger"]
    assert detail.run.trigger is None
    assert detail.nodes[0].inputs is None
    assert len(detail.model_dump_json()) < 60_000  # the rows alone are 300 KB

    last = run_detail(runlog, run.run_id, offset=290, limit=50)
    assert last is not None
    assert [item.label for item in last.loops[0].items] == [f"row {n}" for n in range(290, 300)]
    assert last.loops[0].next_offset is None

    skipped = run_detail(runlog, run.run_id, status="skipped", offset=10, limit=3)
    assert skipped is not None
    assert [item.index for item in skipped.loops[0].items] == [30, 33, 36]
    assert (skipped.loops[0].matching, skipped.loops[0].next_offset) == (100, 13)
    queued = run_detail(runlog, run.run_id, status="queued")
    assert queued is not None
    assert queued.loops[0].items == []
    assert run_detail(runlog, "run-nope") is None


def test_a_page_of_a_big_stored_list_may_be_long(harness: Harness) -> None:
    """A page of 300 items of a list too big to load whole (up to 1,000 are allowed) names
    every item: SQLite's `json_extract` takes at most 127 arguments, so its values are read
    in parts (one call for the page failed with "too many arguments")."""
    run = harness.run(BIG, {"rows": ROWS})
    pages: list[tuple[ItemStatus | None, list[int]]] = [
        (None, list(range(300))),
        ("succeeded", [n for n in range(300) if n % 3]),
    ]
    for status, expected in pages:
        detail = run_detail(harness.runlog(), run.run_id, status=status, limit=300)
        assert detail is not None
        assert "nodes[each].inputs" in detail.elided
        assert [item.label for item in detail.loops[0].items] == [f"row {n:03d}" for n in expected]


def test_a_small_run_shows_every_value(harness: Harness) -> None:
    """Under the size limit nothing is left out: the trigger and the loop's items are whole."""
    rows = ROWS[:5]
    run = harness.run(BIG, {"rows": rows})
    detail = run_detail(harness.runlog(), run.run_id)
    assert detail is not None
    assert detail.elided == []
    assert detail.run.trigger == {"rows": rows}
    assert detail.nodes[0].inputs["items"] == rows
    assert detail.loops[0].counts == {"succeeded": 3, "skipped": 2}


def test_a_run_log_made_before_the_covering_indexes_gets_them_when_opened(
    harness: Harness,
) -> None:
    """An older klingflow's database has the indexes of before: opening the run log adds
    the ones that count a loop's items and a run's submissions from the index alone, and
    drops the one its successor replaces (both would be written on every update)."""
    run = harness.run(BIG, {"rows": ROWS[:3]})
    engine = make_engine(harness.settings().resolved_database_url())
    try:
        with engine.begin() as connection:
            connection.execute(sa.text("DROP INDEX ix_kf_node_runs_item_status"))
            connection.execute(sa.text("DROP INDEX ix_kf_intents_run_state"))
            connection.execute(
                sa.text(
                    "CREATE INDEX ix_kf_node_runs_item ON kf_node_runs (run_id, epoch, item_index)"
                )
            )
        assert RunLog(engine).get_run(run.run_id) is not None
        assert "ix_kf_intents_run_state" in indexes(engine, "kf_intents")
        found = indexes(engine, "kf_node_runs")
        assert "ix_kf_node_runs_item_status" in found
        assert "ix_kf_node_runs_item" not in found
        detail = run_detail(RunLog(engine), run.run_id)
        assert detail is not None
        assert sum(detail.loops[0].counts.values()) == 3
    finally:
        engine.dispose()


def indexes(engine: sa.Engine, table: str) -> set[str]:
    return {index["name"] or "" for index in sa.inspect(engine).get_indexes(table)}


FAILING = """\
name: failing
inputs:
  rows: {type: array, required: true}
nodes:
  - id: each
    type: loop
    with: {items: "{{ inputs.rows }}", concurrency: 20}
    nodes:
      - id: note
        type: set
        with: {values: {pad: "{{ item.pad }}", ratio: "{{ 1 / (item.n - 7) }}"}}
"""


def test_a_failed_loop_s_big_error_keeps_its_type_and_message(harness: Harness) -> None:
    """A loop whose item 7 fails pauses with every other item's output in its error (300 KB
    here): the detail keeps the error's type and message, not the outputs."""
    run = harness.run(FAILING, {"rows": ROWS})
    assert run.status == "paused", run.message
    detail = run_detail(harness.runlog(), run.run_id, status="failed")
    assert detail is not None
    assert "nodes[each].error" in detail.elided
    error = detail.nodes[0].error
    assert error is not None
    assert error["type"] == "LoopItemsFailedError"
    assert "1 of 300 items of loop 'each' failed" in error["message"]
    assert [item.index for item in detail.loops[0].items] == [7]
    [loop_attempt] = [a for a in detail.attempts if a.node_path == "each"]
    assert loop_attempt.error == error
    assert len(detail.model_dump_json()) < 60_000


ONE_NODE = """\
name: one-node
inputs:
  rows: {type: array, required: true}
nodes:
  - id: each
    type: loop
    with: {items: "{{ inputs.rows }}", concurrency: 4}
    nodes:
      - id: note
        type: set
        if: "{{ item.n % 4 != 0 }}"
        with: {values: {ratio: "{{ 1 / (item.n - 7) }}"}}
"""
TWO_NODES = (
    ONE_NODE.replace("one-node", "two-nodes")
    + """\
      - id: again
        type: set
        if: "{{ item.n % 4 != 0 }}"
        with: {values: {n: "{{ item.n }}"}}
"""
)


def test_a_loop_s_items_are_counted_alike_whatever_its_body_s_size(harness: Harness) -> None:
    """An item of a one-node body is counted from its node's row, one of a longer body from
    all of its nodes' rows: the same items get the same counts and pages either way (item 7
    failed, every fourth skipped by its `if`, the others succeeded)."""
    rows = [{"n": n} for n in range(12)]
    for source in (ONE_NODE, TWO_NODES):
        run = harness.run(source, {"rows": rows})
        assert run.status == "paused", run.message
        detail = run_detail(harness.runlog(), run.run_id)
        assert detail is not None
        [loop] = detail.loops
        assert loop.counts == {"failed": 1, "succeeded": 8, "skipped": 3}, source
        assert [item.status for item in loop.items[:8]] == [
            "skipped", "succeeded", "succeeded", "succeeded",
            "skipped", "succeeded", "succeeded", "failed",
        ]  # fmt: skip
        failed = run_detail(harness.runlog(), run.run_id, status="failed")
        assert failed is not None
        assert [item.index for item in failed.loops[0].items] == [7]
        assert failed.loops[0].matching == 1
