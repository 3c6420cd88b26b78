"""`klingflow validate FILE`: every problem in a workflow file, before anything runs or is paid."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from klingflow.cli._console import err, out, print_json
from klingflow.cli._errors import EXIT_CODES, handles_errors, redact, state
from klingflow.errors import WorkflowDefinitionError
from klingflow.workflows import load_workflow

__all__ = ["INVALID_EXIT_CODE", "validate"]

INVALID_EXIT_CODE = next(code for cls, code, _ in EXIT_CODES if cls is WorkflowDefinitionError)
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
            # One line per problem, `file:line (node 'id'): field: message`, so editors and
            # CI annotations can jump to each one.
            for problem in error.problems:
                err.print(redact(str(problem)), markup=False, highlight=False)
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
