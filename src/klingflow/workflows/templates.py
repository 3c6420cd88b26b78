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

import functools
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import jinja2
from jinja2 import meta
from jinja2 import nodes as jnodes
from jinja2.environment import TemplateExpression
from jinja2.sandbox import ImmutableSandboxedEnvironment

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
"""Largest string or list a template may build with `*` (the sandbox's guard against DoS)."""
MAX_EXPONENT = 1_000

_MARKERS = ("{{", "{%", "{#")
_SLUG_DROP = re.compile(r"[^a-z0-9]+")


class _Sandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, plus size limits on `*` and `**` (e.g. `'x' * 10**10`)."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(
        self, context: jinja2.runtime.Context, operator: str, left: Any, right: Any
    ) -> Any:
        if operator == "**":
            if isinstance(right, int | float) and abs(right) > MAX_EXPONENT:
                raise jinja2.exceptions.SecurityError(f"exponent {right} is too large")
            return left**right
        for seq, times in ((left, right), (right, left)):
            sized = isinstance(seq, str | list | tuple) and isinstance(times, int)
            if sized and len(seq) * times > MAX_SEQUENCE_LENGTH:
                raise jinja2.exceptions.SecurityError("the result would be too large")
        return left * right


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
    if _single_expression(tree):
        # What `Environment.compile_expression` does, from the parsed node instead of text.
        output = tree.body[0]
        assert isinstance(output, jnodes.Output)
        store = jnodes.Assign(jnodes.Name("result", "store"), output.nodes[0], lineno=1)
        expression = TemplateExpression(
            _ENV.from_string(jnodes.Template([store], lineno=1)), undefined_to_none=False
        )
        return lambda context: _check_defined(expression(context))
    template = _ENV.from_string(tree)
    return lambda context: template.render(context)


# Errors an expression can raise on bad data ('a' + 1, 1 / 0, x[99]); translated to
# TemplateError with the node and field. Anything else is a bug and propagates.
_EXPRESSION_ERRORS = (
    jinja2.TemplateError,
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
    return TemplateUsage(names=free, paths=frozenset(paths), has_dynamic_access=dynamic)


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
