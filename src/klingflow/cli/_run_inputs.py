"""The inputs of the runs `klingflow run` starts: `-i key=value`, `--input-file` and `--rows`.

A payload is one run's trigger data: the input file's object, then each `-i` pair over it;
with `--rows`, one payload per row, so a spreadsheet of prompts becomes a batch of runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from klingflow.cli._console import err
from klingflow.cli._data import read_data_file
from klingflow.errors import InvalidRequestError
from klingflow.workflows.tables import TABLE_SUFFIXES, parse_table_bytes

__all__ = ["build_payloads", "parse_input", "read_table"]


def read_table(path: Path) -> list[Any]:
    """Rows of a CSV or an Excel .xlsx sheet (as objects), JSON Lines, or a JSON/YAML array."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise InvalidRequestError([(str(path), f"cannot read: {error.strerror}")]) from None
    return parse_table_bytes(data, suffix=path.suffix, source=str(path))


def parse_input(text: str) -> tuple[str, Any]:
    """`key=value`: JSON when it parses (5, true, [..]), a file's rows for `@file`, else text."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise InvalidRequestError([("-i", f"expected key=value, got {text!r}")])
    if value.startswith("@"):
        return key, read_table(Path(value[1:]))
    if Path(value).suffix in TABLE_SUFFIXES and Path(value).is_file():
        err.print(
            f"hint: -i {text} passes the text {value!r}; did you mean {key}=@{value} (its rows)?",
            markup=False,
        )
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def build_payloads(
    inputs: list[str] | None, input_file: Path | None, rows: Path | None
) -> list[dict[str, Any]]:
    """One payload per run: the file, then -i pairs; with --rows, one run per row."""
    base: dict[str, Any] = {}
    if input_file is not None:
        data = read_data_file(input_file)
        if not isinstance(data, dict):
            raise InvalidRequestError([(str(input_file), "must hold an object of inputs")])
        base.update(data)
    base.update(parse_input(item) for item in inputs or [])
    if rows is None:
        return [base]
    table = read_table(rows)
    if not all(isinstance(row, dict) for row in table):
        raise InvalidRequestError([(str(rows), "each row must be an object")])
    return [{**base, **row} for row in table]
