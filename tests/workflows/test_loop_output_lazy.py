"""A loop's output is read from its items' nodes when a template uses it: the loop node
records a small reference whatever the item count, templates over the output give the
values the list gave (past the pages it is read in), a later loop's chunks get it by
reference, and a run recorded before (its loop node holding the list) reads as it did."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from klingflow.emulator import EmulatorConfig, EmulatorServer, FaultRule
from klingflow.workflows.loop_items import output_exceeds
from klingflow.workflows.loop_output import PAGE_ITEMS, LoopOutput, is_reference, live_output
from klingflow.workflows.records import RunStatus
from klingflow.workflows.run_detail import MAX_VALUE_BYTES, run_detail
from klingflow.workflows.schema import node_runs
from klingflow.workflows.steering import Action, Command

from .harness import Harness

COUNT = 2 * PAGE_ITEMS + 23
"""Items across three pages of the lazy output."""
PAD = "p" * 100
AT_PAGE = f"nodes.each.output[{PAGE_ITEMS}]"
HUNDREDS = "{% if o.v.n % 100 == 0 %}{{ o.v.n }},{% endif %}"

MANY = f"""
name: many
inputs:
  rows: {{type: array, required: true}}
nodes:
  - id: each
    type: loop
    with: {{items: "{{{{ inputs.rows }}}}", concurrency: 20}}
    nodes:
      - {{id: v, type: set, with: {{values: {{n: "{{{{ item }}}}", pad: {PAD}}}}}}}
  - id: again
    type: loop
    with: {{items: "{{{{ nodes.each.output }}}}", concurrency: 20}}
    nodes:
      - id: w
        type: set
        with:
          values:
            same: "{{{{ item == nodes.each.output[loop.index] }}}}"
            n: "{{{{ nodes.each.output[loop.index].v.n }}}}"
  - id: report
    type: set
    with:
      values:
        count: "{{{{ nodes.each.output | length }}}}"
        first: "{{{{ nodes.each.output[0] }}}}"
        last: "{{{{ nodes.each.output[-1] }}}}"
        edges: "{{{{ nodes.each.output[{PAGE_ITEMS - 1}].v.n }}}}-{{{{ {AT_PAGE}.v.n }}}}"
        firstf: "{{{{ nodes.each.output | first }}}}"
        lastf: "{{{{ nodes.each.output | last }}}}"
        reversed: "{{{{ (nodes.each.output | reverse | first).v.n }}}}"
        ns: "{{{{ nodes.each.output | map(attribute='v') | map(attribute='n') | list }}}}"
        total: "{{{{ nodes.each.output | map(attribute='v.n') | sum }}}}"
        evens: "{{{{ nodes.each.output | selectattr('v.n', 'even') | list | length }}}}"
        window: "{{{{ nodes.each.output[{PAGE_ITEMS - 2}:{PAGE_ITEMS + 2}] }}}}"
        stepped: "{{{{ nodes.each.output[::{PAGE_ITEMS}] | map(attribute='v.n') | list }}}}"
        batches: "{{{{ nodes.each.output | batch({PAGE_ITEMS}) | list | length }}}}"
        hundreds: "{{% for o in nodes.each.output %}}{HUNDREDS}{{% endfor %}}"
        member: "{{{{ nodes.each.output[5] in nodes.each.output }}}}"
        whole: "{{{{ nodes.each.output }}}}"
        json: "{{{{ nodes.each.output | tojson }}}}"
        text: "all: {{{{ nodes.each.output }}}}"
outputs:
  count: "{{{{ nodes.each.output | length }}}}"
  again: "{{{{ nodes.again.output | map(attribute='w') | list }}}}"
  report: "{{{{ nodes.report.output }}}}"
"""


def entries(count: int) -> list[dict[str, Any]]:
    return [{"v": {"n": n, "pad": PAD}} for n in range(count)]


@pytest.fixture(scope="session")
def many(
    tmp_path_factory: pytest.TempPathFactory,
    piapi_emulator_server: EmulatorServer,
    piapi_emulator_config: EmulatorConfig,
) -> Iterator[tuple[Harness, str]]:
    """One run of `MANY` (two loops of `COUNT` items, chunks of 50) on SQLite, shared by the
    tests that read it (it runs no paid node). Made once an xdist worker: a module's fixture
    was made again each time the worker's order came back to this module (it holds no
    engine between tests, only the database file)."""
    key = piapi_emulator_config.api_keys[0]
    harness = Harness(piapi_emulator_server, tmp_path_factory.mktemp("many"), key)
    run = harness.run(MANY, {"rows": list(range(COUNT))})
    assert run.status == RunStatus.COMPLETED, run.message
    yield harness, run.run_id
    harness.close()


def test_templates_over_a_lazy_output_see_the_list_it_stands_for(
    many: tuple[Harness, str],
) -> None:
    """Every way a template reads the output (length, indexes past a page's end, slices,
    filters, `{% for %}`, `tojson`, the whole value, text) gives what the list gives."""
    harness, run_id = many
    run = harness.runlog().get_run(run_id)
    assert run is not None
    whole = entries(COUNT)
    report = run.outputs["report"]
    assert report["count"] == run.outputs["count"] == COUNT
    assert (report["first"], report["last"]) == (whole[0], whole[-1])
    assert report["edges"] == f"{PAGE_ITEMS - 1}-{PAGE_ITEMS}"
    assert (report["firstf"], report["lastf"], report["reversed"]) == (
        whole[0],
        whole[-1],
        COUNT - 1,
    )
    assert report["ns"] == list(range(COUNT))
    assert report["total"] == sum(range(COUNT))
    assert report["evens"] == len(range(0, COUNT, 2))
    assert report["window"] == whole[PAGE_ITEMS - 2 : PAGE_ITEMS + 2]
    assert report["stepped"] == list(range(0, COUNT, PAGE_ITEMS))
    assert report["batches"] == 3
    assert report["hundreds"] == "".join(f"{n}," for n in range(0, COUNT, 100))
    assert report["member"] is True
    assert report["whole"] == whole
    assert json.loads(report["json"]) == whole
    assert report["text"] == f"all: {whole}"
    # A later loop over it: its items are the list, and its chunks read the first by index.
    assert run.outputs["again"] == [{"same": True, "n": n} for n in range(COUNT)]


def test_the_loop_node_records_a_small_reference_and_its_chunks_get_it_so(
    many: tuple[Harness, str],
) -> None:
    """The loop nodes' recorded outputs are a few bytes whatever the item count, and the
    second loop's chunks (whose arguments DBOS stores) carry the first loop's output by
    reference, not its items; the run's detail shows the lists."""
    harness, run_id = many
    runlog = harness.runlog()
    query = sa.select(node_runs.c.node_id, node_runs.c.output).where(
        node_runs.c.run_id == run_id, node_runs.c.node_id.in_(["each", "again"])
    )
    stored = dict(runlog.read(lambda c: list(c.execute(query))))
    assert all(is_reference(value) for value in stored.values())
    assert max(len(json.dumps(value)) for value in stored.values()) < 200
    whole = json.dumps(entries(COUNT))
    assert len(whole) > 50_000
    chunk_inputs = sa.text(  # DBOS's own table of workflow arguments
        "SELECT i.inputs FROM workflow_input i JOIN workflow_status s"
        " ON s.workflow_uuid = i.workflow_uuid WHERE s.name = 'klingflow.loop_chunk'"
    )
    inputs = runlog.read(lambda c: [row[0] for row in c.execute(chunk_inputs)])
    assert len(inputs) == 2 * -(-COUNT // 50)
    assert max(len(text) for text in inputs) < 20_000  # 50 items each, not every output
    detail = run_detail(runlog, run_id)
    assert detail is not None
    shown = {node.node_id: node.output for node in detail.nodes if node.item_index is None}
    assert shown["each"] == entries(COUNT)
    assert shown["again"] == [{"w": {"same": True, "n": n}} for n in range(COUNT)]


def test_a_loop_output_reads_by_page(many: tuple[Harness, str]) -> None:
    """`LoopOutput` as Python sees it: the list's length, indexes (negative too), slices,
    equality and errors, read a page at a time."""
    harness, run_id = many
    runlog = harness.runlog()
    [loop] = [n for n in runlog.nodes(run_id) if n.node_path == "each"]
    output = live_output(runlog, run_id, 0, loop.output)
    assert isinstance(output, LoopOutput)
    whole = entries(COUNT)
    assert len(output) == COUNT
    assert output == whole
    assert output != whole[:-1]
    assert list(output) == whole
    assert [output[i] for i in (0, PAGE_ITEMS - 1, PAGE_ITEMS, COUNT - 1, -1, -COUNT)] == [
        whole[i] for i in (0, PAGE_ITEMS - 1, PAGE_ITEMS, COUNT - 1, -1, -COUNT)
    ]
    assert output[PAGE_ITEMS - 3 : PAGE_ITEMS + 3] == whole[PAGE_ITEMS - 3 : PAGE_ITEMS + 3]
    assert output[::-150] == whole[::-150]
    assert output[COUNT:] == []
    with pytest.raises(IndexError):
        output[COUNT]
    with pytest.raises(TypeError):
        output["v"]  # type: ignore[call-overload]
    assert repr(output) == repr(whole)
    assert output + [1] == [*whole, 1]  # noqa: RUF005 - its `+`, as a list's


OLD = """
name: old
nodes:
  - id: each
    type: loop
    with: {items: [1, 2, 3]}
    nodes:
      - {id: v, type: set, with: {values: {n: "{{ item }}"}}}
  - id: clip
    type: kling.video
    with:
      prompt: "{{ nodes.each.output | length }} takes, first {{ nodes.each.output[0].v.n }}"
      download: false
outputs:
  ns: "{{ nodes.each.output | map(attribute='v.n') | list }}"
"""


def test_a_run_whose_loop_node_holds_its_list_reads_it_as_before(
    harness: Harness, emulator: EmulatorServer
) -> None:
    """A run recorded before the change (its loop node holding the list itself) is read as
    it was: retried after a pause, later templates read that list; the detail shows it."""
    emulator.add_fault(FaultRule(action="fail_task", times=1))
    paused = harness.run(OLD)
    assert paused.status == RunStatus.PAUSED
    assert paused.paused_node == "clip"
    runlog = harness.runlog()
    old_list = [{"v": {"n": n}} for n in (101, 102, 103)]  # not what a new read would give
    row = sa.and_(node_runs.c.run_id == paused.run_id, node_runs.c.node_path == "each")
    runlog.write(lambda c: c.execute(node_runs.update().where(row).values(output=old_list)))
    detail = run_detail(runlog, paused.run_id)
    assert detail is not None
    assert detail.nodes[0].output == old_list

    done = harness.steer(paused.run_id, Command(action=Action.RETRY))
    assert done.status == RunStatus.COMPLETED, done.message
    assert done.outputs == {"ns": [101, 102, 103]}
    prompts = [task["input"]["prompt"] for task in emulator.tasks()]
    assert prompts[-1] == "3 takes, first 101"


def test_a_loop_output_too_big_to_show_is_left_out_of_the_detail(harness: Harness) -> None:
    """Over the detail's size limit, the loop's output is left out and named, as a stored
    list that big was; its items' outputs are on the items' pages."""
    rows = ["x" * 1000] * 300
    text = (
        "name: big\ninputs:\n  rows: {type: array, required: true}\nnodes:\n"
        "  - id: each\n    type: loop\n    with: {items: '{{ inputs.rows }}', concurrency: 20}\n"
        "    nodes:\n      - {id: v, type: set, with: {values: {text: '{{ item }}'}}}\n"
    )
    assert len(json.dumps(rows)) > MAX_VALUE_BYTES
    run = harness.run(text, {"rows": rows})
    assert run.status == RunStatus.COMPLETED, run.message
    detail = run_detail(harness.runlog(), run.run_id)
    assert detail is not None
    assert "nodes[each].output" in detail.elided
    assert detail.nodes[0].output is None
    assert detail.nodes[1].output == {"text": "x" * 1000}


def test_a_loop_too_long_to_show_is_left_out_without_summing_its_items(
    many: tuple[Harness, str],
) -> None:
    """A loop whose items alone are over the detail's limit (6 bytes of JSON each at least:
    100,000 items) is left out without summing its items' outputs in the database, so `runs
    show` on it reads no more than on a small one; a shorter loop is measured there."""
    harness, run_id = many
    runlog = harness.runlog()
    statements: list[str] = []

    @event.listens_for(runlog.engine, "before_cursor_execute")
    def seen(_connection: sa.Connection, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    over = MAX_VALUE_BYTES // 6 + 1
    assert output_exceeds(runlog, run_id, 0, "each", length=over, max_bytes=MAX_VALUE_BYTES)
    assert statements == []
    assert not output_exceeds(runlog, run_id, 0, "each", length=COUNT, max_bytes=MAX_VALUE_BYTES)
    assert len(statements) == 1
