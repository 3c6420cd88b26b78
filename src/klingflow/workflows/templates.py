"""`{{ }}` templates in workflow parameters: sandboxed, strict, and typed when they can be.

Workflow files come from users and from upstream data (a CSV cell, an AI reply), so
templates run in jinja2's immutable sandbox: no Python internals, no mutating methods, no
giant `*`/`**` results. Undefined names are errors (StrictUndefined), never silent blanks:
a typo must not become an empty prompt that PiAPI bills for.

A value that is exactly one `{{ expression }}` keeps its native type (a list stays a list,
an int an int); anything else renders to a string. Compiled templates are cached by source,
because a 1,000-item loop renders the same few strings a thousand times.

Names a template can use: `trigger` (the raw trigger payload), `inputs` (resolved inputs),
`nodes.<id>.output`, and inside a loop body `item` and `loop.index` (0-based),
`loop.number` (1-based), `loop.length`. Build that mapping with `template_context`.
"""

from __future__ import annotations

import contextvars
import functools
import math
import re
import time
import unicodedata
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

import jinja2
from jinja2 import meta
from jinja2 import nodes as jnodes
from jinja2.environment import TemplateExpression
from jinja2.nodes import EvalContext
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer

from klingflow.errors import TemplateError

__all__ = [
    "CONTEXT_NAMES",
    "LOOP_ATTRIBUTES",
    "LOOP_NAMES",
    "NODE_ATTRIBUTES",
    "TEMPLATE_GLOBALS",
    "TemplateUsage",
    "is_single_expression",
    "is_template",
    "references",
    "render",
    "slug",
    "template_context",
    "template_usage",
]

CONTEXT_NAMES: Final = frozenset({"trigger", "inputs", "nodes"})
"""Top-level names every template can use."""
LOOP_NAMES: Final = frozenset({"item", "loop"})
"""Names defined only inside a loop body."""
LOOP_ATTRIBUTES: Final = frozenset({"index", "number", "length"})
"""`loop.index` is 0-based, `loop.number` 1-based, `loop.length` the item count."""
NODE_ATTRIBUTES: Final = frozenset({"output"})
"""What `nodes.<id>` exposes to templates."""

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

_MARKERS = ("{{", "{%", "{#")
_SLUG_DROP = re.compile(r"[^a-z0-9]+")
_FORMAT_NUMBERS = re.compile(r"\d+")


class _Budget:
    """What one render may still spend; shared by the nested renders of one value."""

    def __init__(self) -> None:
        self.work = 0
        self.iterations = 0
        self.deadline = time.monotonic() + MAX_TEMPLATE_SECONDS

    def charge(self, chars: int = 0, iterations: int = 0) -> None:
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


_BUDGET: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar(
    "klingflow_template_budget", default=None
)


def _budget() -> _Budget:
    budget = _BUDGET.get()
    if budget is None:  # a compiled template called outside `render` still gets limits
        budget = _Budget()
        _BUDGET.set(budget)
    return budget


def _too_large(size: int) -> None:
    if size > MAX_SEQUENCE_LENGTH:
        raise jinja2.exceptions.SecurityError(
            f"the result would be too large ({size:,} > {MAX_SEQUENCE_LENGTH:,})"
        )


def _charge_result(value: Any) -> Any:
    """Count what an operation made; refuse a value over the size limit or a huge integer."""
    if isinstance(value, str | list | tuple):
        _too_large(len(value))
        _budget().charge(len(value))
    elif isinstance(value, int) and not isinstance(value, bool):
        if value.bit_length() > MAX_INTEGER_BITS:
            raise jinja2.exceptions.SecurityError("the integer would be too large")
        _budget().charge()
    else:
        _budget().charge()
    return value


def _text_len(value: Any) -> int:
    return len(value) if isinstance(value, str) else len(str(value))


def _format_size(fmt: Any, args: Sequence[Any]) -> int:
    """An upper estimate of a `%`/`format` result: the widths it names plus its arguments."""
    text = str(fmt)
    widths = sum(int(n) for n in _FORMAT_NUMBERS.findall(text) if len(n) <= 9)
    if any(len(n) > 9 for n in _FORMAT_NUMBERS.findall(text)):
        return MAX_SEQUENCE_LENGTH + 1
    values = [*args] if not isinstance(args, Mapping) else list(args.values())
    numbers = sum(v for v in values if isinstance(v, int) and not isinstance(v, bool) and v > 0)
    return len(text) + widths + numbers + sum(_text_len(v) for v in values)


def _estimate(name: str, target: Any, args: Sequence[Any], kwargs: Mapping[str, Any]) -> int:
    """An upper estimate of what string operation `name` on `target` would build (0: no
    estimate needed, its result is checked after)."""
    for value in (*args, *kwargs.values()):
        if isinstance(value, int) and not isinstance(value, bool):
            _too_large(abs(value))  # a width, count or size argument
    if not isinstance(target, str):
        if name == "join" and isinstance(target, list | tuple):  # the join filter's input
            sep = str(args[0]) if args else str(kwargs.get("d", ""))
            return sum(_text_len(v) for v in target) + len(sep) * len(target)
        return 0
    if name == "replace" and len(args) >= 2:
        old, new = str(args[0]), str(args[1])
        count = len(target) + 1 if not old else target.count(old)
        return len(target) + count * max(0, len(new) - len(old))
    if name == "indent":
        width = args[0] if args else kwargs.get("width", 4)
        size = width if isinstance(width, int) else _text_len(width)
        return len(target) + size * (target.count("\n") + 1)
    if name == "expandtabs":
        size = args[0] if args and isinstance(args[0], int) else 8
        return len(target) + size * target.count("\t")
    if name == "join" and args and isinstance(args[0], str | list | tuple):
        items = args[0]  # a generator is left alone (estimating would consume it)
        return sum(_text_len(v) for v in items) + len(target) * len(items)
    if name in ("format", "format_map"):
        return _format_size(target, [*args, *kwargs.values()])
    return 0


def _guard_filter(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """A jinja filter with the size limits: its arguments checked first, its result after."""

    @functools.wraps(function)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        # Filters get (environment/context?, value, *args): the value is the first
        # non-jinja argument.
        values = [a for a in args if not isinstance(a, jinja2.Environment | Context | EvalContext)]
        if values:
            target, rest = values[0], values[1:]
            if name == "format":
                _too_large(_format_size(target, rest))
            else:
                _too_large(_estimate(name, target, rest, kwargs))
        return _charge_result(function(*args, **kwargs))

    return guarded


class _Sandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, plus limits on sizes, integers, loops and time (see the
    MAX_* constants), so a template can neither exhaust memory nor hang a worker."""

    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def call_binop(
        self, context: jinja2.runtime.Context, operator: str, left: Any, right: Any
    ) -> Any:
        _budget().charge()
        if operator == "**":
            if isinstance(right, int | float) and abs(right) > MAX_EXPONENT:
                raise jinja2.exceptions.SecurityError(f"exponent {right} is too large")
            ints = isinstance(left, int) and isinstance(right, int) and right > 0
            if ints and left.bit_length() * right > MAX_INTEGER_BITS:
                raise jinja2.exceptions.SecurityError("the integer would be too large")
            return _charge_result(left**right)
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                sized = isinstance(seq, str | list | tuple) and isinstance(times, int)
                if sized and len(seq) * times > MAX_SEQUENCE_LENGTH:
                    raise jinja2.exceptions.SecurityError("the result would be too large")
            ints = isinstance(left, int) and isinstance(right, int)
            if ints and left.bit_length() + right.bit_length() > MAX_INTEGER_BITS:
                raise jinja2.exceptions.SecurityError("the integer would be too large")
            return _charge_result(left * right)
        if operator == "+":
            if isinstance(left, str | list | tuple) and isinstance(right, str | list | tuple):
                _too_large(len(left) + len(right))
            return _charge_result(left + right)
        # "%": string formatting, or the remainder of numbers
        if isinstance(left, str):
            _too_large(_format_size(left, right if isinstance(right, tuple) else [right]))
        return _charge_result(left % right)

    def call(
        __self,  # jinja's own signature: the double prefixes avoid keyword clashes
        __context: Context,
        __obj: Any,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        _budget().charge()
        target = getattr(getattr(__obj, "__wrapped__", __obj), "__self__", None)
        name = getattr(__obj, "__name__", "")
        _too_large(_estimate(name, target, args, kwargs))
        return _charge_result(super().call(__context, __obj, *args, **kwargs))


def _bounded_iter(iterable: Any) -> Iterator[Any]:
    """What a `{% for %}` walks: every turn counts against the render's budget."""
    budget = _budget()
    for item in iterable:
        budget.charge(iterations=1)
        yield item


def _concat(*parts: Any) -> str:
    """`a ~ b`: the size checked before the string is built."""
    texts = [str(part) for part in parts]
    _too_large(sum(len(t) for t in texts))
    return cast(str, _charge_result("".join(texts)))


def _output(value: Any) -> Any:
    """Each `{{ }}` in text: its size counted, so a loop of big outputs stops early."""
    _budget().charge(_text_len(value) if not isinstance(value, jinja2.Undefined) else 0)
    return value


_HOOKS: Final = {"_kf_iter": _bounded_iter, "_kf_concat": _concat, "_kf_out": _output}


class _Bound(NodeTransformer):
    """Rewrites a parsed template so loops, `~` and outputs go through the budget hooks."""

    @staticmethod
    def _call(name: str, args: list[Any], lineno: int) -> jnodes.Call:
        return jnodes.Call(jnodes.Name(name, "load"), args, [], None, None, lineno=lineno)

    def visit_For(self, node: jnodes.For) -> jnodes.For:
        node = cast(jnodes.For, self.generic_visit(node))
        node.iter = self._call("_kf_iter", [node.iter], node.lineno)
        return node

    def visit_Concat(self, node: jnodes.Concat) -> jnodes.Call:
        node = cast(jnodes.Concat, self.generic_visit(node))
        return self._call("_kf_concat", list(node.nodes), node.lineno)

    def visit_Output(self, node: jnodes.Output) -> jnodes.Output:
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


_ENV: Final = _Sandbox(
    undefined=jinja2.StrictUndefined,
    autoescape=False,
    keep_trailing_newline=True,
    cache_size=0,  # we cache compiled callables ourselves, keyed by source
)
_ENV.filters["slug"] = slug
TEMPLATE_GLOBALS: Final = frozenset(_ENV.globals)
_ENV.filters.update({name: _guard_filter(name, f) for name, f in _ENV.filters.items()})
_ENV.globals.update(_HOOKS)
"""Jinja's own global names (`range`, `dict`, ...), usable in every template."""


def is_template(value: object) -> bool:
    """True for a string that contains template syntax (`{{`, `{%` or `{#`)."""
    return isinstance(value, str) and any(marker in value for marker in _MARKERS)


def _parse(source: str) -> jnodes.Template:
    return _ENV.parse(source)


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
        return _single_expression(_parse(source))
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
    tree = _parse(source)
    native = _single_expression(tree)
    tree = cast(jnodes.Template, _Bound().visit(tree))
    if native:
        # What `Environment.compile_expression` does, from the parsed node instead of text.
        output = tree.body[0]
        assert isinstance(output, jnodes.Output)
        value = output.nodes[0]
        if isinstance(value, jnodes.Call) and getattr(value.node, "name", "") == "_kf_out":
            value = value.args[0]  # a native value is returned, not printed
        store = jnodes.Assign(jnodes.Name("result", "store"), value, lineno=1)
        expression = TemplateExpression(
            _ENV.from_string(jnodes.Template([store], lineno=1)), undefined_to_none=False
        )
        return lambda context: _check_json(_check_defined(expression(context)))
    template = _ENV.from_string(tree)

    def text(context: Mapping[str, Any]) -> str:
        # Streamed, so a huge result stops at the limit instead of being joined first.
        parts: list[str] = []
        size = 0
        for chunk in template.generate(context):
            size += len(chunk)
            _too_large(size)
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
    if isinstance(value, list | tuple):
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
    if _BUDGET.get() is None:  # the outermost call: one budget for the whole value
        token = _BUDGET.set(_Budget())
        try:
            return render(value, context, node_id=node_id, field=field)
        finally:
            _BUDGET.reset(token)
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


def template_context(
    *,
    trigger: Mapping[str, Any],
    inputs: Mapping[str, Any],
    outputs: Mapping[str, Any],
    item: Any = None,
    index: int | None = None,
    length: int | None = None,
) -> dict[str, Any]:
    """The names templates see: `outputs` maps node ids to their outputs.

    Pass `index` (0-based) and `length` inside a loop body; `item` and `loop` exist only then.
    """
    context: dict[str, Any] = {
        "trigger": trigger,
        "inputs": inputs,
        "nodes": {node_id: {"output": output} for node_id, output in outputs.items()},
    }
    if index is not None:
        context["item"] = item
        context["loop"] = {"index": index, "number": index + 1, "length": length}
    return context


Path = tuple[str | int, ...]


@dataclass(frozen=True)
class TemplateUsage:
    """What one template reads, found by walking jinja's AST (not by regex).

    `names` are the free top-level names; `paths` the constant attribute/item chains from a
    free name (`("nodes", "video", "output", "video_url")`), longest first within a chain;
    `has_dynamic_access` is true when some chain is indexed by a computed key
    (`nodes[name]`), which validation cannot follow. `syntax_error` is jinja's message.
    """

    names: frozenset[str] = frozenset()
    paths: frozenset[Path] = frozenset()
    has_dynamic_access: bool = False
    syntax_error: str | None = None
    loads_templates: bool = False
    """`{% include %}`, `{% import %}`, `{% from %}` or `{% extends %}`: there is nothing to
    load (no template loader), so the render would fail."""


def _chain(node: jnodes.Node) -> tuple[jnodes.Node, list[str | int], bool]:
    """Unwind `a.b['c'][0]` into (root node, ['b', 'c', 0], whether a key was computed)."""
    parts: list[str | int] = []
    dynamic = False
    while True:
        if isinstance(node, jnodes.Getattr):
            parts.append(node.attr)
            node = node.node
        elif isinstance(node, jnodes.Getitem):
            if isinstance(node.arg, jnodes.Const) and isinstance(node.arg.value, str | int):
                parts.append(node.arg.value)
            else:
                parts.clear()  # only the part before the computed key is known
                dynamic = True
            node = node.node
        else:
            parts.reverse()
            return node, parts, dynamic


@functools.lru_cache(maxsize=4096)
def template_usage(source: str) -> TemplateUsage:
    """The names and attribute paths `source` reads (cached; never raises)."""
    try:
        tree = _parse(source)
    except jinja2.TemplateSyntaxError as error:
        return TemplateUsage(syntax_error=f"{error.message} (template line {error.lineno})")
    free = frozenset(meta.find_undeclared_variables(tree))
    paths: set[Path] = set()
    dynamic = False

    def visit(node: jnodes.Node) -> None:
        nonlocal dynamic
        if isinstance(node, jnodes.Getattr | jnodes.Getitem):
            root, parts, is_dynamic = _chain(node)
            if isinstance(root, jnodes.Name) and root.name in free:
                paths.add((root.name, *parts))
                dynamic = dynamic or is_dynamic
            # Keys computed inside the chain (`nodes[inputs.which]`) are templates too.
            inner: jnodes.Node = node
            while isinstance(inner, jnodes.Getattr | jnodes.Getitem):
                if isinstance(inner, jnodes.Getitem):
                    visit(inner.arg)
                inner = inner.node
            if not isinstance(inner, jnodes.Name):
                visit(inner)
            return
        if isinstance(node, jnodes.Name) and node.ctx == "load" and node.name in free:
            paths.add((node.name,))
        for child in node.iter_child_nodes():
            visit(child)

    visit(tree)
    loads = any(
        True
        for _ in tree.find_all((jnodes.Include, jnodes.Import, jnodes.FromImport, jnodes.Extends))
    )
    return TemplateUsage(
        names=free, paths=frozenset(paths), has_dynamic_access=dynamic, loads_templates=loads
    )


def _strings(value: Any) -> Sequence[str]:
    if isinstance(value, str):
        return [value] if is_template(value) else []
    if isinstance(value, Mapping):
        return [s for part in value.values() for s in _strings(part)]
    if isinstance(value, list | tuple):
        return [s for part in value for s in _strings(part)]
    return []


def references(value: Any) -> set[str]:
    """Node ids that the templates in `value` read through `nodes.<id>` (or `nodes['id']`).

    Templates with syntax errors contribute nothing; validation reports them.
    """
    found: set[str] = set()
    for source in _strings(value):
        for path in template_usage(source).paths:
            if len(path) >= 2 and path[0] == "nodes" and isinstance(path[1], str):
                found.add(path[1])
    return found
