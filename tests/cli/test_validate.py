"""`klingflow validate FILE`: one line per problem on stderr, and exit 3 like a rejected request."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner, Result

from klingflow.cli.exit_codes import EXIT_CODES
from klingflow.cli.workflows import validate
from klingflow.errors import WorkflowDefinitionError

EXAMPLES = Path(__file__).parents[2] / "examples"

app = typer.Typer()
app.command()(validate)


@app.callback()
def _root() -> None:
    """A group, so the command is invoked by name as in the real CLI."""


def run(*args: str) -> Result:
    return CliRunner().invoke(app, ["validate", *args], catch_exceptions=False)


BROKEN = """\
name: broken
nodes:
  - id: video
    type: kling.video
    with:
      prompt: a fox
      duration: 20
      version: "2.1"
  - id: save
    type: download
    with: {url: "{{ nodes.vidoe.output.video_url }}"}
"""


def invalid_exit_code() -> int:
    return next(code for cls, code, _ in EXIT_CODES if cls is WorkflowDefinitionError)


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda path: path.name)
def test_examples_validate_from_the_command_line(path: Path) -> None:
    """Each example prints a check line with its node count and exits 0."""
    result = run(str(path))
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith(f"✔ {path}: valid (")


def test_a_valid_file_prints_its_node_count(tmp_path: Path) -> None:
    """The success line is `✔ FILE: valid (N nodes)`."""
    path = tmp_path / "ok.yaml"
    path.write_text(BROKEN.replace("duration: 20", "duration: 10").replace("vidoe", "video"))
    result = run(str(path))
    assert result.exit_code == 0
    assert result.stdout.strip() == f"✔ {path}: valid (2 nodes)"


def test_an_invalid_file_prints_one_line_per_problem(tmp_path: Path) -> None:
    """Each problem is one `file:line (node 'id'): field: message` line on stderr."""
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN)
    result = run(str(path))
    assert result.exit_code == invalid_exit_code() == 15
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"{path}:7 (node 'video'): with.duration: must be 5 or 10 for version 2.1",
        f"{path}:11 (node 'save'): with.url: refers to node 'vidoe', which does not exist "
        "(did you mean 'video'?)",
    ]


def test_json_output_lists_problems_with_their_locations(tmp_path: Path) -> None:
    """`--json` prints the problems as data on stdout, with the same exit code."""
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN)
    result = run(str(path), "--json")
    assert result.exit_code == 15
    report = json.loads(result.stdout)
    assert report["is_valid"] is False
    assert report["problems"][0] == {
        "path": str(path),
        "line": 7,
        "node_id": "video",
        "field": "with.duration",
        "message": "must be 5 or 10 for version 2.1",
    }


def test_json_output_for_a_valid_file_has_the_content_hash() -> None:
    """`--json` on a valid file reports its name, node count and version hash."""
    result = run(str(EXAMPLES / "seed-action.yaml"), "--json")
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert report["is_valid"] is True
    assert report["name"] == "seed-action"
    assert report["node_count"] == 3
    assert len(report["content_hash"]) == 64


def test_a_missing_file_is_one_line_and_the_same_exit_code(tmp_path: Path) -> None:
    """A path that cannot be read is reported like any other definition problem."""
    result = run(str(tmp_path / "nope.yaml"))
    assert result.exit_code == 15
    assert len(result.stderr.splitlines()) == 1
    assert "cannot read" in result.stderr
