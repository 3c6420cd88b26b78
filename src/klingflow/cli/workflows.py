"""`klingflow validate FILE` and `klingflow publish FILE...`: check workflow files before
anything runs or is paid, and store them in the run database, where the service and the
schedules find them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from klingflow.cli._console import err, out, print_json
from klingflow.cli._errors import handles_errors, redact, state
from klingflow.cli.exit_codes import exit_code_of
from klingflow.errors import WorkflowDefinitionError
from klingflow.settings import Settings
from klingflow.workflows import load_workflow, load_workflow_text
from klingflow.workflows.database import make_engine
from klingflow.workflows.loading import read_workflow_text
from klingflow.workflows.registry import PublishedWorkflow, PublishOutcome, WorkflowRegistry

__all__ = ["INVALID_EXIT_CODE", "publish", "publish_files", "validate", "workflow_files"]

INVALID_EXIT_CODE = exit_code_of(WorkflowDefinitionError)
"""An invalid workflow file (15): rejected before anything ran or was spent."""


@handles_errors
def validate(
    file: Annotated[
        Path, typer.Argument(help="The workflow file: YAML, or JSON when it ends in .json.")
    ],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the result as JSON on stdout.")
    ] = False,
) -> None:
    """Check a workflow file without running it: schema, node references, templates, and the
    literal Kling parameters against PiAPI's rules. Prints one line per problem.
    """
    try:
        workflow = load_workflow(file)
    except WorkflowDefinitionError as error:
        if state.debug:
            raise
        if as_json:
            problems = [
                {
                    "path": problem.path,
                    "line": problem.line,
                    "node_id": problem.node_id,
                    "field": problem.field,
                    "message": problem.message,
                }
                for problem in error.problems
            ]
            print_json({"file": str(file), "is_valid": False, "problems": problems})
        else:
            _print_problems(error)
        raise typer.Exit(code=INVALID_EXIT_CODE) from None
    count = workflow.node_count
    if as_json:
        print_json(
            {
                "file": str(file),
                "is_valid": True,
                "name": workflow.name,
                "node_count": count,
                "content_hash": workflow.content_hash,
            }
        )
        return
    out.print(f"✔ {file}: valid ({count} node{'s' if count != 1 else ''})", markup=False)


def _print_problems(error: WorkflowDefinitionError) -> None:
    # One line per problem, `file:line (node 'id'): field: message`, so editors and CI
    # annotations can jump to each one.
    for problem in error.problems:
        err.print(redact(str(problem)), markup=False, highlight=False)


WORKFLOW_SUFFIXES = (".yaml", ".yml", ".json")


def workflow_files(paths: list[Path]) -> list[Path]:
    """Files as given; a folder gives its .yaml, .yml and .json files (not its subfolders)."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.suffix in WORKFLOW_SUFFIXES)
        else:
            found.append(path)
    return found


def publish_files(
    paths: list[Path], settings: Settings
) -> list[tuple[PublishedWorkflow, PublishOutcome]]:
    """Publish every file in one transaction, or none when any is invalid (its problems
    printed, exit 15). Each file is read once and stored as it validated."""
    texts: list[tuple[str, str]] = []
    invalid: list[WorkflowDefinitionError] = []
    for file in workflow_files(paths):
        try:
            text = read_workflow_text(file)
            load_workflow_text(text, path=str(file))  # every file's problems, before any write
        except WorkflowDefinitionError as error:
            invalid.append(error)
        else:
            texts.append((text, str(file)))
    if invalid:
        if state.debug:
            raise invalid[0]
        for problems in invalid:
            _print_problems(problems)
        raise typer.Exit(code=INVALID_EXIT_CODE)
    engine = make_engine(settings.resolved_database_url())
    try:
        registry = WorkflowRegistry(engine)
        published = registry.publish_all(
            [text for text, _ in texts], paths=[path for _, path in texts]
        )
    finally:
        engine.dispose()
    for version, outcome in published:
        out.print(f"{version.name} {version.hash[:12]} {outcome}", markup=False)
    return published


@handles_errors
def publish(
    files: Annotated[
        list[Path],
        typer.Argument(
            help="Workflow files (YAML, or JSON when the name ends in .json), or folders of them."
        ),
    ],
) -> None:
    """Validate workflow files and store them in the run database (KLINGFLOW_DATABASE_URL),
    where the service runs them and every worker and `klingflow serve` fires their schedules.

    Prints `NAME HASH published` for a new version (it becomes the latest), `NAME HASH
    republished` for an older version that becomes the latest again, and `NAME HASH
    unchanged` when it already was the latest. When any file is invalid, every problem is
    printed and nothing is published; the files are published in one transaction.
    """
    publish_files(files, Settings())
