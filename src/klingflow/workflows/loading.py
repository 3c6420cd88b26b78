"""Workflow files (YAML or JSON) to a validated `Workflow`, or every problem with its line.

YAML is composed into nodes first, so each value keeps the line it came from; pydantic then
checks the shape and `validate_workflow` the rest. All problems are collected and raised
together as one `WorkflowDefinitionError`, each naming the file, line, node id and field, so
one run of `klingflow validate` shows everything to fix.

Duplicate keys are errors here, although YAML and JSON parsers silently keep the last one:
a second `prompt:` that quietly wins is exactly the mistake a paid run should not discover.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path as FilePath
from typing import Any, Final

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from klingflow.errors import WorkflowDefinitionError, WorkflowProblem
from klingflow.payloads import data_problems, nesting_problem, payload_problems
from klingflow.problems import RELATIVE_RULE
from klingflow.workflows.nodes import NODE_TYPES
from klingflow.workflows.retries import WorkflowRetry
from klingflow.workflows.spec import InputSpec, ScheduleSpec, Workflow
from klingflow.workflows.validation import (
    MISSING,
    Issue,
    Path,
    check_params,
    child,
    format_field,
    pydantic_issue,
    suggest,
    validate_workflow,
)

__all__ = ["load_workflow", "load_workflow_text", "read_workflow_text"]

MAX_VALUES: Final = 100_000
"""Most values a file may expand to (YAML aliases can make a small file enormous)."""
_MERGE_TAG: Final = "tag:yaml.org,2002:merge"


_LineIssue = tuple[Path, str, int | None]
"""A problem found while parsing: (data path, message, its own line when the path's differs)."""


class _TooLargeError(Exception):
    """Raised inside the indexer when aliases expand the document past MAX_VALUES."""


def load_workflow(path: str | os.PathLike[str]) -> Workflow:
    """Read and validate a workflow file (`.json` as JSON, anything else as `load_workflow_text`
    reads text).

    Raises `WorkflowDefinitionError` listing every problem, also when the file is unreadable.
    """
    return load_workflow_text(read_workflow_text(path), path=os.fspath(path))


def read_workflow_text(path: str | os.PathLike[str]) -> str:
    """A workflow file's text (UTF-8), unchecked: read once, then validated and published as
    it is. An unreadable file raises `WorkflowDefinitionError` naming it."""
    name = os.fspath(path)
    try:
        return FilePath(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise WorkflowDefinitionError(
            [WorkflowProblem("cannot read: the file does not exist", path=name)]
        ) from None
    except OSError as error:
        reason = error.strerror or str(error)
        raise WorkflowDefinitionError(
            [WorkflowProblem(f"cannot read: {reason}", path=name)]
        ) from None
    except UnicodeDecodeError:
        raise WorkflowDefinitionError([WorkflowProblem("is not UTF-8 text", path=name)]) from None


def load_workflow_text(text: str, *, path: str | None = None) -> Workflow:
    """Validate a workflow given as text; `path` names it in problems (and `.json` means JSON).

    Without a `.json` path, text that is a JSON document (`{...}`) is read as JSON and anything
    else as YAML, so stored text (a published version has no file name) loads the way its file
    validated: JSON indented with tabs, which YAML refuses, included.
    The returned workflow keeps `source_path` and its line map, so later checks can name lines.
    """
    # Too deep: said before PyYAML's scanner spends seconds on it (payloads.nesting_problem).
    if (unfit := data_problems(text) or nesting_problem(text)) is not None:
        raise WorkflowDefinitionError([WorkflowProblem(unfit, path=path)])
    try:
        return _load_text(text, path)
    except RecursionError:  # deeper than Python's stack, in the parser or the validator
        problem = WorkflowProblem("is nested too deeply", path=path)
        raise WorkflowDefinitionError([problem]) from None


def _load_text(text: str, path: str | None) -> Workflow:
    is_json = (path is not None and path.lower().endswith(".json")) or _is_json_text(text)
    data, lines, issues = _parse_json(text) if is_json else _parse_yaml(text)
    if not issues and data is not None:
        # NUL, lone surrogates, nesting over the payload limit, huge integers, alias bombs
        unfit: list[_LineIssue] = [
            ((), f"{where}: {message}", None) for where, message in payload_problems(data, "file")
        ]
        if unfit:
            issues = unfit[:5]
            data = None
    problems = [
        _problem(data, lines, path, where, message, line=line) for where, message, line in issues
    ]
    if data is not None and not isinstance(data, Mapping):
        problems.append(_problem(None, lines, path, (), "must be a mapping with name and nodes"))
    if problems or data is None:
        raise WorkflowDefinitionError(problems or [WorkflowProblem("is empty", path=path)])
    try:
        workflow = Workflow.model_validate(data, context={"source_path": path, "lines": lines})
    except ValidationError as error:
        for item in error.errors(include_url=False):
            where, message = _describe_structure(data, item)
            problems.append(_problem(data, lines, path, where, message))
        # The shape is broken, but each well-formed `with:` block can still be checked.
        for node_path, node in _raw_nodes(data):
            node_type, params = node.get("type"), node.get("with")
            if (
                isinstance(node_type, str)
                and node_type in NODE_TYPES
                and isinstance(params, Mapping)
            ):
                for rel, message in check_params(node_type, params):
                    where = (*node_path, "with", *rel)
                    problems.append(_problem(data, lines, path, where, message))
        problems.sort(key=lambda problem: problem.line or 0)
        raise WorkflowDefinitionError(problems) from None
    if problems := validate_workflow(workflow):
        raise WorkflowDefinitionError(problems)
    return workflow


def _is_json_text(text: str) -> bool:
    """Whether `text` is a JSON object: the test that picks the parser for unnamed text.

    Only text starting with `{` is tried, so YAML never pays for a JSON parse; a YAML flow
    mapping (`{name: a, ...}`) is not JSON and stays YAML.
    """
    if not text.lstrip().startswith("{"):
        return False
    try:
        json.loads(text)
    except ValueError:  # JSONDecodeError, or a number too long to convert
        return False
    return True


# --- parsing with line numbers ----------------------------------------------------------


def _parse_yaml(text: str) -> tuple[Any, dict[Path, int], list[_LineIssue]]:
    """(data, line of each data path, problems found while parsing)."""
    try:
        loader = yaml.SafeLoader(text)
    except yaml.YAMLError as error:  # the reader refuses a character up front
        return None, {}, [((), f"invalid YAML: {error}", None)]
    try:
        root = loader.get_single_node()
        if root is None:
            return None, {}, []
        lines: dict[Path, int] = {}
        issues: list[_LineIssue] = []
        try:
            _index(loader, root, (), lines, issues, [0], set())
        except _TooLargeError:
            message = f"expands to more than {MAX_VALUES} values (YAML aliases)"
            return None, lines, [((), message, None)]
        return loader.construct_document(root), lines, issues
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        message = ", ".join(part for part in (error.context, error.problem) if part)
        line = mark.line + 1 if mark else None
        return None, {}, [((), f"invalid YAML: {message}", line)]
    except yaml.YAMLError as error:
        return None, {}, [((), f"invalid YAML: {error}", None)]
    except ValueError as error:  # an integer of thousands of digits
        return None, {}, [((), f"invalid value: {error}", None)]
    finally:
        loader.dispose()


def _index(
    loader: yaml.SafeLoader,
    node: yaml.Node,
    path: Path,
    lines: dict[Path, int],
    issues: list[_LineIssue],
    count: list[int],
    active: set[int],
) -> None:
    """Record the line of every value below `node` and report duplicate keys."""
    count[0] += 1
    if count[0] > MAX_VALUES:
        raise _TooLargeError
    lines.setdefault(path, node.start_mark.line + 1)
    if id(node) in active:  # a recursive alias: its lines are already known
        return
    active.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG or not isinstance(key_node, yaml.ScalarNode):
                continue
            key = loader.construct_object(key_node)
            line = key_node.start_mark.line + 1
            if key in seen:
                message = f"duplicate key (first on line {seen[key]})"
                issues.append(((*path, key), message, line))
                continue
            seen[key] = line
            lines[(*path, key)] = line
            _index(loader, value_node, (*path, key), lines, issues, count, active)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _index(loader, item, (*path, index), lines, issues, count, active)
    active.discard(id(node))


def _parse_json(text: str) -> tuple[Any, dict[Path, int], list[_LineIssue]]:
    """JSON is parsed as JSON; its lines come from reading it again as YAML (best effort)."""
    duplicates: list[_LineIssue] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in items:
            if key in result:
                duplicates.append(((key,), "duplicate key", None))
            result[key] = value
        return result

    try:
        data = json.loads(text, object_pairs_hook=pairs)
    except json.JSONDecodeError as error:
        message = f"invalid JSON: {error.msg} (column {error.colno})"
        return None, {}, [((), message, error.lineno)]
    except ValueError as error:  # an integer of thousands of digits
        return None, {}, [((), f"invalid JSON value: {error}", None)]
    as_yaml, lines, issues = _parse_yaml(text)
    if as_yaml is None:  # YAML could not read it: no lines, but keep the duplicates JSON found
        return data, {}, duplicates
    return data, lines, issues


# --- pydantic errors to problems --------------------------------------------------------


def _raw_path(data: Any, loc: tuple[str | int, ...]) -> Path:
    """Follow pydantic's `loc` through the raw data, skipping union tags and `[key]` markers.

    Parts past the end of the data (a missing key) are kept, so the field can be named.
    """
    path: list[str | int] = []
    current: Any = data
    for part in loc:
        if part == "[key]":
            continue
        value = child(current, part)
        if value is MISSING and isinstance(current, Mapping) and current.get("type") == part:
            continue  # the discriminator tag pydantic puts in the loc of a union member
        current = value
        path.append(part)
    return tuple(path)


def _node_at(data: Any, path: Path) -> tuple[Path, str | None] | None:
    """The innermost node on `path`: (its path, its id if it has one)."""
    found: tuple[Path, str | None] | None = None
    current = data
    for end, part in enumerate(path, start=1):
        current = child(current, part)
        if current is MISSING:
            break
        prefix = path[:end]
        if len(prefix) >= 2 and prefix[-2] == "nodes" and isinstance(prefix[-1], int):
            node_id = current.get("id") if isinstance(current, Mapping) else None
            found = prefix, node_id if isinstance(node_id, str) else None
    return found


def _problem(
    data: Any,
    lines: Mapping[Path, int],
    file: str | None,
    where: Path,
    message: str,
    *,
    line: int | None = None,
) -> WorkflowProblem:
    if line is None:
        ends = range(len(where), -1, -1)
        line = next((lines[where[:end]] for end in ends if where[:end] in lines), None)
    node = _node_at(data, where)
    if node is None:
        return WorkflowProblem(message, path=file, line=line, field=format_field(where))
    node_path, node_id = node
    field = format_field(where[len(node_path) :])
    if node_id is None:  # no usable id: say which node by position
        field = f"{format_field(node_path)}.{field}" if field else format_field(node_path)
    return WorkflowProblem(message, path=file, line=line, node_id=node_id, field=field)


def _describe_structure(data: Any, error: ErrorDetails) -> Issue:
    """A structural pydantic error as (data path, message), in workflow terms."""
    where = _raw_path(data, tuple(error["loc"]))
    ctx = error.get("ctx") or {}
    if error["type"] == "union_tag_invalid":
        tag = str(ctx.get("tag"))
        if tag == "loop" and where.count("nodes") > 1:
            return (
                *where,
                "type",
            ), "loops cannot be nested; run the inner loop as its own workflow"
        hint = suggest(tag, NODE_TYPES) or f" (known: {', '.join(NODE_TYPES)})"
        return (*where, "type"), f"unknown node type {tag!r}{hint}"
    if error["type"] == "union_tag_not_found":
        return (*where, "type"), f"is required (one of: {', '.join(NODE_TYPES)})"
    if error["type"] == "model_attributes_type" and _node_at(data, where) is not None:
        return where, "a node must be a mapping with id, type and with"
    rel, message = pydantic_issue(error)
    if error["type"] == RELATIVE_RULE:
        where = _raw_path(data, rel)
    if error["type"] == "extra_forbidden" and where:
        message = f"is not a known field{suggest(where[-1], _known_keys(data, where[:-1]))}"
    if "[key]" in error["loc"]:
        message = f"name {message}"
    return where, message


def _known_keys(data: Any, parent: Path) -> list[str]:
    """The keys allowed in the mapping at `parent` (for "did you mean" hints)."""
    if not parent:
        return [field.alias or name for name, field in Workflow.model_fields.items()]
    if parent[-1] == "retry":
        return list(WorkflowRetry.model_fields)
    if len(parent) == 2 and parent[0] == "inputs":
        return list(InputSpec.model_fields)
    if len(parent) == 2 and parent[0] == "schedules":
        return list(ScheduleSpec.model_fields)
    node = _node_at(data, parent)
    if node is not None and node[0] == parent:
        raw: Any = data
        for part in parent:
            raw = raw[part]
        cls = NODE_TYPES.get(str(raw.get("type")), NODE_TYPES["loop"])
        return [field.alias or name for name, field in cls.model_fields.items()]
    return []


def _raw_nodes(data: Mapping[str, Any]) -> Iterator[tuple[Path, Mapping[str, Any]]]:
    """Every node mapping in raw data, loop bodies included, with its path."""
    top = data.get("nodes")
    for index, node in enumerate(top if isinstance(top, list) else []):
        if not isinstance(node, Mapping):
            continue
        yield ("nodes", index), node
        body = node.get("nodes")
        for inner_index, inner in enumerate(body if isinstance(body, list) else []):
            if isinstance(inner, Mapping):
                yield ("nodes", index, "nodes", inner_index), inner
