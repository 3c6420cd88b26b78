"""Text typed for an input (a CSV cell, a form field) reads as that input's type, one rule."""

from __future__ import annotations

from typing import Any

import pytest

from klingflow.workflows.inputs import value_from_text
from klingflow.workflows.spec import InputType


@pytest.mark.parametrize(
    ("kind", "text", "value"),
    [
        ("string", " 5 ", " 5 "),
        ("integer", "5", 5),
        ("number", "5", 5),
        ("number", "2.5", 2.5),
        ("boolean", " TRUE", True),
        ("array", '["a"]', ["a"]),
        ("object", '{"a": 1}', {"a": 1}),
    ],
)
def test_text_reads_as_the_inputs_type(kind: InputType, text: str, value: Any) -> None:
    """Whole numbers stay whole, booleans in any case, arrays and objects as JSON."""
    assert value_from_text(kind, text) == value
    assert type(value_from_text(kind, text)) is type(value)


@pytest.mark.parametrize(
    ("kind", "text", "message"),
    [
        ("integer", "5.5", "must be a whole number, got '5.5'"),
        ("number", "NaN", "must be a number, got 'NaN'"),
        ("boolean", "1", "must be true or false, got '1'"),
        ("array", "[oops", "must be JSON (Expecting value at column 2)"),
    ],
)
def test_text_that_does_not_fit_says_why(kind: InputType, text: str, message: str) -> None:
    """The refusal is the message the form shows next to its field."""
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        value_from_text(kind, text)
