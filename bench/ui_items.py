"""What the web UI's run and items pages cost for a loop of many items (no browser, no engine).

    .venv/bin/python bench/ui_items.py [--items 10000] [--failed 50]

Fills a fresh SQLite run log with one run of a loop over N items (one `kling.video` body
node each with its submission, `--failed` of them failed, a paused run), then times, each
the median of 5, what one page load or one live refresh reads: the run page's top-level
nodes, item counts, the paused node's failed tasks (the Retry button's estimate) and the
run's submissions; one page of 50 items, the same filtered to failed, and one item's page.
Timing targets live here, never in tests.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

from klingflow.workflows import load_workflow_text
from klingflow.workflows.database import make_engine
from klingflow.workflows.failed_tasks import failed_task_intents
from klingflow.workflows.loop_items import item_counts, item_page, top_level
from klingflow.workflows.records import NodeStatus, RunStatus
from klingflow.workflows.runlog import RunLog

WORKFLOW = """\
name: many
inputs:
  rows: {type: array, required: true}
nodes:
  - id: each
    type: loop
    with: {items: "{{ inputs.rows }}"}
    nodes:
      - {id: video, type: kling.video, with: {prompt: "{{ item.prompt }}"}}
"""


def fill(runlog: RunLog, items: int, failed: int, home: Path) -> str:
    workflow = load_workflow_text(WORKFLOW)
    rows = [{"prompt": f"row {n}"} for n in range(items)]
    run, _ = runlog.create_run(
        workflow_name="many", workflow_hash=workflow.content_hash,
        workflow=workflow.model_dump(mode="json", by_alias=True), source_path=None,
        trigger={"rows": rows}, inputs={"rows": rows}, output_root=str(home), budget_usd=None,
    )  # fmt: skip
    run_id = run.run_id
    runlog.node_started(run_id, 0, "each", node_id="each", node_type="loop", item_index=None,
                        inputs={"items": rows, "concurrency": 4})  # fmt: skip
    for n in range(items):
        path = f"each[{n}].video"
        intent_id = runlog.reserve_and_record(
            run_id, 0, path, request={"prompt": f"row {n}"}, estimated_usd=Decimal("0.5")
        )
        assert intent_id is not None
        runlog.accept_intent(intent_id, run_id=run_id, epoch=0, node_path=path, task_id=f"task-{n}")
        runlog.node_started(run_id, 0, path, node_id="video", node_type="kling.video",
                            item_index=n, inputs={"prompt": f"row {n}"})  # fmt: skip
        if n < failed:
            error = {"type": "TaskFailedError", "message": "failed", "task_id": f"task-{n}"}
            runlog.node_finished(run_id, 0, path, status=NodeStatus.FAILED, error=error,
                                 attempt=(1, time.time()))  # fmt: skip
        else:
            runlog.node_finished(run_id, 0, path, status=NodeStatus.SUCCEEDED,
                                 output={"task_id": f"task-{n}"}, task_id=f"task-{n}",
                                 cost_usd=Decimal("0.5"), attempt=(1, time.time()))  # fmt: skip
    loop_error = {"type": "LoopItemsFailedError", "message": "some failed"}
    runlog.node_finished(run_id, 0, "each", status=NodeStatus.FAILED, error=loop_error)
    runlog.set_status(run_id, RunStatus.PAUSED, message="some failed", paused_node="each")
    return run_id


def timed(fn: Callable[[], Any]) -> float:
    times = []
    for _ in range(5):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--failed", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        runlog = RunLog(make_engine(f"sqlite:///{home}/runs.sqlite"))
        started = time.perf_counter()
        run_id = fill(runlog, args.items, args.failed, Path(home))
        print(f"filled {args.items} items in {time.perf_counter() - started:.1f} s")
        rows = [{"prompt": f"row {n}"} for n in range(args.items)]
        checks = {
            "run page: top-level nodes": lambda: top_level(runlog, run_id, 0),
            "run page: item counts": lambda: item_counts(
                runlog, run_id, 0, "each", total=args.items, body_length=1
            ),
            "run page: failed tasks to resubmit": lambda: failed_task_intents(
                runlog, run_id, 0, "each"
            ),
            "run page: first 101 submissions": lambda: runlog.intents(run_id, epoch=0, limit=101),
            "every submission (the API, the manifest)": lambda: runlog.intents(run_id, epoch=0),
            "items page 1 (50 rows)": lambda: item_page(
                runlog, run_id, 0, "each", items=rows, body_length=1
            ),
            "items page, failed only": lambda: item_page(
                runlog, run_id, 0, "each", items=rows, body_length=1, status="failed"
            ),
            "item page (one item)": lambda: item_page(
                runlog, run_id, 0, "each", items=rows, body_length=1, offset=4321, limit=1
            ),
        }
        for name, fn in checks.items():
            print(f"{name:40s} {timed(fn):8.1f} ms")


if __name__ == "__main__":
    main()
