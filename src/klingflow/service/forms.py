"""The start-a-run form, generated from a workflow's declared inputs, and its parsing.

Every field round-trips: a refused form comes back with what the user typed and one message
per field, so nothing is lost and nothing is submitted (or paid for) until all inputs fit.
An array input also takes a spreadsheet export (CSV, JSON Lines, JSON/YAML): its rows
replace the JSON text, and come back as that text with a preview, since a browser cannot
refill a file input.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any, Literal

from starlette.datastructures import FormData, UploadFile

from klingflow.errors import InvalidRequestError, WorkflowInputError
from klingflow.workflows.inputs import json_from_text, value_from_text
from klingflow.workflows.spec import InputSpec, Workflow
from klingflow.workflows.tables import TABLE_SUFFIXES, coerce_row, parse_table_bytes

__all__ = [
    "FILE_SUFFIX",
    "MAX_UPLOAD_BYTES",
    "FormField",
    "Upload",
    "fields_for",
    "parse_form",
    "read_uploads",
    "typed_values",
]

FILE_SUFFIX = "__file"
"""An array input `rows` takes its file in the field `rows__file`."""
MAX_UPLOAD_BYTES = 20 * 1024 * 1024
"""A spreadsheet of prompts is kilobytes; this stops a wrong file before it fills memory."""
PREVIEW_ROWS = 5

Widget = Literal["text", "textarea", "integer", "number", "checkbox", "select", "json", "password"]

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
    is_table: bool = False
    """An array input: it also takes a file of rows (and the browser may not insist on the
    JSON text, which the file replaces)."""
    upload: Upload | None = None


@dataclass(frozen=True)
class Upload:
    """The rows a file gave an array input, typed, and what the preview shows of them."""

    filename: str
    rows: list[Any]

    @property
    def columns(self) -> list[str]:
        """The preview's column names, in the order the rows first use them."""
        seen: dict[str, None] = {}
        for row in self.rows[:PREVIEW_ROWS]:
            if isinstance(row, dict):
                seen.update(dict.fromkeys(map(str, row)))
        return list(seen)

    @property
    def preview(self) -> list[Any]:
        """The first rows, enough to see the file was read as intended."""
        return self.rows[:PREVIEW_ROWS]

    def cell(self, row: Any, column: str) -> str:
        """A preview cell as text: text as it is, other values as JSON."""
        value = row.get(column, "") if isinstance(row, dict) else row
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


async def read_uploads(
    workflow: Workflow, form: FormData
) -> tuple[dict[str, Upload], dict[str, str]]:
    """(rows by array input, errors by input) from the files chosen on the form; each row
    is typed as the CLI's `--rows` types it (`tables.coerce_row`). Closes the form's files
    (its text fields stay readable)."""
    try:
        return await _read_uploads(workflow, form)
    finally:
        await form.close()


async def _read_uploads(
    workflow: Workflow, form: FormData
) -> tuple[dict[str, Upload], dict[str, str]]:
    uploads: dict[str, Upload] = {}
    errors: dict[str, str] = {}
    for name, spec in workflow.inputs.items():
        raw = form.get(name + FILE_SUFFIX)
        if spec.type != "array" or not isinstance(raw, UploadFile) or not raw.filename:
            continue
        filename = PurePath(raw.filename).name
        suffix = PurePath(filename).suffix.lower()
        if suffix not in TABLE_SUFFIXES:
            errors[name] = f"takes a {', '.join(TABLE_SUFFIXES)} file, got {filename!r}"
            continue
        data = await raw.read(MAX_UPLOAD_BYTES + 1)
        if len(data) > MAX_UPLOAD_BYTES:
            errors[name] = f"file {filename!r} is over {MAX_UPLOAD_BYTES // 2**20} MB"
            continue
        try:
            rows = parse_table_bytes(data, suffix=suffix, source=filename)
        except InvalidRequestError as error:
            errors[name] = "; ".join(f"{where} {why}" for where, why in error.problems)
            continue
        if not rows:
            errors[name] = f"file {filename!r} has no rows"
            continue
        typed = [coerce_row(workflow, r) if isinstance(r, dict) else r for r in rows]
        uploads[name] = Upload(filename, typed)
    return uploads, errors


def _widget(name: str, spec: InputSpec) -> Widget:
    if spec.secret:
        return "password"  # typed unseen, and never sent back to the page
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
    uploads: Mapping[str, Upload] | None = None,
) -> list[FormField]:
    """The form's fields: defaults first time, what the user typed after a refusal."""
    errors = errors or {}
    uploads = uploads or {}
    fields = []
    for name, spec in workflow.inputs.items():
        widget = _widget(name, spec)
        default = spec.default if spec.has_default else None
        if typed is None:
            value, checked = _shown(widget, default), default is True
        elif widget == "password":  # a refused form asks for the secret again
            value, checked = "", False
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
                is_table=spec.type == "array",
                upload=uploads.get(name),
            )
        )
    return fields


def _parse(widget: Widget, spec: InputSpec, text: str) -> Any:
    """A field's text as its input's value, by the rule CSV cells follow too; a select
    submits its option as JSON, so an option's type survives the form."""
    if widget == "select":
        return json_from_text(text)
    return value_from_text(spec.type, text)


def parse_form(
    workflow: Workflow, form: FormData, uploads: Mapping[str, Upload] | None = None
) -> tuple[dict[str, Any], dict[str, str]]:
    """(payload, errors by input name); the payload is only usable when errors is empty.
    An uploaded file's rows take the place of its input's JSON text."""
    payload: dict[str, Any] = {}
    errors: dict[str, str] = {}
    uploads = uploads or {}
    for name, spec in workflow.inputs.items():
        widget = _widget(name, spec)
        if widget == "checkbox":
            payload[name] = name in form
            continue
        if name in uploads:
            payload[name] = uploads[name].rows
            continue
        raw = form.get(name)
        text = raw if isinstance(raw, str) else ""
        if text.strip() == "":
            continue  # the default applies, or "is required" below
        try:
            payload[name] = _parse(widget, spec, text)
        except ValueError as error:
            errors[name] = str(error)
    try:
        workflow.resolve_inputs(payload)
    except WorkflowInputError as error:
        for field_path, message in error.problems:
            errors.setdefault(field_path.removeprefix("inputs."), message)
    return payload, errors


def typed_values(
    workflow: Workflow, form: FormData, uploads: Mapping[str, Upload] | None = None
) -> dict[str, str]:
    """What the user typed, per input, to refill a refused form (an upload as JSON text)."""
    typed: dict[str, str] = {}
    uploads = uploads or {}
    for name in workflow.inputs:
        raw = form.get(name)
        if name in uploads:
            typed[name] = json.dumps(uploads[name].rows, ensure_ascii=False)
        elif isinstance(raw, str):
            typed[name] = raw
    return typed
