"""What one template render may spend: sizes, integers, loop turns, characters and time.

The immutable sandbox stops a template from reaching Python internals, but not from
building a gigabyte string (`"x" * 10**9`), a huge integer (`9**9**9`) or looping for ever.
These limits close that gap: every operation is estimated before it runs where it can be,
and charged after, against one `Budget` per rendered value, so a workflow file or an
upstream value (a CSV cell, an AI reply) can neither exhaust memory nor hang a worker.
Refusals raise jinja's `SecurityError`, which rendering reports as a `TemplateError`.
"""

from __future__ import annotations

import contextvars
import functools
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jinja2
from jinja2.nodes import EvalContext
from jinja2.runtime import Context

__all__ = [
    "BUDGET",
    "MAX_EXPONENT",
    "MAX_INTEGER_BITS",
    "MAX_SEQUENCE_LENGTH",
    "MAX_TEMPLATE_ITERATIONS",
    "MAX_TEMPLATE_SECONDS",
    "MAX_TEMPLATE_WORK",
    "Budget",
    "charge_result",
    "check_size",
    "current_budget",
    "estimate_size",
    "format_size",
    "guard_filter",
    "text_length",
]

MAX_SEQUENCE_LENGTH = 1_000_000
"""Largest string or list one template operation may build (`*`, `+`, `~`, `replace`,
`%`-format, `format`, `center`, `join`, `indent`...), and the largest rendered value."""
MAX_EXPONENT = 1_000
MAX_INTEGER_BITS = 10_000
"""Largest integer (about 3,000 digits) an operation may make: `9**999**...` stops here."""
MAX_TEMPLATE_WORK = 10_000_000
"""Characters all operations of one render may produce together: a loop of big strings."""
MAX_TEMPLATE_ITERATIONS = 100_000
"""`{% for %}` iterations in one render, nested loops counted together."""
MAX_TEMPLATE_SECONDS = 2.0
"""Wall time of one render, checked at every operation, loop turn and output."""

_FORMAT_NUMBERS = re.compile(r"\d+")


class Budget:
    """What one render may still spend; shared by the nested renders of one value."""

    def __init__(self) -> None:
        self.work = 0
        self.iterations = 0
        self.deadline = time.monotonic() + MAX_TEMPLATE_SECONDS

    def charge(self, chars: int = 0, iterations: int = 0) -> None:
        """Spend `chars` and `iterations`; raise `SecurityError` once any limit is passed.

        Also the clock check: a call with nothing to spend still ends an overlong render.
        """
        self.work += chars
        self.iterations += iterations
        if self.work > MAX_TEMPLATE_WORK:
            raise jinja2.exceptions.SecurityError(
                f"the template produced more than {MAX_TEMPLATE_WORK:,} characters"
            )
        if self.iterations > MAX_TEMPLATE_ITERATIONS:
            raise jinja2.exceptions.SecurityError(
                f"the template looped more than {MAX_TEMPLATE_ITERATIONS:,} times"
            )
        if time.monotonic() > self.deadline:
            raise jinja2.exceptions.SecurityError(
                f"the template ran longer than {MAX_TEMPLATE_SECONDS} s"
            )


BUDGET: contextvars.ContextVar[Budget | None] = contextvars.ContextVar(
    "klingflow_template_budget", default=None
)
"""The budget of the render in progress: a context variable, so the nested renders of one
value share it and concurrent runs (threads, asyncio tasks) each have their own."""


def current_budget() -> Budget:
    """The budget of the render in progress (see `BUDGET`)."""
    budget = BUDGET.get()
    if budget is None:  # a compiled template called outside `render` still gets limits
        budget = Budget()
        BUDGET.set(budget)
    return budget


def check_size(size: int) -> None:
    """Refuse a string or list of `size` before it is built, not after memory is gone."""
    if size > MAX_SEQUENCE_LENGTH:
        raise jinja2.exceptions.SecurityError(
            f"the result would be too large ({size:,} > {MAX_SEQUENCE_LENGTH:,})"
        )


def charge_result(value: Any) -> Any:
    """Count what an operation made; refuse a value over the size limit or a huge integer."""
    if isinstance(value, str | list | tuple):
        check_size(len(value))
        current_budget().charge(len(value))
    elif isinstance(value, int) and not isinstance(value, bool):
        if value.bit_length() > MAX_INTEGER_BITS:
            raise jinja2.exceptions.SecurityError("the integer would be too large")
        current_budget().charge()
    else:
        current_budget().charge()
    return value


def text_length(value: Any) -> int:
    """How many characters `value` prints as."""
    return len(value) if isinstance(value, str) else len(str(value))


def format_size(fmt: Any, args: Sequence[Any]) -> int:
    """An upper estimate of a `%`/`format` result: the widths it names plus its arguments."""
    text = str(fmt)
    widths = sum(int(n) for n in _FORMAT_NUMBERS.findall(text) if len(n) <= 9)
    if any(len(n) > 9 for n in _FORMAT_NUMBERS.findall(text)):
        return MAX_SEQUENCE_LENGTH + 1
    values = [*args] if not isinstance(args, Mapping) else list(args.values())
    numbers = sum(v for v in values if isinstance(v, int) and not isinstance(v, bool) and v > 0)
    return len(text) + widths + numbers + sum(text_length(v) for v in values)


def estimate_size(name: str, target: Any, args: Sequence[Any], kwargs: Mapping[str, Any]) -> int:
    """An upper estimate of what string operation `name` on `target` would build (0: no
    estimate needed, its result is checked after)."""
    for value in (*args, *kwargs.values()):
        if isinstance(value, int) and not isinstance(value, bool):
            check_size(abs(value))  # a width, count or size argument
    if not isinstance(target, str):
        if name == "join" and isinstance(target, list | tuple):  # the join filter's input
            sep = str(args[0]) if args else str(kwargs.get("d", ""))
            return sum(text_length(v) for v in target) + len(sep) * len(target)
        return 0
    if name == "replace" and len(args) >= 2:
        old, new = str(args[0]), str(args[1])
        count = len(target) + 1 if not old else target.count(old)
        return len(target) + count * max(0, len(new) - len(old))
    if name == "indent":
        width = args[0] if args else kwargs.get("width", 4)
        size = width if isinstance(width, int) else text_length(width)
        return len(target) + size * (target.count("\n") + 1)
    if name == "expandtabs":
        size = args[0] if args and isinstance(args[0], int) else 8
        return len(target) + size * target.count("\t")
    if name == "join" and args and isinstance(args[0], str | list | tuple):
        items = args[0]  # a generator is left alone (estimating would consume it)
        return sum(text_length(v) for v in items) + len(target) * len(items)
    if name in ("format", "format_map"):
        return format_size(target, [*args, *kwargs.values()])
    return 0


def guard_filter(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """A jinja filter with the size limits: its arguments checked first, its result after."""

    @functools.wraps(function)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        # Filters get (environment/context?, value, *args): the value is the first
        # non-jinja argument.
        values = [a for a in args if not isinstance(a, jinja2.Environment | Context | EvalContext)]
        if values:
            target, rest = values[0], values[1:]
            if name == "format":
                check_size(format_size(target, rest))
            else:
                check_size(estimate_size(name, target, rest, kwargs))
        return charge_result(function(*args, **kwargs))

    return guarded
