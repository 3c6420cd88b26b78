"""Loading workflow files: every problem at once, each with its file, line and node id."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from klingflow.errors import WorkflowDefinitionError, WorkflowProblem
from klingflow.workflows import KlingVideoNode, LoopNode, load_workflow, load_workflow_text

VALID = """\
name: tiny
nodes:
  - id: video
    type: kling.video
    with:
      prompt: a red fox
"""


def problems(text: str, *, path: str = "wf.yaml") -> list[WorkflowProblem]:
    with pytest.raises(WorkflowDefinitionError) as caught:
        load_workflow_text(textwrap.dedent(text), path=path)
    return caught.value.problems


def lines_of(text: str) -> list[str]:
    return [str(problem) for problem in problems(text)]


def test_a_valid_file_loads_into_typed_nodes(tmp_path: Path) -> None:
    """A minimal file loads from disk; nodes are the typed classes of their `type`."""
    path = tmp_path / "tiny.yaml"
    path.write_text(VALID, encoding="utf-8")
    workflow = load_workflow(path)
    assert workflow.name == "tiny"
    assert isinstance(workflow.nodes[0], KlingVideoNode)
    assert workflow.source_path == str(path)
    assert workflow.line_of(("nodes", 0, "with", "prompt")) == 6


def test_schema_error_names_file_line_node_and_field() -> None:
    """A wrong value is reported as `file:line (node 'id'): field: message`."""
    text = """\
    name: tiny
    nodes:
      - id: save
        type: download
        with:
          url: https://example.com/a.mp4
        retry:
          attempts: 9
    """
    (problem,) = problems(text, path="examples/x.yaml")
    assert problem.line == 8
    assert problem.node_id == "save"
    assert problem.field == "retry.attempts"
    assert str(problem).startswith("examples/x.yaml:8 (node 'save'): retry.attempts: ")


def test_all_problems_are_listed_in_file_order() -> None:
    """Several problems in several nodes are raised together, sorted by line."""
    text = """\
    name: many
    nodes:
      - id: first
        type: kling.vide
        with: {prompt: x}
      - id: video
        type: kling.video
        with:
          prompt: a fox
          duration: 20
          version: "2.1"
      - id: save
        type: download
        with: {url: "ftp://nope"}
    """
    found = problems(text)
    assert [(p.line, p.node_id, p.field) for p in found] == [
        (4, "first", "type"),
        (10, "video", "with.duration"),
        (14, "save", "with.url"),
    ]
    assert "did you mean 'kling.video'?" in found[0].message
    assert found[1].message == "must be 5 or 10 for version 2.1"


def test_error_message_of_the_exception_has_one_line_per_problem() -> None:
    """`str(error)` is the problems, one per line; `.path/.line/.node_id` are the first's."""
    text = """\
    name: two
    nodes:
      - {id: a, type: set, with: {values: {}}, retry: {attempts: 0}}
      - {id: b, type: set, with: {values: {}}, retry: {factor: 0}}
    """
    with pytest.raises(WorkflowDefinitionError) as caught:
        load_workflow_text(textwrap.dedent(text), path="f.yaml")
    error = caught.value
    assert str(error).splitlines()[0].startswith("f.yaml:3 (node 'a'): retry.attempts:")
    assert str(error).splitlines()[1].startswith("f.yaml:4 (node 'b'): retry.factor:")
    assert (error.path, error.line, error.node_id) == ("f.yaml", 3, "a")


def test_yaml_syntax_errors_report_their_line() -> None:
    """Broken YAML is one problem at the line the parser stopped."""
    text = "name: x\nnodes:\n  - id: a\n    type: set\n   with: {values: {}}\n"
    (problem,) = problems(text)
    assert problem.line == 5
    assert problem.message.startswith("invalid YAML")


def test_duplicate_keys_are_errors() -> None:
    """A key given twice is reported, with the line of the first, instead of last-wins."""
    text = """\
    name: dup
    nodes:
      - id: video
        type: kling.video
        with:
          prompt: first
          prompt: second
    """
    (problem,) = problems(text)
    assert (problem.line, problem.field) == (7, "with.prompt")
    assert "first on line 6" in problem.message


def test_unknown_fields_get_a_suggestion_for_their_context() -> None:
    """Misspelt keys at the top, in a node, in retry and in with: each get a close match."""
    text = """\
    name: typo
    descripton: oops
    nodes:
      - id: video
        type: kling.video
        wiht: {prompt: x}
        with: {promt: x, prompt: y}
        retry: {atempts: 2}
    """
    found = {p.field: p.message for p in problems(text)}
    assert "did you mean 'description'?" in found["descripton"]
    assert "did you mean 'with'?" in found["wiht"]
    assert "did you mean 'attempts'?" in found["retry.atempts"]
    assert found["with.promt"] == "is not a parameter of kling.video (did you mean 'prompt'?)"


def test_missing_required_fields_are_named() -> None:
    """A missing name, node id or node type is reported at its mapping's line."""
    text = """\
    nodes:
      - type: set
        with: {values: {}}
      - id: b
        with: {}
    """
    found = {(p.line, p.field) for p in problems(text)}
    assert (1, "name") in found
    assert (2, "nodes[0].id") in found
    assert (4, "type") in found


def test_loops_cannot_nest() -> None:
    """A loop inside a loop body is refused with an explanation."""
    text = """\
    name: nested
    nodes:
      - id: outer
        type: loop
        with: {items: [1, 2]}
        nodes:
          - id: inner
            type: loop
            with: {items: [3]}
            nodes:
              - {id: s, type: set, with: {values: {}}}
    """
    (problem,) = problems(text)
    assert (problem.line, problem.node_id, problem.field) == (8, "inner", "type")
    assert "cannot be nested" in problem.message


def test_with_blocks_are_checked_even_when_the_shape_is_broken() -> None:
    """A structural error elsewhere does not hide literal parameter problems."""
    text = """\
    name: mixed
    retry: {attempts: 10}
    nodes:
      - id: video
        type: kling.video
        with: {prompt: x, duration: 30, version: "1.6"}
    """
    assert {(p.line, p.field) for p in problems(text)} == {
        (2, "retry.attempts"),
        (6, "with.duration"),
    }


def test_names_and_ids_must_match_their_patterns() -> None:
    """Workflow name, node ids and input names have readable pattern messages."""
    text = """\
    name: Bad Name
    inputs:
      bad-input: {type: string}
    nodes:
      - {id: Video, type: set, with: {values: {}}}
    """
    found = {p.field: p.message for p in problems(text)}
    assert found["name"].startswith("must be 2-64 characters")
    assert found["inputs.bad-input"].startswith("name must be an identifier")
    assert found["id"].startswith("must start with a lowercase letter")


def test_input_defaults_must_fit_their_type_and_enum() -> None:
    """An input whose default breaks its own type or enum is a definition error."""
    text = """\
    name: inputs
    inputs:
      duration: {type: integer, default: "5"}
      ratio: {type: string, default: "4:3", enum: ["16:9", "9:16"]}
      needed: {type: string, required: true, default: x}
    nodes:
      - {id: s, type: set, with: {values: {}}}
    """
    found = {(p.line, p.field): p.message for p in problems(text)}
    assert found[(3, "inputs.duration.default")] == "must be an integer, got '5'"
    assert found[(4, "inputs.ratio.default")].startswith("must be one of '16:9', '9:16'")
    assert "cannot be required" in found[(5, "inputs.needed.required")]


def test_empty_and_non_mapping_files_are_rejected() -> None:
    """An empty document or a bare list is not a workflow."""
    assert problems("")[0].message == "is empty"
    assert problems("- a\n- b\n")[0].message == "must be a mapping with name and nodes"


def test_a_missing_file_is_a_definition_error(tmp_path: Path) -> None:
    """An unreadable path raises WorkflowDefinitionError naming it."""
    with pytest.raises(WorkflowDefinitionError, match="cannot read"):
        load_workflow(tmp_path / "nope.yaml")


def test_alias_bombs_are_refused() -> None:
    """YAML aliases that expand into a huge document are refused before validation."""
    rows = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for level in range(1, 7):
        previous = chr(ord("a") + level - 1)
        name = chr(ord("a") + level)
        rows.append(f"{name}: &{name} [{', '.join(['*' + previous] * 10)}]")
    (problem,) = problems("\n".join(rows) + "\n")
    assert "expands to more than" in problem.message


def test_json_files_load_with_line_numbers(tmp_path: Path) -> None:
    """`.json` files are JSON; problems still carry the line of the value."""
    data = {
        "name": "json-flow",
        "nodes": [{"id": "video", "type": "kling.video", "with": {"prompt": "x", "duration": 99}}],
    }
    path = tmp_path / "flow.json"
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    with pytest.raises(WorkflowDefinitionError) as caught:
        load_workflow(path)
    (problem,) = caught.value.problems
    assert (problem.node_id, problem.field) == ("video", "with.duration")
    assert problem.line == 9


def test_json_syntax_errors_report_their_line() -> None:
    """Broken JSON is one problem at the decoder's line."""
    (problem,) = problems('{\n  "name": "x",\n  "nodes": [\n}\n', path="flow.json")
    assert problem.line == 4
    assert problem.message.startswith("invalid JSON")


def test_json_and_yaml_of_the_same_spec_have_the_same_hash(tmp_path: Path) -> None:
    """The content hash depends on the spec, not on the file format or layout."""
    from_yaml = load_workflow_text(VALID)
    path = tmp_path / "same.json"
    path.write_text(json.dumps(from_yaml.model_dump(by_alias=True, exclude_unset=True)))
    assert load_workflow(path).content_hash == from_yaml.content_hash
    reformatted = VALID.replace(
        "    with:\n      prompt: a red fox", "    with: {prompt: a red fox}"
    )
    assert load_workflow_text("# a comment\n" + reformatted).content_hash == from_yaml.content_hash


def test_content_hash_changes_when_the_spec_changes() -> None:
    """Any change to what runs gives a new version hash; stating a default does not."""
    base = load_workflow_text(VALID).content_hash
    assert load_workflow_text(VALID.replace("red fox", "grey fox")).content_hash != base
    explicit = VALID + "retry: {attempts: 3}\n"
    assert load_workflow_text(explicit).content_hash == base


def test_a_loop_body_is_a_list_of_typed_nodes() -> None:
    """A loop node carries its body in `.nodes`; `walk()` yields every node with its loop."""
    text = """\
    name: looped
    nodes:
      - id: each
        type: loop
        with: {items: [a, b], concurrency: 2}
        nodes:
          - {id: video, type: kling.video, with: {prompt: "{{ item }}"}}
          - {id: note, type: set, with: {values: {n: "{{ loop.number }}"}}}
      - {id: done, type: set, with: {values: {all: "{{ nodes.each.output }}"}}}
    """
    workflow = load_workflow_text(textwrap.dedent(text))
    loop = workflow.nodes[0]
    assert isinstance(loop, LoopNode)
    assert [node.id for node in loop.nodes] == ["video", "note"]
    walked = [(node.id, parent.id if parent else None) for node, parent in workflow.walk()]
    assert walked == [("each", None), ("video", "each"), ("note", "each"), ("done", None)]
    assert workflow.node_count == 4


def test_json_duplicate_keys_are_errors_with_their_line() -> None:
    """JSON's last-wins duplicates are refused as in YAML."""
    text = '{\n  "name": "x",\n  "name": "y",\n  "nodes": []\n}\n'
    found = problems(text, path="flow.json")
    assert (found[0].line, found[0].field) == (3, "name")
    assert found[0].message.startswith("duplicate key")
