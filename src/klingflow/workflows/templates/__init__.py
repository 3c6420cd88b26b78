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

from klingflow._exports import lazy_exports as _lazy_exports

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
__getattr__, __dir__ = _lazy_exports(globals(), _HOMES)

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
