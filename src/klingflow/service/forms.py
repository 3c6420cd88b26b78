"""The start-a-run form, generated from a workflow's declared inputs, and its parsing.

Every field round-trips: a refused form comes back with what the user typed and one message
per field, so nothing is lost and nothing is submitted (or paid for) until all inputs fit.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from starlette.datastructures import FormData

from klingflow.errors import WorkflowInputError
from klingflow.workflows.spec import InputSpec, Workflow

__all__ = ["FormField", "fields_for", "parse_form", "typed_values"]

Widget = Literal["text", "textarea", "integer", "number", "checkbox", "select", "json"]

_LONG_TEXT = ("prompt", "description", "text", "script", "message")


@dataclass(frozen=True)
class FormField:
    """One input as the template draws it; `value` is the text shown in the widget."""

    name: str
    widget: Widget
    required: bool
    description: str | None
    value: str
    checked: bool = False
    options: list[tuple[str, str]] = field(default_factory=list)
    """(submitted value, label) pairs of a select; values are JSON so types survive."""
    error: str | None = None


def _widget(name: str, spec: InputSpec) -> Widget:
    if spec.enum is not None:
        return "select"
    if spec.type == "string":
        return "textarea" if any(word in name.lower() for word in _LONG_TEXT) else "text"
    if spec.type in ("array", "object"):
        return "json"
    widgets: dict[str, Widget] = {"integer": "integer", "number": "number", "boolean": "checkbox"}
    return widgets[spec.type]


def _shown(widget: Widget, value: Any) -> str:
    """A value as its widget shows it (the default, before anything was typed)."""
    if value is None:
        return ""
    if widget in ("select", "json"):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def fields_for(
    workflow: Workflow,
    typed: Mapping[str, str] | None = None,
    errors: Mapping[str, str] | None = None,
) -> list[FormField]:
    """The form's fields: defaults first time, what the user typed after a refusal."""
    errors = errors or {}
    fields = []
    for name, spec in workflow.inputs.items():
        widget = _widget(name, spec)
        default = spec.default if spec.has_default else None
        if typed is None:
            value, checked = _shown(widget, default), default is True
        else:
            value, checked = typed.get(name, ""), name in typed
        options = [(json.dumps(o, ensure_ascii=False), str(o)) for o in spec.enum or []]
        fields.append(
            FormField(
                name=name,
                widget=widget,
                required=spec.required,
                description=spec.description,
                value=value,
                checked=checked,
                options=options,
                error=errors.get(name),
            )
        )
    return fields


def _parse(widget: Widget, text: str) -> Any:
    if widget in ("text", "textarea"):
        return text
    if widget == "integer":
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"must be a whole number, got {text!r}") from None
    if widget == "number":
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"must be a number, got {text!r}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"must be JSON ({error.msg} at column {error.colno})") from None


def parse_form(workflow: Workflow, form: FormData) -> tuple[dict[str, Any], dict[str, str]]:
    """(payload, errors by input name); the payload is only usable when errors is empty."""
    payload: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for name, spec in workflow.inputs.items():
        widget = _widget(name, spec)
        if widget == "checkbox":
            payload[name] = name in form
            continue
        raw = form.get(name)
        text = raw if isinstance(raw, str) else ""
        if text.strip() == "":
            continue  # the default applies, or "is required" below
        try:
            payload[name] = _parse(widget, text)
        except ValueError as error:
            errors[name] = str(error)
    try:
        workflow.resolve_inputs(payload)
    except WorkflowInputError as error:
        for field_path, message in error.problems:
            errors.setdefault(field_path.removeprefix("inputs."), message)
    return payload, errors


def typed_values(workflow: Workflow, form: FormData) -> dict[str, str]:
    """What the user typed, per input, to refill a refused form."""
    typed: dict[str, str] = {}
    for name in workflow.inputs:
        raw = form.get(name)
        if isinstance(raw, str):
            typed[name] = raw
    return typed
