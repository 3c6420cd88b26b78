"""Text typed for a declared input, read as that input's type.

People type inputs as text: a CSV or sheet cell (`klingflow run --rows`, the web form's
upload), or a field of the web form. One rule reads all of them, the JSON one `-i key=value`
and the API use, so `5` is the integer 5 wherever it was typed, and a number typed whole
stays whole (`5`, not `5.0`, in a prompt).
"""

from __future__ import annotations

import json
from typing import Any

from klingflow.workflows.spec import InputType, type_problem

__all__ = ["SCALAR_INPUT_TYPES", "json_from_text", "value_from_text"]

SCALAR_INPUT_TYPES: tuple[InputType, ...] = ("integer", "number", "boolean")
"""The types a table cell is read as; other cells stay text (a cell is never a list)."""

_NOT_A = {
    "integer": "must be a whole number",
    "number": "must be a number",
    "boolean": "must be true or false",
}


def json_from_text(text: str) -> Any:
    """`text` as JSON; `ValueError` saying where it stops being JSON."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"must be JSON ({error.msg} at column {error.colno})") from None


def value_from_text(kind: InputType, text: str) -> Any:
    """The value `text` stands for in an input of type `kind`: a string as typed; an integer,
    a (finite) number or a boolean (`true`/`false`, any case) as JSON writes it; an array or
    an object as JSON. Raises `ValueError` with the message the user sees, e.g.
    `must be a whole number, got '5.5'`."""
    if kind == "string":
        return text
    if kind in ("array", "object"):
        return json_from_text(text)
    try:
        value = json.loads(text.strip().lower() if kind == "boolean" else text)
    except ValueError:
        value = None
    if value is None or type_problem(kind, value) is not None:  # 5.5 for an integer, NaN
        raise ValueError(f"{_NOT_A[kind]}, got {text!r}")
    return value
