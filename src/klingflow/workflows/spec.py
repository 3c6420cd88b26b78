"""A workflow file as pydantic models: the contract between files, validation and the engine.

A workflow runs its `nodes` in order; a `loop` node runs its own `nodes` (the body) once per
item. The nodes themselves, one module per kind, are in `klingflow.workflows.nodes`; this
module holds what belongs to the workflow as a whole: its typed `inputs:`, its `retry:`
default, its cron `schedules:` and its `outputs:`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections.abc import Iterator, Mapping
from datetime import datetime
from decimal import Decimal
from functools import cached_property
from typing import Annotated, Any, Literal, Self

from pydantic import Field, PrivateAttr, StringConstraints, field_validator, model_validator

from klingflow.errors import Problem, WorkflowInputError
from klingflow.payloads import payload_problems
from klingflow.workflows import _cron
from klingflow.workflows._strict import Strict, rule
from klingflow.workflows.nodes import NodeSpec
from klingflow.workflows.nodes.base import NodeId
from klingflow.workflows.nodes.loop import LoopNode
from klingflow.workflows.retries import WorkflowRetry
from klingflow.workflows.templates import render

__all__ = ["InputSpec", "ScheduleSpec", "Workflow"]

NAME_PATTERN = r"^[a-z0-9][a-z0-9-_]{1,63}$"
INPUT_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
WorkflowName = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
InputName = Annotated[str, StringConstraints(pattern=INPUT_NAME_PATTERN, max_length=64)]
InputType = Literal["string", "integer", "number", "boolean", "array", "object"]


# --- inputs -----------------------------------------------------------------------------


def type_problem(kind: InputType, value: Any) -> str | None:
    """Why `value` is not of input type `kind`, or None. Booleans are not numbers here."""
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    ok = {
        "string": isinstance(value, str),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "number": is_number and math.isfinite(value),
        "boolean": isinstance(value, bool),
        "array": isinstance(value, list | tuple),
        "object": isinstance(value, Mapping),
    }[kind]
    return None if ok else f"must be {'an' if kind[0] in 'aio' else 'a'} {kind}, got {value!r}"


class InputSpec(Strict):
    """One typed input, filled from the trigger payload by `Workflow.resolve_inputs`."""

    type: InputType = "string"
    required: bool = False
    default: Any = None
    description: str | None = None
    enum: list[Any] | None = Field(default=None, min_length=1)
    secret: bool = False
    """A credential (a token for an `http.request` header): its value is shown and stored
    as `***` everywhere (API, CLI, pages, the run log, DBOS) and kept for the run sealed
    with the PiAPI key (workflows/secret_inputs.py); templates still read the real value."""

    @property
    def has_default(self) -> bool:
        """Whether the file gives a default (even `default: null`, which is a value here)."""
        return "default" in self.model_fields_set

    def problem(self, value: Any) -> str | None:
        """Why `value` does not fit this input (type, then enum), or None."""
        if (kind := type_problem(self.type, value)) is not None:
            return kind
        if self.enum is not None and value not in self.enum:
            return f"must be one of {', '.join(map(repr, self.enum))}, got {value!r}"
        return None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        for index, option in enumerate(self.enum or []):
            if (kind := type_problem(self.type, option)) is not None:
                raise rule(f"enum[{index}]", kind)
        if self.secret:
            if self.type != "string":
                raise rule("secret", "only a string input can be secret")
            if self.has_default or self.enum is not None:
                raise rule("secret", "a secret input can have no default or enum: the file "
                           "would hold the secret")  # fmt: skip
        if self.has_default:
            if self.required:
                raise rule("required", "an input with a default cannot be required")
            if (problem := self.problem(self.default)) is not None:
                raise rule("default", problem)
        return self


# --- schedules --------------------------------------------------------------------------


class ScheduleSpec(Strict):
    """One cron schedule: a run of the workflow at every tick, with `payload` as its trigger.

    `cron` is read in `timezone` (an IANA name). The payload is checked against the
    workflow's `inputs:` by `validate_workflow`, so a schedule that could not start is refused
    when the file is validated or published. `name` identifies the schedule in the runs'
    idempotency keys; without it, its content does (see `key`), never its position.
    """

    cron: str
    timezone: str = "UTC"
    payload: dict[str, Any] = Field(default_factory=dict)
    name: NodeId | None = None

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        if (problem := _cron.cron_problem(value)) is not None:
            raise ValueError(problem)
        return value

    @field_validator("timezone")
    @classmethod
    def _valid_timezone(cls, value: str) -> str:
        if (problem := _cron.timezone_problem(value)) is not None:
            raise ValueError(problem)
        return value

    def ticks(self, *, after: datetime, until: datetime) -> Iterator[datetime]:
        """Every tick in (after, until], in order, as aware UTC datetimes."""
        return _cron.ticks(self.cron, self.timezone, after=after, until=until)

    def next_tick(self, *, after: datetime) -> datetime | None:
        """The first tick after `after` (aware UTC), or None when none is left."""
        return _cron.next_tick(self.cron, self.timezone, after=after)

    def key(self) -> str:
        """This schedule's part of its runs' idempotency keys: `name`, else `content_key`.

        Not its list position: a position changes when the schedules are reordered, so two
        versions firing at once could pay for a tick twice.
        """
        return self.name if self.name is not None else self.content_key

    @cached_property
    def content_key(self) -> str:
        """`cron-` and 8 hex digits of the sha256 of the cron expression (spaces normalised),
        timezone and payload as canonical JSON: the same in every version that has this
        schedule, wherever it sits in the list. (A name cannot contain `-`, so the two never
        collide.)"""
        data = self.model_dump(mode="json", include={"timezone", "payload"})
        data["cron"] = " ".join(self.cron.split())
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return "cron-" + hashlib.sha256(canonical.encode()).hexdigest()[:8]


# --- the workflow -----------------------------------------------------------------------


class Workflow(Strict):
    """A workflow file, validated. Build it with `load_workflow` to get line numbers in errors.

    Iterate `nodes` for the top-level flow; a `LoopNode` carries its body in `.nodes`.
    `walk()` yields every node with its enclosing loop. `schedules` start runs on their own
    once the workflow is published (`klingflow.workflows.schedules`).
    """

    name: WorkflowName
    description: str | None = None
    inputs: dict[InputName, InputSpec] = Field(default_factory=dict)
    retry: WorkflowRetry = Field(default_factory=WorkflowRetry)
    budget_usd: Decimal | None = Field(default=None, gt=0)
    nodes: list[NodeSpec] = Field(min_length=1)
    outputs: dict[str, Any] = Field(default_factory=dict)
    schedules: list[ScheduleSpec] = Field(default_factory=list)

    _source_path: str | None = PrivateAttr(default=None)
    _lines: Mapping[tuple[str | int, ...], int] = PrivateAttr(default_factory=dict)

    def model_post_init(self, context: Any, /) -> None:
        """Keep where the data came from (the loader's validation context), so that checks
        run later (`validate_workflow`) can still name lines."""
        if isinstance(context, Mapping):
            self._source_path = context.get("source_path")
            self._lines = context.get("lines") or {}

    @property
    def source_path(self) -> str | None:
        """The file this workflow was loaded from, as the caller named it."""
        return self._source_path

    def line_of(self, path: tuple[str | int, ...]) -> int | None:
        """The 1-based source line of the value at a data path such as `("nodes", 0, "with")`,
        or of its closest ancestor; None when the workflow did not come from a file.
        """
        for end in range(len(path), -1, -1):
            if (line := self._lines.get(path[:end])) is not None:
                return line
        return None

    @cached_property
    def content_hash(self) -> str:
        """sha256 of the canonical JSON of the spec (defaults included): the run's version."""
        data = self.model_dump(mode="json", by_alias=True)
        if not self.schedules:  # files without schedules keep the hash they had before them
            del data["schedules"]
        for node in data["nodes"]:  # and loops without a label the hash they had before it
            if node.get("type") == "loop" and node.get("label") is None:
                node.pop("label", None)
        for spec in data["inputs"].values():  # and inputs not secret the hash they had
            if spec.get("secret") is False:
                spec.pop("secret")
        canonical = json.dumps(
            data,
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
        )
        return hashlib.sha256(canonical.encode()).hexdigest()

    def walk(self) -> Iterator[tuple[NodeSpec, LoopNode | None]]:
        """Every node in run order, each with the loop it is in (None at the top level)."""
        for node in self.nodes:
            yield node, None
            if isinstance(node, LoopNode):
                for inner in node.nodes:
                    yield inner, node

    @property
    def node_count(self) -> int:
        """How many nodes the workflow has, loop bodies included."""
        return sum(1 for _ in self.walk())

    def node(self, node_id: str) -> NodeSpec:
        """The node with this id, wherever it is (KeyError if none)."""
        for node, _ in self.walk():
            if node.id == node_id:
                return node
        raise KeyError(node_id)

    def retry_for(self, node: NodeSpec) -> WorkflowRetry:
        """The node's retry policy: the workflow's, then its loop's, then its own overrides."""
        loop = next((parent for inner, parent in self.walk() if inner is node), None)
        policy = self.retry.merged(loop.retry if loop is not None else None)
        return policy.merged(node.retry)

    def resolve_inputs(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """The declared inputs from a trigger payload: defaults applied, types checked.

        An optional input without a default resolves to None. Keys the payload has beyond
        the declared inputs are ignored here (templates still read them as `trigger.*`).
        Raises `WorkflowInputError` listing every problem; the payload as a whole first
        (see `payloads`: no NUL, lone surrogate, deep nesting or huge integer anywhere).
        """
        resolved: dict[str, Any] = {}
        problems: list[Problem] = payload_problems(dict(payload))
        if problems:  # text no database can store: nothing below is worth checking
            raise WorkflowInputError(problems, workflow_name=self.name)
        for name, spec in self.inputs.items():
            if name in payload and payload[name] is not None:
                value = payload[name]
                if (problem := spec.problem(value)) is not None:
                    problems.append((f"inputs.{name}", problem))
                resolved[name] = value
            elif spec.has_default:
                resolved[name] = copy.deepcopy(spec.default)  # a fresh copy per run
            elif spec.required:
                problems.append((f"inputs.{name}", "is required"))
            else:
                resolved[name] = None
        if problems:
            raise WorkflowInputError(problems, workflow_name=self.name)
        return resolved

    def render_outputs(self, context: Mapping[str, Any]) -> dict[str, Any]:
        """The `outputs:` mapping rendered in the finished run's context."""
        return {
            key: render(value, context, node_id=None, field=f"outputs.{key}")
            for key, value in self.outputs.items()
        }
