"""`{{ }}` templates in workflow parameters: sandboxed, strict, and typed when they can be.

Workflow files come from users and from upstream data (a CSV cell, an AI reply), so
templates run in jinja2's immutable sandbox (`sandbox`), with limits on what one render may
build and how long it may run (`limits`). Undefined names are errors (StrictUndefined),
never silent blanks: a typo must not become an empty prompt that PiAPI bills for.

A value that is exactly one `{{ expression }}` keeps its native type (a list stays a list,
an int an int); anything else renders to a string (`rendering`). The names a template can
use, and the mapping that defines them, are in `context`; what a template reads, for
validation, is found by `usage`.
"""

import typing as _typing

# Loaded on first use (PEP 562): the run log's readers use `context` alone (a loop's output as
# a `LazyList`, an item's label context) and should not pay for jinja2 unless they render.
if _typing.TYPE_CHECKING:
    from klingflow.workflows.templates.context import (
        CONTEXT_NAMES,
        LOOP_ATTRIBUTES,
        LOOP_NAMES,
        NODE_ATTRIBUTES,
        LazyList,
        template_context,
    )
    from klingflow.workflows.templates.rendering import is_single_expression, render
    from klingflow.workflows.templates.sandbox import TEMPLATE_GLOBALS, is_template, slug
    from klingflow.workflows.templates.usage import TemplateUsage, references, template_usage

_HOMES = {
    "klingflow.workflows.templates.context": (
        "CONTEXT_NAMES", "LOOP_ATTRIBUTES", "LOOP_NAMES", "NODE_ATTRIBUTES", "LazyList",
        "template_context",
    ),
    "klingflow.workflows.templates.rendering": ("is_single_expression", "render"),
    "klingflow.workflows.templates.sandbox": ("TEMPLATE_GLOBALS", "is_template", "slug"),
    "klingflow.workflows.templates.usage": ("TemplateUsage", "references", "template_usage"),
}  # fmt: skip
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}

__all__ = [
    "CONTEXT_NAMES",
    "LOOP_ATTRIBUTES",
    "LOOP_NAMES",
    "NODE_ATTRIBUTES",
    "TEMPLATE_GLOBALS",
    "LazyList",
    "TemplateUsage",
    "is_single_expression",
    "is_template",
    "references",
    "render",
    "slug",
    "template_context",
    "template_usage",
]


def __getattr__(name: str) -> _typing.Any:
    import importlib

    if name not in _HOME_OF:
        raise AttributeError(f"module 'klingflow.workflows.templates' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOME_OF[name]), name)
    globals()[name] = value  # once loaded, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
