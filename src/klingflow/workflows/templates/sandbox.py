"""The sandboxed jinja2 environment every workflow template runs in.

jinja2's immutable sandbox (no Python internals, no mutating methods), with StrictUndefined
so a typo is an error and never an empty prompt PiAPI bills for, plus the limits of
`limits`: binary operators and calls are checked in the environment, and each parsed
template is rewritten (`BudgetRewriter`) so loops, `~` and outputs are charged as well.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from typing import Any, Final, cast

import jinja2
from jinja2 import nodes as jnodes
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer

from klingflow.workflows.templates.context import LazyList
from klingflow.workflows.templates.limits import (
    MAX_EXPONENT,
    MAX_INTEGER_BITS,
    MAX_SEQUENCE_LENGTH,
    charge_result,
    check_size,
    current_budget,
    estimate_size,
    format_size,
    guard_filter,
    text_length,
)

__all__ = [
    "ENVIRONMENT",
    "TEMPLATE_GLOBALS",
    "BudgetRewriter",
    "is_template",
    "parse",
    "slug",
]

_MARKERS = ("{{", "{%", "{#")
_SLUG_DROP = re.compile(r"[^a-z0-9]+")


class _Sandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, plus limits on sizes, integers, loops and time (see the
    MAX_* constants of `limits`), so a template can neither exhaust memory nor hang a worker."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def call_binop(
        self, context: jinja2.runtime.Context, operator: str, left: Any, right: Any
    ) -> Any:
        current_budget().charge()
        if operator == "**":
            if isinstance(right, int | float) and abs(right) > MAX_EXPONENT:
                raise jinja2.exceptions.SecurityError(f"exponent {right} is too large")
            ints = isinstance(left, int) and isinstance(right, int) and right > 0
            if ints and left.bit_length() * right > MAX_INTEGER_BITS:
                raise jinja2.exceptions.SecurityError("the integer would be too large")
            return charge_result(left**right)
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                sized = isinstance(seq, str | list | tuple) and isinstance(times, int)
                if sized and len(seq) * times > MAX_SEQUENCE_LENGTH:
                    raise jinja2.exceptions.SecurityError("the result would be too large")
            ints = isinstance(left, int) and isinstance(right, int)
            if ints and left.bit_length() + right.bit_length() > MAX_INTEGER_BITS:
                raise jinja2.exceptions.SecurityError("the integer would be too large")
            return charge_result(left * right)
        if operator == "+":
            if isinstance(left, str | list | tuple) and isinstance(right, str | list | tuple):
                check_size(len(left) + len(right))
            return charge_result(left + right)
        # "%": string formatting, or the remainder of numbers
        if isinstance(left, str):
            check_size(format_size(left, right if isinstance(right, tuple) else [right]))
        return charge_result(left % right)

    def call(
        __self,  # jinja's own signature: the double prefixes avoid keyword clashes
        __context: Context,
        __obj: Any,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        current_budget().charge()
        target = getattr(getattr(__obj, "__wrapped__", __obj), "__self__", None)
        name = getattr(__obj, "__name__", "")
        check_size(estimate_size(name, target, args, kwargs))
        return charge_result(super().call(__context, __obj, *args, **kwargs))


def _bounded_iter(iterable: Any) -> Iterator[Any]:
    """What a `{% for %}` walks: every turn counts against the render's budget."""
    budget = current_budget()
    for item in iterable:
        budget.charge(iterations=1)
        yield item


def _concat(*parts: Any) -> str:
    """`a ~ b`: the size checked before the string is built."""
    texts = [str(part) for part in parts]
    check_size(sum(len(t) for t in texts))
    return cast(str, charge_result("".join(texts)))


def _output(value: Any) -> Any:
    """Each `{{ }}` in text: its size counted, so a loop of big outputs stops early."""
    current_budget().charge(text_length(value) if not isinstance(value, jinja2.Undefined) else 0)
    return value


_HOOKS: Final = {"_kf_iter": _bounded_iter, "_kf_concat": _concat, "_kf_out": _output}


class BudgetRewriter(NodeTransformer):
    """Rewrites a parsed template so loops, `~` and outputs go through the budget hooks."""

    @staticmethod
    def _call(name: str, args: list[Any], lineno: int) -> jnodes.Call:
        return jnodes.Call(jnodes.Name(name, "load"), args, [], None, None, lineno=lineno)

    def visit_For(self, node: jnodes.For) -> jnodes.For:
        """`{% for x in xs %}` walks `_kf_iter(xs)`: each turn is counted."""
        node = cast(jnodes.For, self.generic_visit(node))
        node.iter = self._call("_kf_iter", [node.iter], node.lineno)
        return node

    def visit_Concat(self, node: jnodes.Concat) -> jnodes.Call:
        """`a ~ b` becomes `_kf_concat(a, b)`: sized before it is built."""
        node = cast(jnodes.Concat, self.generic_visit(node))
        return self._call("_kf_concat", list(node.nodes), node.lineno)

    def visit_Output(self, node: jnodes.Output) -> jnodes.Output:
        """Each `{{ x }}` in text prints `_kf_out(x)`: its size is charged."""
        node = cast(jnodes.Output, self.generic_visit(node))
        node.nodes = [
            part
            if isinstance(part, jnodes.TemplateData)
            else self._call("_kf_out", [part], node.lineno)
            for part in node.nodes
        ]
        return node


def slug(value: object, max_length: int = 64) -> str:
    """`"Red Fox, at dawn!"` -> `"red-fox-at-dawn"`: ASCII, lowercase, safe in file names."""
    text = unicodedata.normalize("NFKD", str(value)).encode("ascii", "ignore").decode()
    return _SLUG_DROP.sub("-", text.lower()).strip("-")[:max_length].rstrip("-")


def _lazy_json(value: object) -> object:
    """`tojson` of a list read on demand (`LazyList`): the list it stands for."""
    if isinstance(value, LazyList):
        return list(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


ENVIRONMENT: Final = _Sandbox(
    undefined=jinja2.StrictUndefined,
    autoescape=False,
    keep_trailing_newline=True,
    cache_size=0,  # we cache compiled callables ourselves, keyed by source
)
"""The one environment: templates are parsed, compiled and run only here."""
ENVIRONMENT.filters["slug"] = slug
ENVIRONMENT.policies["json.dumps_kwargs"] = {"sort_keys": True, "default": _lazy_json}
TEMPLATE_GLOBALS: Final = frozenset(ENVIRONMENT.globals)
"""Jinja's own global names (`range`, `dict`, ...), usable in every template."""
# Every filter, ours included, goes through the size limits; the hooks are added after
# TEMPLATE_GLOBALS is taken, so validation refuses a template that names them.
ENVIRONMENT.filters.update({name: guard_filter(name, f) for name, f in ENVIRONMENT.filters.items()})
ENVIRONMENT.globals.update(_HOOKS)


def is_template(value: object) -> bool:
    """True for a string that contains template syntax (`{{`, `{%` or `{#`)."""
    return isinstance(value, str) and any(marker in value for marker in _MARKERS)


def parse(source: str) -> jnodes.Template:
    """The syntax tree of `source`; raises `jinja2.TemplateSyntaxError`."""
    return ENVIRONMENT.parse(source)
