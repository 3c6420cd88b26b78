"""Rendering: every template in a parameter value, against the names of one run.

A value that is exactly one `{{ expression }}` keeps its native type (a list stays a list,
an int an int) and must be JSON; anything else renders to a string. Compiled templates are
cached by source, because a 1,000-item loop renders the same few strings a thousand times.
Errors an expression can raise on bad data become one `TemplateError` naming the node and
the field, so a user sees which parameter of which node to fix.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from typing import Any, cast

import jinja2
from jinja2 import nodes as jnodes
from jinja2.environment import TemplateExpression

from klingflow.errors import TemplateError
from klingflow.workflows.templates.context import LazyList
from klingflow.workflows.templates.limits import BUDGET, MAX_INTEGER_BITS, Budget, check_size
from klingflow.workflows.templates.sandbox import (
    ENVIRONMENT,
    BudgetRewriter,
    is_template,
    parse,
)

__all__ = ["is_single_expression", "render"]


def _single_expression(tree: jnodes.Template) -> bool:
    if len(tree.body) != 1 or not isinstance(tree.body[0], jnodes.Output):
        return False
    parts = tree.body[0].nodes
    return len(parts) == 1 and not isinstance(parts[0], jnodes.TemplateData)


def is_single_expression(source: str) -> bool:
    """True when `source` is exactly one `{{ expression }}` (so it renders to a native value)."""
    if not is_template(source):
        return False
    try:
        return _single_expression(parse(source))
    except jinja2.TemplateSyntaxError:
        return False


def _check_defined(value: Any) -> Any:
    """Fail on undefined values a native expression returned, also inside lists and dicts."""
    if isinstance(value, jinja2.Undefined):
        str(value)  # StrictUndefined raises here with jinja's own message
    elif isinstance(value, list | tuple):
        for part in value:
            _check_defined(part)
    elif isinstance(value, dict):
        for part in value.values():
            _check_defined(part)
    return value


@functools.lru_cache(maxsize=4096)
def _compile(source: str) -> Callable[[Mapping[str, Any]], Any]:
    """The render function for one template string (cached: loops render the same strings)."""
    tree = parse(source)
    native = _single_expression(tree)
    tree = cast(jnodes.Template, BudgetRewriter().visit(tree))
    if native:
        # What `Environment.compile_expression` does, from the parsed node instead of text.
        output = tree.body[0]
        assert isinstance(output, jnodes.Output)
        value = output.nodes[0]
        if isinstance(value, jnodes.Call) and getattr(value.node, "name", "") == "_kf_out":
            value = value.args[0]  # a native value is returned, not printed
        store = jnodes.Assign(jnodes.Name("result", "store"), value, lineno=1)
        expression = TemplateExpression(
            ENVIRONMENT.from_string(jnodes.Template([store], lineno=1)), undefined_to_none=False
        )
        return lambda context: _check_json(_check_defined(expression(context)))
    template = ENVIRONMENT.from_string(tree)

    def text(context: Mapping[str, Any]) -> str:
        # Streamed, so a huge result stops at the limit instead of being joined first.
        parts: list[str] = []
        size = 0
        for chunk in template.generate(context):
            size += len(chunk)
            check_size(size)
            parts.append(chunk)
        return "".join(parts)

    return text


def _check_json(value: Any, depth: int = 0) -> Any:
    """A native value must be JSON: text, a finite number, true/false, null, a list or an
    object with text keys (a `range`, a macro or a loop object is not)."""
    if depth > 64:
        raise ValueError("the value is nested too deeply")
    if value is None or isinstance(value, str | bool):
        return value
    if isinstance(value, int):
        if value.bit_length() > MAX_INTEGER_BITS:
            raise ValueError("the integer is too large")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value} is not a finite number")
        return value
    if isinstance(value, list | tuple | LazyList):  # a lazy one becomes its list here
        return [_check_json(part, depth + 1) for part in value]
    if isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            raise ValueError("an object's keys must be text")
        return {key: _check_json(part, depth + 1) for key, part in value.items()}
    raise TypeError(
        f"the value is a {type(value).__name__}, not JSON (text, number, true/false, null, "
        "list or object); e.g. add `| list`"
    )


# Errors an expression can raise on bad data ('a' + 1, 1 / 0, x[99]); translated to
# TemplateError with the node and field. Anything else is a bug and propagates.
_EXPRESSION_ERRORS = (
    jinja2.TemplateError,
    RecursionError,  # a macro calling itself
    MemoryError,
    ArithmeticError,
    LookupError,
    TypeError,
    ValueError,
    AttributeError,
)


def render(value: Any, context: Mapping[str, Any], *, node_id: str | None, field: str) -> Any:
    """Render every template in `value` (recursing through dicts and lists) against `context`.

    Literals come back unchanged. Raises `TemplateError` naming `node_id` and the field path
    (`with.multi_shots[0].prompt`) for undefined names, bad expressions and sandbox refusals.
    """
    if BUDGET.get() is None:  # the outermost call: one budget for the whole value
        token = BUDGET.set(Budget())
        try:
            return render(value, context, node_id=node_id, field=field)
        finally:
            BUDGET.reset(token)
    if isinstance(value, str):
        if not is_template(value):
            return value
        try:
            return _compile(value)(context)
        except _EXPRESSION_ERRORS as error:
            raise TemplateError(_describe(error), node_id=node_id, field=field) from error
    if isinstance(value, Mapping):
        return {
            key: render(part, context, node_id=node_id, field=f"{field}.{key}")
            for key, part in value.items()
        }
    if isinstance(value, list | tuple):
        return [
            render(part, context, node_id=node_id, field=f"{field}[{index}]")
            for index, part in enumerate(value)
        ]
    return value


def _describe(error: Exception) -> str:
    if isinstance(error, jinja2.TemplateSyntaxError):
        return f"template syntax error: {error.message} (template line {error.lineno})"
    if isinstance(error, jinja2.exceptions.SecurityError):
        return f"refused by the sandbox: {error}"
    if isinstance(error, RecursionError):
        return "the template recursed too deeply (a macro calling itself?)"
    if isinstance(error, MemoryError):
        return "the template ran out of memory"
    if isinstance(error, jinja2.UndefinedError):
        return f"{error} (names: trigger, inputs, nodes.<id>.output; item, loop in loops)"
    return f"{type(error).__name__}: {error}"
