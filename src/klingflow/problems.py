"""Pydantic validation errors as problems a person can act on, in one wording everywhere.

The client (Kling requests), the workflow spec (node parameters) and the workflow checks
(whole files) all turn pydantic's errors into `(field, rule)` problems. The wording lives here
once, because copies drift: a missing field "is required" (not pydantic's "Field required"),
an unknown one "is not a known field", and a cross-field rule names the field it is about
rather than the model that raised it. This module sits below `piapi` and `workflows` and
imports neither: both import it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from klingflow.errors import Problem

__all__ = [
    "ABSOLUTE_RULE",
    "IS_REQUIRED",
    "RELATIVE_RULE",
    "UNKNOWN_FIELD",
    "Issue",
    "Path",
    "issue_from",
    "problems_from",
    "split_field",
]

Path = tuple[str | int, ...]
"""A position in the data: `("nodes", 0, "with", "duration")`."""
Issue = tuple[Path, str]
"""A problem at a path relative to what was checked (a node, a `with:` block, the file)."""

ABSOLUTE_RULE = "kling_rule"
"""Error type of a cross-field rule whose field is named from the top of the request."""
RELATIVE_RULE = "workflow_rule"
"""Error type of a cross-field rule whose field is relative to the model that raised it."""
IS_REQUIRED = "is required"
UNKNOWN_FIELD = "is not a known field"

_FIELD_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def split_field(field: str) -> Path:
    """`"multi_shots[0].prompt"` (or pydantic's `"multi_shots.0.prompt"`) as a path."""
    parts: list[str | int] = []
    for name, index in _FIELD_PART.findall(field):
        parts.append(int(index) if index else int(name) if name.isdigit() else name)
    return tuple(parts)


def issue_from(
    details: ErrorDetails, *, pattern_messages: Mapping[str, str] | None = None
) -> Issue:
    """One pydantic error as `(path, message)`; rules keep the field they are about.

    `pattern_messages` says in words what a regex pattern means (a node id's, a name's), so
    the user reads the rule rather than the regex; the value that broke it is quoted.
    """
    loc: Path = tuple(details["loc"])
    ctx = details.get("ctx") or {}
    kind = details["type"]
    if kind == ABSOLUTE_RULE:
        return split_field(str(ctx["field"])), str(ctx["message"])
    if kind == RELATIVE_RULE:
        return loc + split_field(str(ctx["field"])), str(ctx["message"])
    if kind == "missing":
        return loc, IS_REQUIRED
    if kind == "extra_forbidden":
        return loc, UNKNOWN_FIELD
    if kind == "string_pattern_mismatch" and pattern_messages is not None:
        message = pattern_messages.get(str(ctx.get("pattern")), details["msg"])
        return loc, f"{message}, got {details['input']!r}"
    return loc, details["msg"].removeprefix("Value error, ")


def problems_from(
    error: ValidationError, *, prefix: str, unknown_field: str = UNKNOWN_FIELD
) -> list[Problem]:
    """Every error of `error` as `(field, rule)`, fields dotted under `prefix` (`input.x`).

    `unknown_field` words the extra-field problem where the caller knows more (a Kling
    request says the field is not one of *this task type's*).
    """
    problems: list[Problem] = []
    for details in error.errors(include_url=False):
        path, message = issue_from(details)
        if message == UNKNOWN_FIELD and details["type"] == "extra_forbidden":
            message = unknown_field
        field = ".".join(str(part) for part in path)
        problems.append((f"{prefix}.{field}" if prefix and field else field or prefix, message))
    return problems
