"""Rows from a spreadsheet (CSV, an Excel .xlsx sheet, JSON Lines, a JSON/YAML array),
typed as inputs.

One home for the rule the CLI's `--rows` / `-i key=@file` and the web UI's upload share: a
CSV or sheet row is an object keyed by its header, its cells are text (an Excel number 5
is "5", as a CSV export would write it), and `coerce_row` reads the cells named after a
declared input as that input's type (integer, number, boolean; `inputs.py` holds the rule),
so `duration,5` arrives as the integer 5 wherever the rows came from.
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import zipfile
from typing import Any

import yaml

from klingflow.errors import InvalidRequestError
from klingflow.payloads import data_problems, nesting_problem, payload_problems
from klingflow.workflows.inputs import SCALAR_INPUT_TYPES, value_from_text
from klingflow.workflows.spec import Workflow

__all__ = ["TABLE_SUFFIXES", "coerce_row", "parse_table", "parse_table_bytes"]

TABLE_SUFFIXES = (".csv", ".xlsx", ".jsonl", ".json", ".yaml", ".yml")
"""The formats `parse_table` reads, by file name suffix."""


def _csv_rows(text: str, source: str) -> list[Any]:
    # strict: an unclosed quote is an error, not two rows merged into one prompt
    reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
    rows: list[Any] = []
    for row in reader:
        if None in row:  # more cells than the header has names: a shifted row
            line = reader.line_num
            raise InvalidRequestError([(source, f"line {line} has more cells than the header")])
        rows.append({key: "" if value is None else value for key, value in row.items()})
    return rows


def _cell_text(value: Any) -> str:
    """An Excel cell as a CSV export writes it: 5 not 5.0, TRUE as true, dates in ISO."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    return str(value)


def _xlsx_rows(data: bytes, source: str) -> list[Any]:
    """The first sheet's rows, keyed by its first row; blank rows are left out."""
    try:
        import openpyxl  # type: ignore[import-untyped]  # only a sheet needs it

        book = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:
        raise InvalidRequestError([(source, f"is not an Excel .xlsx file ({error})")]) from None
    try:
        values = book.worksheets[0].iter_rows(values_only=True)
        header = [_cell_text(v).strip() for v in next(values, ())]
        rows = []
        for number, cells in enumerate(values, start=2):
            texts = [_cell_text(v) for v in cells]
            if not any(t.strip() for t in texts):
                continue
            if any(t.strip() for t in texts[len(header) :]):
                raise InvalidRequestError(
                    [(source, f"row {number} has more cells than the header")]
                )
            rows.append({name: text for name, text in zip(header, texts, strict=False) if name})
        return rows
    finally:
        book.close()


def parse_table_bytes(data: bytes, *, suffix: str, source: str) -> list[Any]:
    """As `parse_table`, from a file's bytes: an .xlsx sheet, or UTF-8 text."""
    if suffix.lower() == ".xlsx":
        return _xlsx_rows(data, source)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequestError([(source, "is not UTF-8 text (save it as CSV UTF-8)")]) from None
    return parse_table(text, suffix=suffix, source=source)


def parse_table(text: str, *, suffix: str, source: str) -> list[Any]:
    """The rows of a table file's text; `suffix` (".csv", ...) says its format and
    `source` (a path or an upload's name) is what an `InvalidRequestError` names."""
    suffix = suffix.lower()
    if (problem := data_problems(text)) is not None:
        raise InvalidRequestError([(source, problem)])
    try:
        if suffix == ".csv":
            return _csv_rows(text.removeprefix("\ufeff"), source)  # Excel's byte-order mark
        if suffix == ".jsonl":
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        if (problem := nesting_problem(text)) is not None:  # before PyYAML's slow scan
            raise InvalidRequestError([(source, problem)])
        data = yaml.safe_load(text)
    except InvalidRequestError:  # already says what is wrong, and where
        raise
    except RecursionError:
        raise InvalidRequestError([(source, "is nested too deeply")]) from None
    except (ValueError, yaml.YAMLError, csv.Error) as error:  # a 5,000-digit number too
        raise InvalidRequestError([(source, f"cannot be parsed: {error}")]) from None
    if not isinstance(data, list):
        raise InvalidRequestError([(source, "must hold a list of rows")])
    if problems := payload_problems(data, source):
        raise InvalidRequestError(problems[:5])
    return data


def coerce_row(workflow: Workflow, payload: dict[str, Any]) -> dict[str, Any]:
    """CSV cells are text: read them as the declared input types (integer, number, boolean)
    by the rule the web form's fields follow too (`inputs.value_from_text`)."""
    coerced = dict(payload)
    for name, spec in workflow.inputs.items():
        value = coerced.get(name)
        if not isinstance(value, str) or spec.type not in SCALAR_INPUT_TYPES:
            continue
        try:
            coerced[name] = value_from_text(spec.type, value)
        except ValueError:
            continue  # left as text: resolve_inputs names the problem
    return coerced
