"""Inputs marked `secret: true` reach the node that uses them and nothing else: no API
answer, CLI output, page, run-log row or DBOS row holds the value (issue #15, point 2)."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from klingflow.cli import app as cli_app
from klingflow.emulator import EmulatorServer
from klingflow.workflows.database import make_engine
from klingflow.workflows.runlog import RunLog
from klingflow.workflows.schema import run_secrets
from klingflow.workflows.secret_inputs import SecretInputsUnreadable, open_run
from klingflow.workflows.spec import Workflow

from ..databases import new_postgres_database
from ..workflows.recorder import Recorder, recorder
from .conftest import StartService

TOKEN = "s3cr3t-token-7f2b9c41"  # a test value


def workflow(url: str) -> str:
    """A secret input sent as a header (whose name does not look secret) and echoed."""
    return f"""\
name: secret-call
inputs:
  api_token: {{type: string, secret: true, required: true}}
  note: {{type: string}}
nodes:
  - id: call
    type: http.request
    with:
      url: "{url}/hook"
      method: POST
      allow_private_network: true
      headers: {{X-Pass: "{{{{ inputs.api_token }}}}"}}
      json: {{note: "{{{{ inputs.note }}}} with {{{{ inputs.api_token }}}}"}}
  - id: echo
    type: set
    with: {{values: {{said: "t={{{{ inputs.api_token }}}} via {{{{ trigger.api_token }}}}"}}}}
outputs:
  said: "{{{{ nodes.echo.output.said }}}}"
"""


def sqlite_rows(database: Path) -> str:
    with sqlite3.connect(database) as db:
        tables = [r[0] for r in db.execute("select name from sqlite_master where type='table'")]
        return "\n".join(
            repr(row)
            for table in tables
            for row in db.execute(f'select * from "{table}"')  # noqa: S608 - our own names
        )


def postgres_rows(url: str) -> str:
    """Every row of every table in every schema of the database (DBOS's `dbos` schema too)."""
    with psycopg.connect(url) as db:
        tables = db.execute(
            "select table_schema, table_name from information_schema.tables "
            "where table_schema not in ('pg_catalog', 'information_schema')"
        ).fetchall()
        assert any(schema == "dbos" for schema, _ in tables)
        return "\n".join(
            repr(row)
            for schema, table in tables
            for row in db.execute(f'select * from "{schema}"."{table}"')  # noqa: S608
        )


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh database on KLINGFLOW_TEST_POSTGRES_URL's server (skipped without one)."""
    yield from new_postgres_database()


def received(local: Recorder) -> list[str]:
    return [r.headers.get("x-pass", "") for r in local.requests]


@pytest.fixture(params=["sqlite", "postgres"])
def overrides(request: pytest.FixtureRequest) -> dict[str, str]:
    """The service's database: its SQLite file, or a fresh Postgres database (set up before
    the service, so dropped after it stops)."""
    if request.param == "postgres":
        return {"database_url": request.getfixturevalue("postgres_url")}
    return {}


def test_a_secret_input_reaches_its_node_and_is_masked_everywhere_else(
    overrides: dict[str, str], start_service: StartService, tmp_path: Path
) -> None:
    """Through the API: the header carries the value; every answer, page and table has `***`."""
    service = start_service(**overrides)
    with recorder() as local:
        service.publish(workflow(local.url))
        run_id = service.start("secret-call", {"api_token": TOKEN, "note": "hello"})
        detail = service.finish(run_id)
        assert received(local) == [TOKEN]
    assert detail["run"]["status"] == "completed", detail["run"]["message"]
    assert detail["run"]["outputs"] == {"said": "t=*** via ***"}
    assert detail["run"]["inputs"]["api_token"] == "***"
    answers = [
        json.dumps(detail),
        service.http.get("/api/runs").text,
        service.http.get(f"/runs/{run_id}").text,
        service.http.get("/runs").text,
    ]
    if "database_url" in overrides:
        stored = postgres_rows(overrides["database_url"])
    else:
        stored = sqlite_rows(tmp_path / "klingflow.sqlite")
    assert "klingflow.step" in stored  # DBOS's step rows are in the dump
    assert "hello with ***" in stored  # the node's stored inputs, masked
    assert TOKEN not in stored
    for answer in answers:
        assert TOKEN not in answer
    assert "***" in answers[2]


def test_a_secret_input_through_the_cli_is_masked_in_every_output_and_row(
    emulator: EmulatorServer, api_key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`run --json`, `runs list --json`, `runs show` print `***`; the node got the value."""
    monkeypatch.setenv("PIAPI_BASE_URL", emulator.url)
    monkeypatch.setenv("PIAPI_API_KEY", api_key)
    monkeypatch.setenv("KLINGFLOW_HOME", str(tmp_path / "home"))
    runner = CliRunner()
    with recorder() as local:
        path = tmp_path / "secret.yaml"
        path.write_text(workflow(local.url))
        ran = runner.invoke(
            cli_app, ["run", str(path), "-i", f"api_token={TOKEN}", "-i", "note=hi", "--json"]
        )
        assert ran.exit_code == 0, ran.output
        assert received(local) == [TOKEN]
    (summary,) = json.loads(ran.stdout)
    run_id = summary["run_id"]
    outputs = [
        ran.output,
        runner.invoke(cli_app, ["runs", "list", "--json"]).output,
        runner.invoke(cli_app, ["runs", "show", run_id]).output,
        runner.invoke(cli_app, ["runs", "show", run_id, "--json"]).output,
    ]
    for output in outputs:
        assert TOKEN not in output
    assert "t=*** via ***" in outputs[0]
    stored = sqlite_rows(next((tmp_path / "home").glob("*.sqlite")))
    assert "klingflow.step" in stored
    assert TOKEN not in stored


def test_a_run_whose_secret_cannot_be_opened_stops_instead_of_sending_the_mask(
    start_service: StartService, tmp_path: Path, api_key: str
) -> None:
    """The sealed values are kept under the PiAPI key: a different key cannot open them,
    and the run says so instead of sending `***` as the token."""
    service = start_service()
    with recorder() as local:
        service.publish(workflow(local.url))
        run_id = service.start("secret-call", {"api_token": TOKEN})
        service.finish(run_id)
    log = RunLog(make_engine(f"sqlite:///{tmp_path / 'klingflow.sqlite'}"))
    run = log.get_run(run_id)
    assert run is not None
    spec = Workflow.model_validate(run.workflow)
    assert open_run(log, run, spec, SecretStr(api_key)).inputs["api_token"] == TOKEN
    with pytest.raises(SecretInputsUnreadable, match="another PiAPI key"):
        open_run(log, run, spec, SecretStr("some-other-key-123456"))
    log.write(lambda tx: tx.execute(run_secrets.delete()))
    with pytest.raises(SecretInputsUnreadable, match="were not kept"):
        open_run(log, run, spec, SecretStr(api_key))
    log.engine.dispose()


def test_the_start_form_takes_a_secret_unseen_and_never_shows_it_back(
    start_service: StartService,
) -> None:
    """The web form draws a secret input as a password field, and a refused form (another
    field wrong) asks for it again instead of putting it back into the page."""
    service = start_service()
    service.publish(
        workflow("http://127.0.0.1:9").replace("note: {type: string}", "note: {type: integer}")
    )
    page = service.http.get("/workflows/secret-call")
    assert re.search(r'name="api_token"[^>]*\s+type="password"', page.text)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token is not None
    form = {"csrf_token": token.group(1), "api_token": TOKEN, "note": "not a number"}
    refused = service.http.post("/workflows/secret-call/runs", data=form)
    assert refused.status_code == 422
    assert "note" in refused.text
    assert TOKEN not in refused.text
    assert service.http.get("/api/runs").json()["runs"] == []


LOOPED = """\
name: secret-loop
inputs:
  api_token: {type: string, secret: true, required: true}
nodes:
  - id: each
    type: loop
    with: {items: [1, 2]}
    nodes:
      - id: call
        type: http.request
        with:
          url: "URL/item"
          allow_private_network: true
          headers: {X-Pass: "{{ inputs.api_token }}"}
outputs:
  calls: "{{ nodes.each.output | length }}"
"""


def test_a_loop_body_reads_the_secret_and_stores_only_the_mask(
    start_service: StartService, tmp_path: Path
) -> None:
    """Loop chunks run as workflows of their own: each opens the run's secret too."""
    service = start_service()
    with recorder() as local:
        service.publish(LOOPED.replace("URL", local.url))
        run_id = service.start("secret-loop", {"api_token": TOKEN})
        detail = service.finish(run_id)
        assert received(local) == [TOKEN, TOKEN]
    assert detail["run"]["status"] == "completed", detail["run"]["message"]
    assert TOKEN not in sqlite_rows(tmp_path / "klingflow.sqlite")
