"""`klingflow examples [DIR]` copies the shipped examples, which then run as the README says."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from klingflow.cli import app
from klingflow.cli.examples import examples_dir
from klingflow.workflows import load_workflow


def test_examples_copies_every_example_and_they_validate(tmp_path: Path) -> None:
    """The copied folder holds every shipped file, and each workflow in it is valid."""
    target = tmp_path / "mine"
    result = CliRunner().invoke(app, ["examples", str(target)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(target)
    shipped = sorted(p.relative_to(examples_dir()) for p in examples_dir().rglob("*.*"))
    copied = sorted(p.relative_to(target) for p in target.rglob("*.*"))
    assert copied == shipped
    assert Path("requests/omni.json") in copied
    for workflow in target.glob("*.yaml"):
        load_workflow(workflow)


def test_examples_keeps_files_the_user_already_has(tmp_path: Path) -> None:
    """An edited example is not overwritten; the others are copied beside it."""
    (tmp_path / "batch-from-csv.yaml").write_text("# mine\n")
    result = CliRunner().invoke(app, ["examples", str(tmp_path)], catch_exceptions=False)
    assert result.exit_code == 0
    assert (tmp_path / "batch-from-csv.yaml").read_text() == "# mine\n"
    assert (tmp_path / "prompts.csv").is_file()
    assert "kept 1 existing file" in result.stderr


def test_examples_defaults_to_an_examples_folder_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without DIR it writes ./examples, so README's `klingflow run examples/...` works."""
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["examples"], catch_exceptions=False)
    assert result.exit_code == 0
    assert (tmp_path / "examples" / "batch-from-csv.yaml").is_file()
