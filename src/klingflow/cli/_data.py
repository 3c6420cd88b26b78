"""Reading the data files a user points the CLI at (`--input-file`, `--rows`, `-i k=@file`,
`cost --body`): every malformed file is one `InvalidRequestError` naming it, never a
traceback, and nothing is read that a run could not store (see `klingflow.payloads`)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import yaml

from klingflow.errors import InvalidRequestError
from klingflow.payloads import data_problems, nesting_problem, payload_problems

__all__ = ["read_data_file"]


def read_data_file(path: Path) -> Any:
    """The file's data: CSV rows (objects; quotes must close), JSON Lines, or one JSON/YAML
    document. Raises `InvalidRequestError` for an unreadable, non-UTF-8, binary, malformed,
    too deep, too large or too big-numbered file."""
    where = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise InvalidRequestError([(where, f"cannot read: {error.strerror}")]) from None
    except UnicodeDecodeError:
        raise InvalidRequestError([(where, "is not UTF-8 text")]) from None
    if (problem := data_problems(text)) is not None:
        raise InvalidRequestError([(where, problem)])
    try:
        if path.suffix == ".csv":
            # strict: an unclosed quote is an error, not two rows merged into one prompt
            data: Any = [dict(row) for row in csv.DictReader(io.StringIO(text), strict=True)]
        elif path.suffix == ".jsonl":
            data = [json.loads(line) for line in text.splitlines() if line.strip()]
        elif (problem := nesting_problem(text)) is not None:  # before PyYAML's slow scan
            raise InvalidRequestError([(where, problem)])
        else:
            data = yaml.safe_load(text)
    except RecursionError:
        raise InvalidRequestError([(where, "is nested too deeply")]) from None
    except (ValueError, csv.Error, yaml.YAMLError) as error:  # a 5,000-digit number too
        raise InvalidRequestError([(where, f"cannot be parsed: {error}")]) from None
    if problems := payload_problems(data, where):
        raise InvalidRequestError(problems[:5])
    return data
