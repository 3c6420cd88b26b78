"""Publishing workflows and driving runs through the JSON API, against the emulator."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from klingflow.cli import app
from klingflow.emulator import EmulatorServer, FaultRule

from .conftest import CLIP, Service


def test_published_workflow_runs_to_completion(service: Service, emulator: EmulatorServer) -> None:
    """A published workflow started over HTTP completes, and GET shows its node and task."""
    published = service.publish()
    assert published["name"] == "clip"
    assert service.http.post("/api/workflows", content=CLIP).status_code == 200  # same text
    run_id = service.start()
    detail = service.settle(run_id)
    assert detail["run"]["status"] == "completed", detail["run"]["message"]
    [node] = detail["nodes"]
    [submission] = detail["submissions"]
    assert node["task_id"] == submission["task_id"] == emulator.tasks()[0]["task_id"]
    listed = service.http.get("/api/runs", params={"workflow": "clip", "status": "completed"})
    assert [run["run_id"] for run in listed.json()["runs"]] == [run_id]
    workflow = service.http.get("/api/workflows/clip").json()
    assert workflow["latest"]["hash"] == published["hash"]
    assert len(workflow["versions"]) == 1


def test_new_version_leaves_old_runs_alone(service: Service) -> None:
    """Publishing a changed text adds a version; earlier runs keep the hash they ran."""
    first = service.publish()
    run_id = service.start()
    second = service.publish(CLIP.replace("name: clip", "name: clip\ndescription: v2"))
    assert second["hash"] != first["hash"]
    versions = service.http.get("/api/workflows/clip").json()["versions"]
    assert [v["hash"] for v in versions] == [second["hash"], first["hash"]]
    assert service.settle(run_id)["run"]["workflow_hash"] == first["hash"]
    [summary] = service.http.get("/api/workflows").json()["workflows"]
    assert summary["version_count"] == 2


def test_idempotency_key_maps_to_one_run(service: Service, emulator: EmulatorServer) -> None:
    """Two starts with one Idempotency-Key return the same run and pay once."""
    service.publish()
    headers = {"Idempotency-Key": "order-17"}
    first = service.http.post("/api/workflows/clip/runs", json={"prompt": "a"}, headers=headers)
    second = service.http.post("/api/workflows/clip/runs", json={"prompt": "a"}, headers=headers)
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["run_id"] == second.json()["run_id"]
    other_body = service.http.post("/api/workflows/clip/runs", json={}, headers=headers)
    assert other_body.status_code == 409  # issue #15.10: another body is a conflict
    assert first.json()["run_id"] in other_body.json()["message"]
    assert service.settle(first.json()["run_id"])["run"]["status"] == "completed"
    assert emulator.stats()["creates"] == 1


def test_failed_task_pauses_and_retry_completes(service: Service, emulator: EmulatorServer) -> None:
    """A failed task pauses the run; POST retry runs it to completion; a second retry is 409."""
    service.publish()
    emulator.add_fault(FaultRule(action="fail_task", times=1))
    run_id = service.start()
    paused = service.settle(run_id)["run"]
    assert paused["status"] == "paused"
    assert paused["paused_node"] == "clip"
    response = service.http.post(f"/api/runs/{run_id}/retry", json={})
    assert response.status_code == 200, response.text
    done = service.settle(run_id)
    assert done["run"]["status"] == "completed", done["run"]["message"]
    assert len(done["attempts"]) >= 2
    again = service.http.post(f"/api/runs/{run_id}/retry")
    assert again.status_code == 409
    assert again.json()["error"] == "RunStateError"


def test_bulk_retry_and_cancel_steer_paused_runs(
    service: Service, emulator: EmulatorServer
) -> None:
    """retry-paused retries every paused run of a workflow; cancel ends one for good."""
    service.publish()
    emulator.add_fault(FaultRule(action="fail_task", times=None))
    kept, dropped = service.start(), service.start()
    assert service.settle(kept)["run"]["status"] == "paused"
    assert service.settle(dropped)["run"]["status"] == "paused"
    cancelled = service.http.post(f"/api/runs/{dropped}/cancel")
    assert cancelled.json()["status"] == "cancelled"
    emulator.clear_faults()
    bulk = service.http.post("/api/workflows/clip/retry-paused").json()
    assert bulk == {"retried": [kept], "refused": {}}
    assert service.settle(kept)["run"]["status"] == "completed"


def test_tasks_and_spend_report_what_runs_paid(service: Service, emulator: EmulatorServer) -> None:
    """/api/tasks lists each submission with its task and cost; /api/spend sums runs."""
    service.publish()
    run_id = service.start()
    run = service.settle(run_id)["run"]
    [task] = service.http.get("/api/tasks").json()["tasks"]
    assert task["run_id"] == run_id
    assert task["node_path"] == "clip"
    assert task["task_id"] == emulator.tasks()[0]["task_id"]
    assert task["state"] == "completed"
    assert float(task["estimate_usd"]) > 0
    assert service.http.get("/api/tasks", params={"active": True}).json()["tasks"] == []
    spend = service.http.get("/api/spend").json()
    assert spend["spent_usd"] == spend["spent_today_usd"] == run["spent_usd"]
    assert spend["runs_today"] == 1
    assert float(run["spent_usd"]) > 0


def test_errors_render_as_json_with_fitting_status(service: Service) -> None:
    """Unknown runs are 404, invalid workflows and inputs 422, each as {error, message, details}."""
    missing = service.http.get("/api/runs/run-nope")
    assert missing.status_code == 404
    assert missing.json() == {
        "error": "RunNotFoundError",
        "message": "no run run-nope",
        "details": {},
    }
    invalid = service.http.post("/api/workflows", content="name: bad\nnodes: 5\n")
    assert invalid.status_code == 422
    assert invalid.json()["error"] == "WorkflowDefinitionError"
    assert invalid.json()["details"]["problems"]
    service.publish()
    no_prompt = service.http.post("/api/workflows/clip/runs", json={})
    assert no_prompt.status_code == 422
    assert no_prompt.json()["error"] == "WorkflowInputError"
    assert service.http.post("/api/workflows/ghost/runs", json={}).status_code == 404
    assert service.http.get("/api/runs").json() == {"runs": []}


def test_trigger_hook_starts_a_run_of_the_latest_version(service: Service) -> None:
    """POST /hooks/{workflow} starts a run with its body as trigger, once per key."""
    service.publish()
    headers = {"Idempotency-Key": "hook-1"}
    first = service.http.post("/hooks/clip", json={"prompt": "a fox"}, headers=headers)
    second = service.http.post("/hooks/clip", json={"prompt": "a fox"}, headers=headers)
    assert first.status_code == 201
    assert second.json() == {**first.json(), "created": False}
    detail = service.settle(first.json()["run_id"])
    assert detail["run"]["trigger"] == {"prompt": "a fox"}
    assert detail["run"]["status"] == "completed"


def test_skip_moves_a_paused_run_past_its_node(service: Service, emulator: EmulatorServer) -> None:
    """POST skip marks the paused node skipped and the run carries on to completion."""
    service.publish()
    emulator.add_fault(FaultRule(action="fail_task", times=1))
    run_id = service.start()
    assert service.settle(run_id)["run"]["status"] == "paused"
    assert service.http.post(f"/api/runs/{run_id}/skip").status_code == 200
    detail = service.finish(run_id)
    assert detail["run"]["status"] == "completed", detail["run"]["message"]
    assert [node["status"] for node in detail["nodes"]] == ["skipped"]


def test_estimate_prices_a_run_without_starting_it(
    service: Service, emulator: EmulatorServer
) -> None:
    """POST estimate says what a run would cost and starts nothing; the run then spends it."""
    service.publish()
    url = "/api/workflows/clip/estimate"
    estimate = service.http.post(url, json={"prompt": "a fox"})
    assert estimate.status_code == 200, estimate.text
    body = estimate.json()
    assert [(n["node_path"], n["estimate_usd"]) for n in body["nodes"]] == [
        ("clip", body["estimate_usd"])
    ]
    assert service.http.post(url, json={}).status_code == 422  # inputs checked, as a start
    assert service.http.post("/api/workflows/nope/estimate", json={}).status_code == 404
    assert emulator.stats()["creates"] == 0
    assert service.http.get("/api/runs").json()["runs"] == []
    ran = service.settle(service.start(payload={"prompt": "a fox"}))["run"]
    assert Decimal(ran["spent_usd"]) == Decimal(body["estimate_usd"]) == Decimal("0.5")


LOOP = """\
name: many
inputs:
  rows: {type: array, required: true}
nodes:
  - id: each
    type: loop
    with: {items: "{{ inputs.rows }}", concurrency: 20}
    nodes:
      - id: note
        type: set
        with: {values: {text: "{{ item.title }}"}}
"""


def test_a_run_s_detail_pages_its_loop_items_as_runs_show_does(
    service: Service, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GET /api/runs/{id} holds the loop's counts and one page of items (with their nodes);
    `offset`, `limit` and `status` page it, and `klingflow runs show --json` prints the same."""
    service.publish(LOOP)
    run_id = service.start("many", {"rows": [{"title": f"row {n:03d}"} for n in range(120)]})
    assert service.finish(run_id)["run"]["status"] == "completed"

    first = service.http.get(f"/api/runs/{run_id}").json()
    [loop] = first["loops"]
    assert (loop["total"], loop["counts"], loop["matching"]) == (120, {"succeeded": 120}, 120)
    assert (len(loop["items"]), loop["next_offset"]) == (50, 50)
    assert loop["items"][0] == {
        "index": 0, "label": "row 000", "status": "succeeded", "attempts": 1, "cost_usd": None
    }  # fmt: skip
    assert len(first["nodes"]) == 51
    assert len(first["attempts"]) == 51
    assert first["elided"] == []

    page = {"offset": 100, "limit": 30}
    last = service.http.get(f"/api/runs/{run_id}", params=page).json()
    assert [i["label"] for i in last["loops"][0]["items"]] == [f"row {n}" for n in range(100, 120)]
    assert last["loops"][0]["next_offset"] is None
    assert last["nodes"][-1]["node_path"] == "each[119].note"
    failed = service.http.get(f"/api/runs/{run_id}", params={"status": "failed"}).json()
    assert (failed["loops"][0]["items"], failed["loops"][0]["matching"]) == ([], 0)
    for wrong in ({"limit": 0}, {"limit": 1001}, {"offset": -1}, {"status": "done"}):
        assert service.http.get(f"/api/runs/{run_id}", params=wrong).status_code == 422

    monkeypatch.setenv("KLINGFLOW_DATABASE_URL", f"sqlite:///{tmp_path / 'klingflow.sqlite'}")
    shown = CliRunner().invoke(
        app, ["runs", "show", run_id, "--json", "--offset", "100", "--limit", "30"]
    )
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout) == last
