"""`klingflow examples [DIR]`: copy the example workflows and inputs shipped in the package.

The README and the docs say `klingflow run examples/...`: a pip user has no checkout, so the
examples travel in the wheel (`klingflow/examples`) and this command puts a copy where the
user can read, edit and run them.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated

import typer

from klingflow.cli._console import err, out

__all__ = ["examples", "examples_dir"]


def examples_dir() -> Path:
    """The shipped examples: `klingflow/examples` in a wheel, `examples/` in a checkout."""
    package = Path(__file__).resolve().parents[1]
    for candidate in (package / "examples", package.parents[1] / "examples"):
        if (candidate / "batch-from-csv.yaml").is_file():
            return candidate
    raise RuntimeError(f"klingflow's examples are missing beside {package}: reinstall klingflow")


def examples(
    directory: Annotated[
        Path, typer.Argument(help="Where to copy them (created if needed).")
    ] = Path("examples"),
) -> None:
    """Copy the example workflows and their inputs into DIR (default ./examples); files
    already there are kept as they are."""
    source = examples_dir()
    copied = kept = 0
    for path in sorted(source.rglob("*")):
        if not path.is_file() or "__pycache__" in path.parts:
            continue
        target = directory / path.relative_to(source)
        if target.exists():
            kept += 1
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        copied += 1
    out.print(str(directory), markup=False)
    note = f", kept {kept} existing file{'s' if kept != 1 else ''}" if kept else ""
    err.print(
        f"copied {copied} example file{'s' if copied != 1 else ''}{note}; try `klingflow run "
        f"{directory / 'batch-from-csv.yaml'} -i rows=@{directory / 'prompts.csv'} --dry-run`",
        markup=False,
    )
