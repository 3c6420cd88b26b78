"""A workflow file as pydantic models: the contract between files, validation and the engine.

A workflow runs its `nodes` in order; a `loop` node runs its own `nodes` (the body) once per
item. Each node keeps its `with:` block raw, literals and `{{ }}` templates mixed, because
most values exist only at run time. `node.render_params(context)` renders the block and
validates it into the node type's `Params` model, so the engine never handles raw dicts and
a bad rendered value stops the node before anything is spent.

Loops do not nest: a durable fan-out inside a fan-out multiplies queues and checkpoints for
little gain. Put the inner loop in its own workflow instead.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from decimal import Decimal
from functools import cached_property
from typing import Annotated, Any, ClassVar, Literal, Self, TypeVar, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SerializeAsAny,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from klingflow.errors import InvalidRequestError, Problem, WorkflowInputError
from klingflow.payloads import payload_problems
from klingflow.piapi.kling import KlingRequest, KlingVideoRequest, parse_task_request
from klingflow.piapi.urls import check_url
from klingflow.problems import RELATIVE_RULE, problems_from
from klingflow.workflows import _cron
from klingflow.workflows.templates import render

__all__ = [
    "NODE_TYPES",
    "AIChatNode",
    "AIChatParams",
    "BodyNodeSpec",
    "ChatMessage",
    "DownloadNode",
    "DownloadParams",
    "HTTPRequestNode",
    "HTTPRequestParams",
    "InputSpec",
    "KlingGenerateVideoNode",
    "KlingGenerateVideoParams",
    "KlingVideoNode",
    "KlingVideoParams",
    "KlingWaitNode",
    "KlingWaitParams",
    "LoopNode",
    "LoopParams",
    "NodeParams",
    "NodeSpec",
    "PiAPITaskNode",
    "PiAPITaskParams",
    "ScheduleSpec",
    "SetNode",
    "SetParams",
    "Workflow",
    "WorkflowRetry",
]

NODE_ID_PATTERN = r"^[a-z][a-z0-9_]*$"
NAME_PATTERN = r"^[a-z0-9][a-z0-9-_]{1,63}$"
INPUT_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
NodeId = Annotated[str, StringConstraints(pattern=NODE_ID_PATTERN, max_length=64)]
WorkflowName = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
InputName = Annotated[str, StringConstraints(pattern=INPUT_NAME_PATTERN, max_length=64)]
InputType = Literal["string", "integer", "number", "boolean", "array", "object"]

P = TypeVar("P", bound="NodeParams")


def rule(field: str, message: str) -> PydanticCustomError:
    """A cross-field rule violation that names the field it is about, relative to the model
    raising it (`klingflow.problems` turns it into a problem)."""
    return PydanticCustomError(RELATIVE_RULE, "{message}", {"field": field, "message": message})


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


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


class InputSpec(_Strict):
    """One typed input, filled from the trigger payload by `Workflow.resolve_inputs`."""

    type: InputType = "string"
    required: bool = False
    default: Any = None
    description: str | None = None
    enum: list[Any] | None = Field(default=None, min_length=1)

    @property
    def has_default(self) -> bool:
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
        if self.has_default:
            if self.required:
                raise rule("required", "an input with a default cannot be required")
            if (problem := self.problem(self.default)) is not None:
                raise rule("default", problem)
        return self


# --- retries ----------------------------------------------------------------------------


class WorkflowRetry(_Strict):
    """How a node retries after a retryable error: capped exponential backoff.

    The pause after failed attempt n is `min(max_delay_seconds, initial_delay_seconds *
    factor ** (n - 1))`. Only errors whose `retryable` flag is set are retried; a generation
    that PiAPI reports as failed is resubmitted (and paid again) only with
    `retry_failed_generations: true`. A node's own `retry:` overrides the fields it sets.
    """

    attempts: int = Field(default=3, ge=1, le=5)
    initial_delay_seconds: float = Field(default=2.0, ge=0, le=3600)
    factor: float = Field(default=2.0, ge=1, le=10)
    max_delay_seconds: float = Field(default=60.0, ge=0, le=3600)
    retry_failed_generations: bool = False

    def delay_seconds(self, attempt: int) -> float:
        """Seconds to wait after failed attempt `attempt` (1-based) before the next one."""
        return min(
            self.max_delay_seconds, self.initial_delay_seconds * self.factor ** (attempt - 1)
        )

    def merged(self, override: WorkflowRetry | None) -> WorkflowRetry:
        """This policy with the fields `override` set explicitly replaced."""
        if override is None:
            return self
        return self.model_copy(
            update={name: getattr(override, name) for name in override.model_fields_set}
        )


# --- parameters (the rendered `with:` block of each node type) ---------------------------


MAX_FILE_NAME_BYTES = 255


def check_file_name(value: str | None) -> str | None:
    """A plain file name in the run's output folder: no folders, `..`, drive or backslash."""
    if value is None:
        return None
    if (
        not value.strip()
        or value.startswith("~")
        or any(mark in value for mark in ("/", "\\", ":", "\x00"))
        or value in (".", "..")
    ):
        raise ValueError(
            f"{value!r} must be a plain file name in the run's output folder "
            "(no '/', '..', '~', ':' or '\\')"
        )
    if len(value.encode("utf-8", "surrogatepass")) > MAX_FILE_NAME_BYTES:
        raise ValueError(f"must be at most {MAX_FILE_NAME_BYTES} bytes (file systems' limit)")
    return value


class NodeParams(_Strict):
    """Base of every node type's parameters: its `with:` block after rendering."""

    @classmethod
    def from_with(cls, data: Mapping[str, Any]) -> Self:
        """Validate a rendered `with:` block; `InvalidRequestError` lists every problem."""
        try:
            return cls.model_validate(data)
        except ValidationError as error:
            raise InvalidRequestError(problems_from(error, prefix="with")) from None


def request_input(data: Mapping[str, Any]) -> dict[str, Any]:
    """A Kling `input` as written in YAML, where `version: 3.0` is a number: made "3.0"."""
    result = dict(data)
    version = result.get("version")
    if isinstance(version, int | float) and not isinstance(version, bool):
        result["version"] = str(float(version))
    return result


def split_request(
    cls: type[NodeParams], data: Mapping[str, Any], request_keys: frozenset[str] | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a `with:` block into (the node's own keys, the request's keys).

    The node's own keys are its params fields besides `request`; the request's are
    `request_keys`, or every other key when None. Unknown keys stay with the node, whose
    model then reports them.
    """
    own_keys = frozenset(cls.model_fields) - {"request"}

    def is_request_key(key: str) -> bool:
        return key not in own_keys and (request_keys is None or key in request_keys)

    own = {k: v for k, v in data.items() if not is_request_key(k)}
    rest = {k: v for k, v in data.items() if is_request_key(k)}
    return own, rest


def _with_request(
    cls: type[P], own: dict[str, Any], build: Callable[[], KlingRequest], *, is_flat: bool
) -> P:
    """Validate `own` plus the request `build()` makes, collecting both sides' problems.

    `is_flat`: the request's fields sit directly under `with:` (`input.x` -> `with.x`).
    """
    problems: list[Problem] = []
    request: KlingRequest | None = None
    try:
        request = build()
    except InvalidRequestError as error:
        for field, message in error.problems:
            field = field.removeprefix("input.") if is_flat else field
            problems.append((f"with.{field}", message))
    try:
        stand_in = request if request is not None else _PLACEHOLDER_REQUEST
        params = cls.model_validate({**own, "request": stand_in})
    except ValidationError as error:
        problems = problems_from(error, prefix="with") + problems
    if problems:
        raise InvalidRequestError(problems)
    return params


_PLACEHOLDER_REQUEST = KlingVideoRequest(prompt="placeholder")


class _VideoParams(NodeParams):
    """Params whose request fields sit flat in `with:` and build a `KlingVideoRequest`."""

    request: KlingVideoRequest

    @classmethod
    def from_with(cls, data: Mapping[str, Any]) -> Self:
        own, rest = split_request(cls, data)
        return _with_request(
            cls, own, lambda: KlingVideoRequest.from_input(request_input(rest)), is_flat=True
        )


class KlingGenerateVideoParams(_VideoParams):
    """`kling.generate_video`, the seed action: submit one Kling video task and return at once.

    `with:` takes the seed's fields (`prompt`, `duration` as "5s" or 5, `model_name` as
    "Kling V2.1", `aspect_ratio`) and every `KlingVideoRequest` option (version, mode,
    enable_audio, prefer_multi_shots, multi_shots, negative_prompt, cfg_scale, image_url,
    image_tail_url, camera_control, elements); Kling's own rules apply, so `prompt` is
    required unless `multi_shots`, `image_url` or `elements` stand in. Output, as the seed
    returns it: `{"code": 200, "data": {"status": "pending", "task_id": "..."}}`.
    """


class KlingVideoParams(_VideoParams):
    """`kling.video`: generate, wait and download in one node.

    The `kling.generate_video` fields plus `download` (default true), `name` (the file name
    under the run's output folder; default: the task id) and `deadline_seconds` for the wait.
    Output: the finished task (`task_id`, `status`, `video_url`, `usage`, `cost_usd`) and
    `path`, the downloaded file's absolute path (None without download).
    """

    download: bool = True
    name: str | None = None
    deadline_seconds: float | None = Field(default=None, gt=0)

    _name = field_validator("name")(check_file_name)


class KlingWaitParams(NodeParams):
    """`kling.wait`: wait for a task to finish.

    Output: the finished task (`task_id`, `status`, `video_url`, `usage`, `cost_usd`).
    """

    task_id: str = Field(min_length=1)
    deadline_seconds: float | None = Field(default=None, gt=0)


class PiAPITaskParams(NodeParams):
    """`piapi.task`: any Kling task type (`model` + `task_type` + `input`, as PiAPI takes them).

    `request` is built with `parse_task_request`, so the client's rules apply. With `wait`
    (default) the output is the finished task; without, the seed's `{code, data}` shape.
    `download` (needs `wait`) saves every output file.
    """

    request: SerializeAsAny[KlingRequest]
    wait: bool = True
    download: bool = False
    deadline_seconds: float | None = Field(default=None, gt=0)

    REQUEST_KEYS: ClassVar[frozenset[str]] = frozenset({"model", "task_type", "input"})

    @model_validator(mode="after")
    def _download_needs_wait(self) -> Self:
        if self.download and not self.wait:
            raise rule("download", "needs wait: true (only a finished task has files)")
        return self

    @classmethod
    def from_with(cls, data: Mapping[str, Any]) -> Self:
        own, rest = split_request(cls, data, cls.REQUEST_KEYS)
        if isinstance(rest.get("input"), Mapping):
            rest["input"] = request_input(rest["input"])
        return _with_request(
            cls, own, lambda: parse_task_request({"model": "kling", **rest})[0], is_flat=False
        )


class DownloadParams(NodeParams):
    """`download`: fetch a URL into the run's output folder. Output: `{"path", "bytes"}`."""

    url: str
    name: str | None = None
    allow_private_network: bool = False
    """Allow loopback, private and link-local hosts (see nodes/egress.py)."""

    _url = field_validator("url")(check_url)
    _name = field_validator("name")(check_file_name)


class LoopParams(NodeParams):
    """`loop`: run the body once per item, at most `concurrency` items at a time.

    Output: a list with one entry per item, in item order: `{<body node id>: output}` for
    the body's nodes (None for a node skipped by its `if`).
    """

    items: list[Any]
    concurrency: int = Field(default=4, ge=1, le=100)


class ChatMessage(_Strict):
    """One message of an `ai.chat` conversation."""

    role: Literal["system", "user", "assistant"]
    content: str


class AIChatParams(NodeParams):
    """`ai.chat`: one OpenAI-compatible chat completion (the key comes from settings, never
    from the file). Give `prompt` or `messages`. Output: `{"text", "model", "usage"}`.
    """

    prompt: str | None = None
    messages: list[ChatMessage] | None = Field(default=None, min_length=1)
    model: str = "gpt-4o-mini"
    system: str | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1)
    base_url: str | None = None

    _url = field_validator("base_url")(check_url)

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.prompt is None) == (self.messages is None):
            raise rule("prompt", "give exactly one of prompt and messages")
        return self


class HTTPRequestParams(NodeParams):
    """`http.request`: one HTTP call. Output: `{"status_code", "headers", "json", "text"}`."""

    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"] = "GET"
    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    json_body: Any = Field(default=None, alias="json")
    timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    allow_private_network: bool = False
    """Allow loopback, private and link-local hosts (see nodes/egress.py)."""

    _url = field_validator("url")(check_url)

    @field_validator("method", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("headers")
    @classmethod
    def _one_line_headers(cls, value: dict[str, str]) -> dict[str, str]:
        """CR, LF or NUL in a header would split it (header injection): never sendable."""
        for name, text in value.items():
            if any(mark in name or mark in text for mark in ("\r", "\n", "\x00")):
                raise ValueError(f"header {name.strip()!r} contains CR, LF or NUL")
        return value


class SetParams(NodeParams):
    """`set`: name values for later nodes. Output: `values`, rendered."""

    values: dict[str, Any]


# --- nodes ------------------------------------------------------------------------------


class _Node(_Strict):
    """What every node has: an id, its raw `with:` block, an optional `if` and `retry`."""

    params_model: ClassVar[type[NodeParams]]

    id: NodeId
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    if_: bool | str | None = Field(default=None, alias="if")
    retry: WorkflowRetry | None = None

    def should_run(self, context: Mapping[str, Any]) -> bool:
        """Whether `if` holds in `context` (no `if`: always). Raises `TemplateError`.

        Validation makes sure a string `if` is one `{{ expression }}`, so it renders to a value
        (usually a bool), not to text that would always be truthy.
        """
        if self.if_ is None:
            return True
        return bool(render(self.if_, context, node_id=self.id, field="if"))

    def render_params(self, context: Mapping[str, Any]) -> NodeParams:
        """`with:` rendered in `context` and validated (`TemplateError`, `InvalidRequestError`)."""
        return self._render(self.params_model, context)

    def _render(self, model: type[P], context: Mapping[str, Any]) -> P:
        rendered = render(self.with_, context, node_id=self.id, field="with")
        try:
            return model.from_with(rendered)
        except InvalidRequestError as error:
            named = [(f"nodes.{self.id}.{field}", message) for field, message in error.problems]
            raise InvalidRequestError(named) from None


class KlingGenerateVideoNode(_Node):
    """A node whose `with:` block becomes `KlingGenerateVideoParams`."""

    params_model: ClassVar[type[NodeParams]] = KlingGenerateVideoParams
    type: Literal["kling.generate_video"]

    def render_params(self, context: Mapping[str, Any]) -> KlingGenerateVideoParams:
        return self._render(KlingGenerateVideoParams, context)


class KlingWaitNode(_Node):
    """A node whose `with:` block becomes `KlingWaitParams`."""

    params_model: ClassVar[type[NodeParams]] = KlingWaitParams
    type: Literal["kling.wait"]

    def render_params(self, context: Mapping[str, Any]) -> KlingWaitParams:
        return self._render(KlingWaitParams, context)


class KlingVideoNode(_Node):
    """A node whose `with:` block becomes `KlingVideoParams`."""

    params_model: ClassVar[type[NodeParams]] = KlingVideoParams
    type: Literal["kling.video"]

    def render_params(self, context: Mapping[str, Any]) -> KlingVideoParams:
        return self._render(KlingVideoParams, context)


class PiAPITaskNode(_Node):
    """A node whose `with:` block becomes `PiAPITaskParams`."""

    params_model: ClassVar[type[NodeParams]] = PiAPITaskParams
    type: Literal["piapi.task"]

    def render_params(self, context: Mapping[str, Any]) -> PiAPITaskParams:
        return self._render(PiAPITaskParams, context)


class DownloadNode(_Node):
    """A node whose `with:` block becomes `DownloadParams`."""

    params_model: ClassVar[type[NodeParams]] = DownloadParams
    type: Literal["download"]

    def render_params(self, context: Mapping[str, Any]) -> DownloadParams:
        return self._render(DownloadParams, context)


class AIChatNode(_Node):
    """A node whose `with:` block becomes `AIChatParams`."""

    params_model: ClassVar[type[NodeParams]] = AIChatParams
    type: Literal["ai.chat"]

    def render_params(self, context: Mapping[str, Any]) -> AIChatParams:
        return self._render(AIChatParams, context)


class HTTPRequestNode(_Node):
    """A node whose `with:` block becomes `HTTPRequestParams`."""

    params_model: ClassVar[type[NodeParams]] = HTTPRequestParams
    type: Literal["http.request"]

    def render_params(self, context: Mapping[str, Any]) -> HTTPRequestParams:
        return self._render(HTTPRequestParams, context)


class SetNode(_Node):
    """A node whose `with:` block becomes `SetParams`."""

    params_model: ClassVar[type[NodeParams]] = SetParams
    type: Literal["set"]

    def render_params(self, context: Mapping[str, Any]) -> SetParams:
        return self._render(SetParams, context)


BodyNodeSpec = Annotated[
    KlingGenerateVideoNode
    | KlingWaitNode
    | KlingVideoNode
    | PiAPITaskNode
    | DownloadNode
    | AIChatNode
    | HTTPRequestNode
    | SetNode,
    Field(discriminator="type"),
]
"""A node that may appear in a loop body (any node but a loop)."""


class LoopNode(_Node):
    """A node whose `with:` block becomes `LoopParams`."""

    params_model: ClassVar[type[NodeParams]] = LoopParams
    type: Literal["loop"]
    nodes: list[BodyNodeSpec] = Field(min_length=1)
    label: str | None = Field(default=None, max_length=1000)
    """A template that names each item in the run's tables (`"{{ item.title }}"`), with
    `item`, `loop`, `inputs` and `trigger` in scope; unset, an item is named by its `label`,
    `title`, `name`, `prompt` or `slug` field."""

    def render_params(self, context: Mapping[str, Any]) -> LoopParams:
        """`items` and `concurrency`, rendered in the context outside the loop."""
        return self._render(LoopParams, context)


NodeSpec = Annotated[
    KlingGenerateVideoNode
    | KlingWaitNode
    | KlingVideoNode
    | PiAPITaskNode
    | DownloadNode
    | AIChatNode
    | HTTPRequestNode
    | SetNode
    | LoopNode,
    Field(discriminator="type"),
]
"""Any node, told apart by its `type`."""

NODE_TYPES: dict[str, type[_Node]] = {
    get_args(cls.model_fields["type"].annotation)[0]: cls
    for cls in (
        KlingGenerateVideoNode,
        KlingWaitNode,
        KlingVideoNode,
        PiAPITaskNode,
        DownloadNode,
        LoopNode,
        AIChatNode,
        HTTPRequestNode,
        SetNode,
    )
}
"""`type:` value -> node class (its `params_model` validates the rendered `with:`)."""


# --- schedules --------------------------------------------------------------------------


class ScheduleSpec(_Strict):
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


class Workflow(_Strict):
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
        # The loader passes where the data came from as validation context, so that checks
        # run later (validate_workflow) can still name lines.
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
