"""Every check that can run before a workflow starts, so a broken file costs nothing.

Pydantic checks the file's shape while loading; this module checks what needs the whole
workflow: unique node ids; templates that parse and read only names that will exist (earlier
nodes, declared inputs, `item`/`loop` inside loops); literal parameters against the rules
the client applies before submitting; and schedule payloads against `inputs:`. A Kling
request PiAPI would reject is reported here, with its line, instead of failing after the
nodes before it were paid for; a schedule that could never start, before it is published.

Templated values are unknown until run time, so literal checks never blame them: a Kling
node is checked against several stand-ins for its templated fields (each version, with and
without an image...), and only problems every stand-in shares are reported.
"""

from __future__ import annotations

import difflib
import functools
import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, get_args

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from klingflow.errors import InvalidRequestError, WorkflowInputError, WorkflowProblem
from klingflow.piapi.kling import REQUEST_TYPES, KlingVideoRequest, parse_task_request
from klingflow.problems import UNKNOWN_FIELD, Issue, Path, issue_from, split_field
from klingflow.workflows.estimate import estimate_run
from klingflow.workflows.nodes import NODE_TYPES, NodeSpec
from klingflow.workflows.nodes.base import NODE_ID_PATTERN
from klingflow.workflows.nodes.kling_requests import (
    PLACEHOLDER_REQUEST,
    VideoParams,
    request_input,
    split_request,
)
from klingflow.workflows.nodes.loop import LoopNode
from klingflow.workflows.nodes.piapi_task import PiAPITaskParams
from klingflow.workflows.spec import INPUT_NAME_PATTERN, NAME_PATTERN, Workflow
from klingflow.workflows.templates import (
    CONTEXT_NAMES,
    LOOP_ATTRIBUTES,
    LOOP_NAMES,
    NODE_ATTRIBUTES,
    TEMPLATE_GLOBALS,
    is_single_expression,
    is_template,
    template_usage,
)

__all__ = [
    "MISSING",
    "Issue",
    "Path",
    "check_params",
    "child",
    "format_field",
    "pydantic_issue",
    "suggest",
    "validate_workflow",
]

_PATTERN_MESSAGES: Final = {
    NODE_ID_PATTERN: "must start with a lowercase letter and use only a-z, 0-9 and _",
    NAME_PATTERN: "must be 2-64 characters of a-z, 0-9, '-' and '_', starting with a-z or 0-9",
    INPUT_NAME_PATTERN: "must be an identifier (letters, digits and _)",
}
_URL: Final = "https://example.invalid/placeholder.png"
_OMIT: Final = object()
MISSING: Final = object()
"""What `child` returns for a key or index that is not there."""
_VERSIONS: Final = get_args(KlingVideoRequest.model_fields["version"].annotation)
# Stand-ins for templated Kling fields; the first is the default, other values flip the
# cross-field rules (text- vs image-to-video, multi-shot, elements) the other way.
_STAND_INS: Final[dict[str, list[Any]]] = {
    "prompt": ["placeholder"],
    "image_url": [_OMIT, _URL],
    "image_tail_url": [_OMIT, _URL],
    "multi_shots": [_OMIT, [{"prompt": "placeholder", "duration": 5}]],
    "elements": [_OMIT, [{"image_url": _URL}]],
    "version": sorted(
        _VERSIONS, key=lambda v: v != KlingVideoRequest.model_fields["version"].default
    ),
}


def format_field(parts: Iterable[str | int]) -> str:
    """`("with", "multi_shots", 0, "prompt")` -> `"with.multi_shots[0].prompt"`."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def suggest(word: object, choices: Iterable[str]) -> str:
    """`" (did you mean 'x'?)"` for the closest choice, or "" when none is close."""
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def pydantic_issue(error: ErrorDetails) -> Issue:
    """A workflow file's pydantic error as (path, plain message); patterns said in words.
    (Not the executor's `error_record`, which records a node's failure.)"""
    return issue_from(error, pattern_messages=_PATTERN_MESSAGES)


def _contains_template(value: Any) -> bool:
    if isinstance(value, str):
        return is_template(value)
    if isinstance(value, Mapping):
        return any(_contains_template(part) for part in value.values())
    if isinstance(value, list | tuple):
        return any(_contains_template(part) for part in value)
    return False


def _is_templated(raw: Any, path: Path) -> bool:
    """Whether the value at `path` in `raw`, or a container on the way, is a template."""
    current = raw
    for part in path:
        if is_template(current):
            return True
        current = child(current, part)
        if current is MISSING:
            return False
    return is_template(current)


def child(value: Any, part: str | int) -> Any:
    """The value at key or index `part` of raw data, or `MISSING` when there is none."""
    if isinstance(value, Mapping):
        return value.get(part, MISSING)
    if isinstance(value, list) and isinstance(part, int) and 0 <= part < len(value):
        return value[part]
    return MISSING


# --- literal parameters -------------------------------------------------------------------


def check_params(node_type: str, data: Mapping[str, Any]) -> list[Issue]:
    """Problems with the literal values of a `with:` block; templated values are skipped.

    Paths are relative to the block (`("duration",)`). Raises KeyError for an unknown type.
    """
    params = NODE_TYPES[node_type].params_model
    if issubclass(params, VideoParams):
        known = [*params.model_fields, *KlingVideoRequest.model_fields, "model_name"]
        own, rest = split_request(params, data)
        issues = _model_issues(params, {**own, "request": PLACEHOLDER_REQUEST}, data)
        # Unknown keys are reported here and left out, so Kling's rules still run.
        issues += [((key,), UNKNOWN_FIELD) for key in rest if key not in known]
        rest = {key: value for key, value in rest.items() if key in known}
        issues += _video_issues(request_input(rest))
    elif issubclass(params, PiAPITaskParams):
        own, rest = split_request(params, data, params.REQUEST_KEYS)
        known = [*params.model_fields, *params.REQUEST_KEYS]
        issues = _model_issues(params, {**own, "request": PLACEHOLDER_REQUEST}, data)
        issues += _task_issues(rest)
    else:
        known = [field.alias or name for name, field in params.model_fields.items()]
        issues = _model_issues(params, data, data)
    known = [name for name in known if name != "request"]
    return [
        (path, f"is not a parameter of {node_type}{suggest(path[0], known)}")
        if message == UNKNOWN_FIELD and len(path) == 1
        else (path, message)
        for path, message in issues
    ]


def _model_issues(model: type[BaseModel], candidate: Mapping[str, Any], raw: Any) -> list[Issue]:
    try:
        model.model_validate(candidate)
    except ValidationError as error:
        issues = [pydantic_issue(item) for item in error.errors(include_url=False)]
        return [(path, message) for path, message in issues if not _is_templated(raw, path)]
    return []


def _video_issues(data: Mapping[str, Any]) -> list[Issue]:
    """`KlingVideoRequest` problems that hold whatever the templated fields turn out to be."""
    templated = {key for key, value in data.items() if is_template(value)}
    if "model_name" in templated and not ("version" in data and "version" not in templated):
        templated.add("version")  # the model name decides the version
    literal = {key: value for key, value in data.items() if key not in templated}
    keys = sorted(templated)
    choices = [_STAND_INS.get(key, [_OMIT]) if key != "model_name" else [_OMIT] for key in keys]
    per_combo: list[list[Issue]] = []
    for combo in itertools.product(*choices):
        candidate = dict(literal)
        candidate.update({k: v for k, v in zip(keys, combo, strict=True) if v is not _OMIT})
        issues = _request_issues(functools.partial(KlingVideoRequest.from_input, candidate), data)
        per_combo.append([(p, m) for p, m in issues if not p or p[0] not in templated])
        if not per_combo[-1]:
            return []  # some values of the templates make this request valid
    always = set.intersection(*({path for path, _ in issues} for issues in per_combo))
    first = per_combo[0]
    return [issue for issue in first if issue[0] in always] or first


def _task_issues(rest: Mapping[str, Any]) -> list[Issue]:
    """`piapi.task`: the model/task_type pair, then the input by `parse_task_request`'s rules."""
    model, task_type, raw_input = (
        rest.get("model", "kling"),
        rest.get("task_type"),
        rest.get("input"),
    )
    if task_type is None:
        return [(("task_type",), "is required (a Kling task type such as 'extend_video')")]
    if is_template(model) or is_template(task_type):
        return []
    if not isinstance(model, str) or not isinstance(task_type, str):
        return [(("task_type",), "model and task_type must be strings")]
    if (model, task_type) not in REQUEST_TYPES:
        models = sorted({m for m, _ in REQUEST_TYPES})
        if model not in models:
            return [(("model",), f"unknown model {model!r}{suggest(model, models)}")]
        types = sorted(t for m, t in REQUEST_TYPES if m == model)
        hint = suggest(task_type, types) or f" (one of: {', '.join(types)})"
        return [(("task_type",), f"{task_type!r} is not a {model} task type{hint}")]
    if raw_input is None:
        return [(("input",), "is required (the task's input object)")]
    if is_template(raw_input):
        return []
    if not isinstance(raw_input, Mapping):
        return [(("input",), "must be a mapping")]
    # Templated leaves become a placeholder string: required fields are then present and
    # "give x or y" rules satisfied; problems about the placeholders themselves are dropped.
    body = {"model": model, "task_type": task_type, "input": _placeholders(raw_input)}
    issues = _request_issues(functools.partial(parse_task_request, body), raw_input)
    return [(("input", *path), message) for path, message in issues]


def _placeholders(value: Any) -> Any:
    if is_template(value):
        return "placeholder"
    if isinstance(value, Mapping):
        return {key: _placeholders(part) for key, part in request_input(value).items()}
    if isinstance(value, list):
        return [_placeholders(part) for part in value]
    return value


def _request_issues(build: Callable[[], object], raw: Mapping[str, Any]) -> list[Issue]:
    """Problems `build()` raises as `InvalidRequestError`, as paths inside the request's input.

    `raw` is the input as written; problems about its templated values are dropped.
    """
    try:
        build()
    except InvalidRequestError as error:
        issues = [(split_field(field)[1:], message) for field, message in error.problems]
        return [(path, message) for path, message in issues if not _is_templated(raw, path)]
    return []


# --- names and references ---------------------------------------------------------------


@dataclass(frozen=True)
class _Scope:
    """What a template at one place may read."""

    node_id: str | None  # the node the template belongs to (None for `outputs`)
    earlier: frozenset[str]  # node ids that have finished by then
    loop_id: str | None  # the loop whose body this is, if any


@dataclass(frozen=True)
class _Graph:
    loop_of: Mapping[str, str | None]  # every node id -> its loop (None at the top level)
    inputs: frozenset[str]


def _templates(value: Any, path: Path) -> Iterator[tuple[Path, str]]:
    if isinstance(value, str):
        if is_template(value):
            yield path, value
    elif isinstance(value, Mapping):
        for key, part in value.items():
            yield from _templates(part, (*path, key))
    elif isinstance(value, list | tuple):
        for index, part in enumerate(value):
            yield from _templates(part, (*path, index))


def _template_issues(source: str, scope: _Scope, graph: _Graph) -> list[str]:
    usage = template_usage(source)
    if usage.syntax_error is not None:
        return [f"template syntax error: {usage.syntax_error}"]
    if usage.loads_templates:
        return ["templates cannot include, import or extend other templates"]
    messages: list[str] = []
    for name in sorted(usage.names - CONTEXT_NAMES - TEMPLATE_GLOBALS):
        if name in LOOP_NAMES:
            if scope.loop_id is None:
                messages.append(f"{name!r} is only defined inside a loop's nodes")
        else:
            known = sorted(CONTEXT_NAMES | (LOOP_NAMES if scope.loop_id else set()))
            hint = suggest(name, known) or f" (use {', '.join(known)})"
            messages.append(f"unknown name {name!r}{hint}")
    for path in sorted(usage.paths, key=repr):
        if len(path) < 2 or not isinstance(path[1], str):
            continue
        root, key = path[0], path[1]
        if root == "nodes":
            messages += _node_reference(path, scope, graph)
        elif root == "inputs" and key not in graph.inputs:
            declared = ", ".join(sorted(graph.inputs)) or "none"
            hint = suggest(key, graph.inputs) or f" (declared: {declared})"
            messages.append(f"inputs.{key} is not declared under inputs{hint}")
        elif root == "loop" and scope.loop_id is not None and key not in LOOP_ATTRIBUTES:
            messages.append(f"loop.{key} does not exist (loop.index, loop.number, loop.length)")
    return messages


def _node_reference(path: Path, scope: _Scope, graph: _Graph) -> list[str]:
    node_id = str(path[1])
    if node_id == scope.node_id:
        return [f"node {node_id!r} refers to itself"]
    if node_id not in graph.loop_of:
        return [
            f"refers to node {node_id!r}, which does not exist{suggest(node_id, graph.loop_of)}"
        ]
    loop_id = graph.loop_of[node_id]
    if node_id == scope.loop_id:
        return [f"node {node_id!r} is the loop this node runs in; its output exists only after it"]
    if loop_id is not None and loop_id != scope.loop_id:
        return [
            f"node {node_id!r} is inside loop {loop_id!r}; outside it, use "
            f"nodes.{loop_id}.output (one entry per item)"
        ]
    if node_id not in scope.earlier:
        return [
            f"refers to node {node_id!r}, which runs later; a node can only use nodes before it"
        ]
    if len(path) >= 3 and path[2] not in NODE_ATTRIBUTES:
        return [f"nodes.{node_id} has no {path[2]!r}; use nodes.{node_id}.output"]
    return []


# --- the whole workflow -----------------------------------------------------------------


def validate_workflow(workflow: Workflow) -> list[WorkflowProblem]:
    """Every problem in a structurally valid workflow, in file order (empty when valid).

    `load_workflow` already runs this; call it yourself for a `Workflow` built in code.
    """
    problems: list[WorkflowProblem] = []

    def add(path: Path, message: str, *, node_id: str | None, base: int = 0) -> None:
        problems.append(
            WorkflowProblem(
                message,
                path=workflow.source_path,
                line=workflow.line_of(path),
                node_id=node_id,
                field=format_field(path[base:]),
            )
        )

    placed = list(_placed(workflow))
    loop_of: dict[str, str | None] = {}
    for node, path, loop in placed:
        if node.id in loop_of:
            first = workflow.line_of(next(p for n, p, _ in placed if n.id == node.id))
            where = f" (first on line {first})" if first else ""
            add((*path, "id"), f"duplicate node id{where}", node_id=node.id, base=len(path))
        else:
            loop_of[node.id] = loop.id if loop else None
    graph = _Graph(loop_of=loop_of, inputs=frozenset(workflow.inputs))

    def check(node: NodeSpec, path: Path, scope: _Scope) -> None:
        for rel, message in check_params(node.type, node.with_):
            add((*path, "with", *rel), message, node_id=node.id, base=len(path))
        # A syntax error in `if` is reported with the other templates' below.
        is_text = isinstance(node.if_, str) and not is_single_expression(node.if_)
        if is_text and template_usage(str(node.if_)).syntax_error is None:
            message = "must be true, false or one {{ expression }} (text is always true)"
            add((*path, "if"), message, node_id=node.id, base=len(path))
        for rel, source in [*_templates(node.with_, ("with",)), *_templates(node.if_, ("if",))]:
            for message in _template_issues(source, scope, graph):
                add((*path, *rel), message, node_id=node.id, base=len(path))

    earlier: list[str] = []  # top-level nodes done so far; loop bodies are not addressable
    for index, node in enumerate(workflow.nodes):
        check(node, ("nodes", index), _Scope(node.id, frozenset(earlier), None))
        if isinstance(node, LoopNode):
            # `label:` names an item in tables: it sees the item, not other nodes' outputs.
            for rel, source in _templates(node.label, ("label",)):
                for message in _template_issues(
                    source, _Scope(node.id, frozenset(), node.id), graph
                ):
                    add(("nodes", index, *rel), message, node_id=node.id, base=2)
            body_earlier = list(earlier)
            for inner_index, inner in enumerate(node.nodes):
                path = ("nodes", index, "nodes", inner_index)
                check(inner, path, _Scope(inner.id, frozenset(body_earlier), node.id))
                body_earlier.append(inner.id)
        earlier.append(node.id)
    top = frozenset(node.id for node in workflow.nodes)
    for rel, source in _templates(workflow.outputs, ("outputs",)):
        for message in _template_issues(source, _Scope(None, top, None), graph):
            add(rel, message, node_id=None)
    for path, message in _schedule_issues(workflow):
        add(path, message, node_id=None)
    problems.sort(key=lambda problem: problem.line or 0)
    return problems


def _schedule_issues(workflow: Workflow) -> Iterator[Issue]:
    """Schedules whose payload does not fit `inputs:` (their runs could never start), and
    names used twice or unnamed twins (the runs of both would share idempotency keys)."""
    first_index: dict[str, int] = {}
    for index, schedule in enumerate(workflow.schedules):
        path: Path = ("schedules", index)
        key = schedule.key()
        if key in first_index:
            first_path: Path = ("schedules", first_index[key])
            if schedule.name is not None:
                first = workflow.line_of((*first_path, "name"))
                where = f" (first on line {first})" if first else ""
                yield (*path, "name"), f"duplicate schedule name{where}"
            else:
                first = workflow.line_of(first_path)
                where = f" (line {first})" if first else ""
                twin = f"schedules[{first_index[key]}]{where}"
                message = f"has the same cron, timezone and payload as {twin}, so their runs "
                yield path, message + "would share idempotency keys; remove one, or name each"
        else:
            first_index[key] = index
        try:
            workflow.resolve_inputs(schedule.payload)
        except WorkflowInputError as error:
            for field, message in error.problems:
                name = field.removeprefix("inputs.")
                yield (*path, "payload", name), f"{message} (inputs.{name})"
            continue
        try:  # what every tick's start would refuse (the estimate's checks)
            estimate_run(workflow, schedule.payload)
        except InvalidRequestError as error:
            for field, message in error.problems:
                yield (*path, "payload"), f"no tick could start a run: {field}: {message}"


def _placed(workflow: Workflow) -> Iterator[tuple[NodeSpec, Path, LoopNode | None]]:
    """Every node with its data path and loop, in run order."""
    for index, node in enumerate(workflow.nodes):
        yield node, ("nodes", index), None
        if isinstance(node, LoopNode):
            for inner_index, inner in enumerate(node.nodes):
                yield inner, ("nodes", index, "nodes", inner_index), node
