"""What the docs promise about runs, exit codes and settings is what the code does."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from klingflow.cli import app
from klingflow.cli.exit_codes import EXIT_CODES, RUN_NOT_COMPLETED
from klingflow.errors import RunNotFoundError, RunStateError

from .conftest import Invoke

ROOT = Path(__file__).parents[2]
WORKFLOWS_DOCS = (ROOT / "docs" / "workflows.md").read_text()
CLIP = "name: clip\nnodes:\n  - {id: clip, type: kling.video, with: {prompt: a fox}}\n"


def code_of(cls: type) -> int:
    return next(code for error, code, _ in EXIT_CODES if error is cls)


def test_the_workflow_exit_code_table_matches_the_code() -> None:
    """16 (not completed), 17 (no such run) and 18 (retry of a run that is not paused)."""
    rows = dict(re.findall(r"^\| (\d+) \| (.+) \|$", WORKFLOWS_DOCS, re.MULTILINE))
    assert "paused, crashed or was cancelled" in rows[str(RUN_NOT_COMPLETED)]
    assert "no run with that id" in rows[str(code_of(RunNotFoundError))]
    assert "`runs retry/skip` on a run that is not paused" in rows[str(code_of(RunStateError))]


def test_runs_show_lists_the_submissions_in_its_text_view(
    klingflow: Invoke, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each paid submission is a line: node, state, task id, estimate, when it was sent."""
    monkeypatch.setenv("KLINGFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("KLINGFLOW_DATABASE_URL", raising=False)
    monkeypatch.setenv("KLINGFLOW_POLL_SECONDS", "0.02")
    (tmp_path / "clip.yaml").write_text(CLIP)
    started = klingflow("run", str(tmp_path / "clip.yaml"), "--json")
    assert started.exit_code == 0, started.output
    [record] = json.loads(started.stdout)
    shown = json.loads(klingflow("runs", "show", record["run_id"], "--json").stdout)
    [submission] = shown["submissions"]
    text = klingflow("runs", "show", record["run_id"]).stdout
    assert "submissions:" in text
    assert re.search(
        rf"^clip\tcompleted\t{submission['task_id']}\t\$0\.50\t\d{{4}}-.* UTC\t", text, re.M
    )


def test_one_variable_sets_the_first_poll_pause_everywhere() -> None:
    """KLINGFLOW_POLL_SECONDS feeds `--poll-interval`; the old KLINGFLOW_POLL_INTERVAL is gone."""
    result = CliRunner().invoke(app, ["video", "--help"], env={"COLUMNS": "200"})
    assert "KLINGFLOW_POLL_SECONDS" in result.output
    for path in [ROOT / "README.md", *ROOT.glob("docs/*.md"), *ROOT.glob("src/**/*.py")]:
        assert "KLINGFLOW_POLL_INTERVAL" not in path.read_text(encoding="utf-8"), path
