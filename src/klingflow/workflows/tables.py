"""Rows from a spreadsheet export (CSV, JSON Lines, a JSON/YAML array), typed as inputs.

One home for the rule the CLI's `--rows` / `-i key=@file` and the web UI's upload share: a
CSV row is an object keyed by its header, its cells are text, and `coerce_row` reads the
cells named after a declared input as that input's type (integer, number, boolean), so
`duration,5` arrives as the integer 5 wherever the rows came from.
"""

from __future__ import annotations

import csv
import json
from typing import Any

import yaml

from klingflow.errors import InvalidRequestError
from klingflow.workflows.spec import Workflow

__all__ = ["TABLE_SUFFIXES", "coerce_row", "parse_table"]

TABLE_SUFFIXES = (".csv", ".jsonl", ".json", ".yaml", ".yml")
"""The formats `parse_table` reads, by file name suffix."""


def _csv_rows(text: str, source: str) -> list[Any]:
    reader = csv.DictReader(text.splitlines())
    rows: list[Any] = []
    for row in reader:
        if None in row:  # more cells than the header has names: a shifted row
            line = reader.line_num
            raise InvalidRequestError([(source, f"line {line} has more cells than the header")])
        rows.append({key: "" if value is None else value for key, value in row.items()})
    return rows


def parse_table(text: str, *, suffix: str, source: str) -> list[Any]:
    """The rows of a table file's text; `suffix` (".csv", ...) says its format and
    `source` (a path or an upload's name) is what an `InvalidRequestError` names."""
    suffix = suffix.lower()
    try:
        if suffix == ".csv":
            return _csv_rows(text.removeprefix("\ufeff"), source)  # Excel's byte-order mark
        if suffix == ".jsonl":
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        data = yaml.safe_load(text)
    except InvalidRequestError:  # already says what is wrong, and where
        raise
    except (ValueError, yaml.YAMLError, csv.Error) as error:
        raise InvalidRequestError([(source, f"cannot be parsed: {error}")]) from None
    if not isinstance(data, list):
        raise InvalidRequestError([(source, "must hold a list of rows")])
    return data


def coerce_row(workflow: Workflow, payload: dict[str, Any]) -> dict[str, Any]:
    """CSV cells are text: read them as the declared input types (integer, number, boolean)."""
    coerced = dict(payload)
    for name, spec in workflow.inputs.items():
        value = coerced.get(name)
        if not isinstance(value, str) or spec.type in ("string", "array", "object"):
            continue
        try:
            parsed = json.loads(value.strip().lower() if spec.type == "boolean" else value)
        except ValueError:
            continue  # left as text: resolve_inputs names the problem
        coerced[name] = parsed
    return coerced
