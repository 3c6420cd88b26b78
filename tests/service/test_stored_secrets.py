"""No secret is stored unmasked, DBOS's own tables included, and none comes back from the
API (issue #15, point 2)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from klingflow.emulator import EmulatorServer

from .conftest import API_TOKEN, WEBHOOK_SECRET, StartService

NOTED = """\
name: noted
inputs:
  prompt: {type: string, required: true}
  note: {type: string}
nodes:
  - id: clip
    type: kling.video
    with: {prompt: "{{ inputs.prompt }}", download: false}
  - id: echo
    type: set
    with: {values: {note: "{{ inputs.note }}"}}
outputs:
  note: "{{ nodes.echo.output.note }}"
  task: "{{ nodes.clip.output.task_id }}"
"""


def every_row(database: Path) -> str:
    with sqlite3.connect(database) as db:
        tables = [r[0] for r in db.execute("select name from sqlite_master where type='table'")]
        return "\n".join(
            repr(row)
            for table in tables
            for row in db.execute(f'select * from "{table}"')  # noqa: S608 - our own names
        )


def test_webhook_secret_and_keys_are_masked_in_every_table_and_response(
    start_service: StartService, emulator: EmulatorServer, tmp_path: Path, api_key: str
) -> None:
    """A run with webhooks on and the PiAPI key typed into an input: no table, no API
    answer holds the key, the webhook secret or the API token."""
    service = start_service(api_token=API_TOKEN)
    service.publish(NOTED)
    run_id = service.start("noted", {"prompt": "a fox", "note": f"my key is {api_key}"})
    detail = service.finish(run_id)
    assert detail["run"]["status"] == "completed", detail["run"]["message"]
    assert detail["run"]["outputs"]["task"] == emulator.tasks()[0]["task_id"]
    answers = [
        service.http.get(f"/api/runs/{run_id}").text,
        service.http.get("/api/runs").text,
        service.http.get("/api/tasks").text,
    ]
    stored = every_row(tmp_path / "klingflow.sqlite")
    assert "klingflow.step" in stored  # DBOS's own step rows are in the dump
    for secret in (api_key, WEBHOOK_SECRET, API_TOKEN):
        assert secret not in stored, f"a secret is stored unmasked ({secret[:6]}...)"
        for answer in answers:
            assert secret not in answer
    assert "my key is ***" in answers[0]
