"""`klingflow run`, `klingflow runs ...` and `klingflow validate`, as a user types them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from klingflow.emulator import EmulatorServer, FaultRule

from .conftest import Invoke

EXAMPLES = Path(__file__).parents[2] / "examples"
BATCH = str(EXAMPLES / "batch-from-csv.yaml")
ROWS = f"rows=@{EXAMPLES / 'prompts.csv'}"


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KLINGFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("KLINGFLOW_DATABASE_URL", raising=False)
    monkeypatch.setenv("KLINGFLOW_POLL_SECONDS", "0.02")
    return tmp_path / "home"


def test_run_prints_the_videos_and_the_run_log_shows_it(klingflow: Invoke, home: Path) -> None:
    """A batch run prints one MP4 path per row; `runs list` and `runs show` tell the story."""
    result = klingflow("run", BATCH, "-i", ROWS)
    assert result.exit_code == 0, result.output
    paths = [Path(line) for line in result.stdout.splitlines()]
    assert len(paths) == 5
    assert all(path.is_file() and path.suffix == ".mp4" for path in paths)
    assert "completed · spent $2.50" in result.stderr

    [run] = json.loads(klingflow("runs", "list", "--json").stdout)
    assert run["status"] == "completed"
    shown = json.loads(klingflow("runs", "show", run["run_id"], "--json").stdout)
    assert len([n for n in shown["nodes"] if n["node_type"] == "kling.video"]) == 5
    assert {s["state"] for s in shown["submissions"]} == {"completed"}
    assert "each[4].video" in klingflow("runs", "show", run["run_id"]).stdout


def test_paused_run_exits_16_and_retry_finishes_it(
    klingflow: Invoke, emulator: EmulatorServer
) -> None:
    """A failed generation pauses the run with a hint; `runs retry` completes it."""
    emulator.add_fault(FaultRule(action="fail_task"))
    result = klingflow("run", BATCH, "-i", ROWS)
    assert result.exit_code == 16
    assert "paused on each" in result.stderr
    # The summary line after the batch view's change lines starts with the run id.
    [run_id] = re.findall(r"^(run-\w+) paused", result.stderr, re.MULTILINE)
    assert f"klingflow runs retry {run_id}" in result.stderr
    shown = klingflow("runs", "show", run_id)
    assert "TaskFailedError [code 10000]" in shown.stdout

    retried = klingflow("runs", "retry", run_id)
    assert retried.exit_code == 0, retried.output
    assert len(retried.stdout.splitlines()) == 5
    assert emulator.stats()["creates"] == 6


def test_retrying_a_run_that_is_not_paused_is_a_clear_error(klingflow: Invoke) -> None:
    """Only paused runs can be retried; anything else is one line and exit code 18."""
    klingflow("run", BATCH, "-i", ROWS)
    [run] = json.loads(klingflow("runs", "list", "--json").stdout)
    result = klingflow("runs", "retry", run["run_id"])
    assert result.exit_code == 18
    assert "completed, not paused" in result.stderr


def test_rows_start_one_run_per_row(klingflow: Invoke, tmp_path: Path) -> None:
    """--rows is the table-row trigger: each CSV row is the payload of its own run."""
    workflow = tmp_path / "one.yaml"
    workflow.write_text(
        "name: one\ninputs: {prompt: {type: string, required: true}}\nnodes:\n"
        "  - {id: clip, type: kling.video, with: {prompt: '{{ inputs.prompt }}'}}\n"
    )
    result = klingflow("run", str(workflow), "--rows", str(EXAMPLES / "prompts.csv"), "--json")
    assert result.exit_code == 0, result.output
    runs = json.loads(result.stdout)
    assert len(runs) == 5
    assert {r["status"] for r in runs} == {"completed"}


def test_detached_run_is_queued_and_the_next_engine_runs_it(
    klingflow: Invoke, emulator: EmulatorServer
) -> None:
    """--detach returns at once; the run waits durably until an engine picks it up."""
    detached = klingflow("run", BATCH, "-i", ROWS, "--detach")
    assert detached.exit_code == 0
    run_id = detached.stdout.strip()
    assert json.loads(klingflow("runs", "list", "--json").stdout)[0]["status"] == "queued"
    assert emulator.stats()["creates"] == 0

    klingflow("run", BATCH, "-i", ROWS)  # any engine drains the queue
    statuses = {
        r["run_id"]: r["status"] for r in json.loads(klingflow("runs", "list", "--json").stdout)
    }
    assert statuses[run_id] == "completed"  # finished, not cut off when the command ended
    assert emulator.stats()["creates"] == 10  # both batches of 5, each video paid once


def test_idempotency_key_makes_a_second_run_command_the_same_run(
    klingflow: Invoke, emulator: EmulatorServer
) -> None:
    """Re-running a command with its key (after a crash, say) never starts a second batch."""
    first = klingflow("run", BATCH, "-i", ROWS, "--idempotency-key", "k1", "--json")
    second = klingflow("run", BATCH, "-i", ROWS, "--idempotency-key", "k1", "--json")
    assert json.loads(first.stdout)[0]["run_id"] == json.loads(second.stdout)[0]["run_id"]
    assert emulator.stats()["creates"] == 5


def test_cancel_and_skip_steer_paused_runs(
    klingflow: Invoke, emulator: EmulatorServer, tmp_path: Path
) -> None:
    """`runs skip` finishes a paused run without the failed node; `runs cancel` ends one."""
    workflow = tmp_path / "single.yaml"
    workflow.write_text(
        "name: single\nnodes:\n  - {id: clip, type: kling.video, with: {prompt: x}}\n"
    )
    emulator.add_fault(FaultRule(action="fail_task", times=2))
    first = klingflow("run", str(workflow))
    second = klingflow("run", str(workflow))
    assert first.exit_code == second.exit_code == 16
    runs = json.loads(klingflow("runs", "list", "--json").stdout)
    older, newer = runs[1]["run_id"], runs[0]["run_id"]
    assert klingflow("runs", "skip", older).exit_code == 0
    cancelled = klingflow("runs", "cancel", newer, "--json")
    assert cancelled.exit_code == 0
    statuses = {
        r["run_id"]: r["status"] for r in json.loads(klingflow("runs", "list", "--json").stdout)
    }
    assert statuses == {older: "completed", newer: "cancelled"}


def test_validate_reports_problems_with_exit_code_15(klingflow: Invoke, tmp_path: Path) -> None:
    """An invalid workflow file is rejected before anything runs."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nnodes:\n  - {id: clip, type: kling.video, with: {duration: 99}}\n")
    result = klingflow("validate", str(bad))
    assert result.exit_code == 15
    assert "bad.yaml:3 (node 'clip')" in result.stderr
    assert klingflow("validate", BATCH).exit_code == 0


def test_bulk_retry_resumes_every_paused_run_of_a_workflow(
    klingflow: Invoke, emulator: EmulatorServer, tmp_path: Path
) -> None:
    """`runs retry --all-paused --workflow NAME` resumes each paused run of that workflow."""
    workflow = tmp_path / "single.yaml"
    workflow.write_text(
        "name: single\nnodes:\n  - {id: clip, type: kling.video, with: {prompt: x}}\n"
    )
    emulator.add_fault(FaultRule(action="fail_task", times=2))
    assert klingflow("run", str(workflow)).exit_code == 16
    assert klingflow("run", str(workflow)).exit_code == 16
    result = klingflow("runs", "retry", "--all-paused", "--workflow", "single", "--json")
    assert result.exit_code == 0, result.output
    assert [r["status"] for r in json.loads(result.stdout)] == ["completed", "completed"]
    assert emulator.stats()["creates"] == 4


def test_an_unknown_run_id_is_exit_code_17(klingflow: Invoke) -> None:
    """show, retry, skip and cancel name the missing run in one line and exit 17."""
    for command in ("show", "retry", "skip", "cancel"):
        result = klingflow("runs", command, "run-missing")
        assert result.exit_code == 17, (command, result.output)
        assert "no run run-missing" in result.stderr


def test_dry_run_prints_the_cost_and_starts_nothing(
    klingflow: Invoke, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`run --dry-run` prices every paid submission, needs no key, and sends and stores
    nothing: no task at PiAPI, no run in the run log."""
    monkeypatch.delenv("PIAPI_API_KEY")
    result = klingflow("run", BATCH, "-i", ROWS, "--dry-run")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [f"each[{i}].video  $0.50" for i in range(5)]
    assert "estimated $2.50 · 5 paid submissions" in result.stderr
    rows = klingflow("run", str(EXAMPLES / "seed-action.yaml"), "--rows",
                     str(EXAMPLES / "prompts.csv"), "--dry-run", "--json")  # fmt: skip
    assert [e["estimate_usd"] for e in json.loads(rows.stdout)] == ["0.26"] * 5
    assert emulator.stats()["creates"] == 0
    assert json.loads(klingflow("runs", "list", "--json").stdout) == []


def test_runs_show_counts_a_loop_s_items_and_pages_them(klingflow: Invoke) -> None:
    """`runs show` sums the loop up (counts, spend, what is shown); `--items` lists a page,
    `--page`/`--limit` choose it, `--status` filters; --json has the same pages."""
    assert klingflow("run", BATCH, "-i", ROWS).exit_code == 0
    [run] = json.loads(klingflow("runs", "list", "--json").stdout)
    summary = klingflow("runs", "show", run["run_id"]).stdout
    assert "each: 5 items · 5 succeeded · spent $2.50 · shown: items 1-5 of 5" in summary

    page = klingflow("runs", "show", run["run_id"], "--items", "--limit", "2", "--page", "2")
    assert page.exit_code == 0, page.output
    rows = [line.split("\t") for line in page.stdout.splitlines() if line[:1].isdigit()]
    assert [row[0] for row in rows] == ["3", "4"]
    assert all(row[2:] == ["succeeded", "1", "$0.50"] for row in rows)
    assert "shown: items 3-4 of 5 · next: --offset 4" in page.stdout

    shown = json.loads(
        klingflow("runs", "show", run["run_id"], "--json", "--offset", "4", "--limit", "2").stdout
    )
    [loop] = shown["loops"]
    assert (loop["total"], loop["counts"], loop["spent_usd"]) == (5, {"succeeded": 5}, "2.50")
    assert [item["index"] for item in loop["items"]] == [4]
    assert loop["next_offset"] is None
    assert [n["node_path"] for n in shown["nodes"]] == ["each", "each[4].video"]
    assert [s["node_path"] for s in shown["submissions"]] == ["each[4].video"]
    assert shown["submission_counts"] == {"completed": 5}

    none = klingflow("runs", "show", run["run_id"], "--items", "--status", "failed")
    assert "each: 5 items · 5 succeeded · spent $2.50 · no failed items from 1" in none.stdout
    both = klingflow("runs", "show", run["run_id"], "--offset", "1", "--page", "2")
    assert both.exit_code == 2
