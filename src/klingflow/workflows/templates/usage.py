"""What a template reads, found by walking jinja's AST: names, attribute paths, node ids.

Found from the syntax tree, not by regex, so `nodes['a'].output` and `nodes.a.output` are one
read. Validation checks these reads against the workflow (unknown names, nodes that do not
exist or have not run yet) before any money is spent; `references` lists the node ids a
parameter value reads.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jinja2
from jinja2 import meta
from jinja2 import nodes as jnodes

from klingflow.workflows.templates.sandbox import is_template, parse

__all__ = ["AccessPath", "TemplateUsage", "references", "template_usage"]

AccessPath = tuple[str | int, ...]


@dataclass(frozen=True)
class TemplateUsage:
    """What one template reads, found by walking jinja's AST (not by regex).

    `names` are the free top-level names; `paths` the constant attribute/item chains from a
    free name (`("nodes", "video", "output", "video_url")`), longest first within a chain;
    `has_dynamic_access` is true when some chain is indexed by a computed key
    (`nodes[name]`), which validation cannot follow. `syntax_error` is jinja's message.
    """

    names: frozenset[str] = frozenset()
    paths: frozenset[AccessPath] = frozenset()
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
        tree = parse(source)
    except jinja2.TemplateSyntaxError as error:
        return TemplateUsage(syntax_error=f"{error.message} (template line {error.lineno})")
    free = frozenset(meta.find_undeclared_variables(tree))
    paths: set[AccessPath] = set()
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
