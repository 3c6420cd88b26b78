"""The spec the engine consumes: inputs, retry policies, and rendering a node's parameters."""

from __future__ import annotations

import textwrap

import pytest
import yaml

from klingflow.errors import InvalidRequestError, TemplateError, WorkflowInputError
from klingflow.piapi import KlingVideoRequest
from klingflow.workflows import (
    NODE_TYPES,
    DownloadNode,
    KlingVideoNode,
    KlingVideoParams,
    LoopNode,
    SetNode,
    Workflow,
    WorkflowRetry,
    load_workflow_text,
    template_context,
)

FLOW = load_workflow_text(
    textwrap.dedent("""\
    name: spec-tests
    inputs:
      prompt: {type: string, required: true}
      duration: {type: integer, default: 5}
      ratio: {type: string, default: "16:9", enum: ["16:9", "9:16", "1:1"]}
      rows: {type: array}
      strength: {type: number}
      loud: {type: boolean, default: false}
      extra: {type: object, default: {a: [1]}}
    retry: {attempts: 4, initial_delay_seconds: 1, factor: 3, max_delay_seconds: 20}
    nodes:
      - id: each
        type: loop
        with: {items: "{{ inputs.rows }}", concurrency: 2}
        retry: {attempts: 2}
        nodes:
          - id: video
            type: kling.video
            with:
              prompt: "{{ item }}"
              duration: "{{ inputs.duration }}"
              aspect_ratio: "{{ inputs.ratio }}"
              name: "{{ loop.number }}.mp4"
            retry: {initial_delay_seconds: 5}
      - id: save
        type: download
        if: "{{ inputs.loud }}"
        with: {url: "https://example.com/a.mp4"}
    outputs:
      count: "{{ nodes.each.output | length }}"
    """)
)


def test_resolve_inputs_applies_defaults_and_keeps_given_values() -> None:
    """Missing optional inputs get their default (or None); given ones are kept."""
    resolved = FLOW.resolve_inputs({"prompt": "a fox", "duration": 10, "unrelated": 1})
    assert resolved == {
        "prompt": "a fox",
        "duration": 10,
        "ratio": "16:9",
        "rows": None,
        "strength": None,
        "loud": False,
        "extra": {"a": [1]},
    }


def test_resolved_defaults_are_fresh_copies() -> None:
    """Changing a resolved default does not change the next run's default."""
    first = FLOW.resolve_inputs({"prompt": "x"})
    first["extra"]["a"].append(2)
    assert FLOW.resolve_inputs({"prompt": "x"})["extra"] == {"a": [1]}


def test_resolve_inputs_lists_every_problem() -> None:
    """Missing required inputs, wrong types and values outside the enum are all reported."""
    with pytest.raises(WorkflowInputError) as caught:
        FLOW.resolve_inputs(
            {"duration": "5", "ratio": "4:3", "rows": "a,b", "strength": True, "loud": 1}
        )
    assert caught.value.problems == [
        ("inputs.prompt", "is required"),
        ("inputs.duration", "must be an integer, got '5'"),
        ("inputs.ratio", "must be one of '16:9', '9:16', '1:1', got '4:3'"),
        ("inputs.rows", "must be an array, got 'a,b'"),
        ("inputs.strength", "must be a number, got True"),
        ("inputs.loud", "must be a boolean, got 1"),
    ]
    assert "spec-tests" in str(caught.value)


def test_input_errors_are_invalid_request_errors() -> None:
    """A bad trigger payload is rejected like any local validation: nothing was spent."""
    with pytest.raises(InvalidRequestError):
        FLOW.resolve_inputs({})


def test_numbers_accept_ints_and_floats_but_not_bools() -> None:
    """`number` takes 1 and 1.5; `integer` refuses 1.5."""
    assert FLOW.resolve_inputs({"prompt": "x", "strength": 1})["strength"] == 1
    assert FLOW.resolve_inputs({"prompt": "x", "strength": 1.5})["strength"] == 1.5
    with pytest.raises(WorkflowInputError):
        FLOW.resolve_inputs({"prompt": "x", "duration": 1.5})


def test_retry_policy_merges_workflow_loop_and_node() -> None:
    """A body node's policy is the workflow's, overridden by its loop's, then by its own."""
    video = FLOW.node("video")
    policy = FLOW.retry_for(video)
    assert policy == WorkflowRetry(
        attempts=2, initial_delay_seconds=5, factor=3, max_delay_seconds=20
    )
    assert FLOW.retry_for(FLOW.node("save")).attempts == 4


def test_retry_delays_grow_exponentially_up_to_the_cap() -> None:
    """Delays are initial * factor ** (n - 1), capped at max_delay_seconds."""
    policy = WorkflowRetry(initial_delay_seconds=2, factor=2, max_delay_seconds=10)
    assert [policy.delay_seconds(n) for n in (1, 2, 3, 4)] == [2, 4, 8, 10]


def test_retry_attempts_are_one_to_five() -> None:
    """The seed's limit: up to 5 attempts."""
    with pytest.raises(ValueError, match="less than or equal to 5"):
        WorkflowRetry(attempts=6)


def test_render_params_gives_typed_params_with_a_kling_request() -> None:
    """A body node renders in its item's context into KlingVideoParams."""
    inputs = FLOW.resolve_inputs({"prompt": "x", "ratio": "9:16"})
    context = template_context(
        trigger={}, inputs=inputs, outputs={}, item="a red fox", index=0, length=1
    )
    video = FLOW.node("video")
    assert isinstance(video, KlingVideoNode)
    params = video.render_params(context)
    assert isinstance(params, KlingVideoParams)
    assert params.request == KlingVideoRequest(prompt="a red fox", aspect_ratio="9:16")
    assert (params.download, params.name) == (True, "1.mp4")


def test_rendered_values_that_break_rules_raise_invalid_request_naming_the_node() -> None:
    """A rendered duration Kling refuses stops the node before anything is sent."""
    inputs = FLOW.resolve_inputs({"prompt": "x", "duration": 40})
    context = template_context(trigger={}, inputs=inputs, outputs={}, item="x", index=0, length=1)
    with pytest.raises(InvalidRequestError) as caught:
        FLOW.node("video").render_params(context)
    assert caught.value.problems == [
        ("nodes.video.with.duration", "must be 3 to 15 seconds for version 3.0, got 40")
    ]


def test_rendering_outside_a_loop_fails_on_loop_names() -> None:
    """A body node rendered without loop variables raises TemplateError naming it."""
    context = template_context(trigger={}, inputs=FLOW.resolve_inputs({"prompt": "x"}), outputs={})
    with pytest.raises(TemplateError) as caught:
        FLOW.node("video").render_params(context)
    assert (caught.value.node_id, caught.value.field) == ("video", "with.prompt")


def test_loop_params_render_items_and_concurrency() -> None:
    """The loop node renders its item list in the outer context."""
    loop = FLOW.nodes[0]
    assert isinstance(loop, LoopNode)
    inputs = FLOW.resolve_inputs({"prompt": "x", "rows": ["a", "b"]})
    params = loop.render_params(template_context(trigger={}, inputs=inputs, outputs={}))
    assert (params.items, params.concurrency) == (["a", "b"], 2)


def test_should_run_follows_if() -> None:
    """`if` renders to a bool; a node without `if` always runs."""
    save = FLOW.node("save")
    assert isinstance(save, DownloadNode)
    quiet = template_context(trigger={}, inputs={"loud": False}, outputs={})
    assert not save.should_run(quiet)
    assert save.should_run(template_context(trigger={}, inputs={"loud": True}, outputs={}))
    assert FLOW.nodes[0].should_run(quiet)


def test_render_outputs_uses_the_finished_run_context() -> None:
    """`outputs:` renders with native types."""
    context = template_context(trigger={}, inputs={}, outputs={"each": [{}, {}, {}]})
    assert FLOW.render_outputs(context) == {"count": 3}


def test_node_lookup_and_registry() -> None:
    """`node(id)` finds body nodes too; NODE_TYPES maps every `type:` to its class."""
    assert FLOW.node("video").type == "kling.video"
    with pytest.raises(KeyError):
        FLOW.node("nope")
    assert NODE_TYPES["set"] is SetNode
    assert set(NODE_TYPES) == {
        "kling.generate_video",
        "kling.wait",
        "kling.video",
        "piapi.task",
        "download",
        "loop",
        "ai.chat",
        "http.request",
        "set",
    }


def test_workflows_can_be_built_in_code() -> None:
    """Nodes accept `with_`/`if_` by name as well as `with`/`if` by alias."""
    node = SetNode(id="note", type="set", with_={"values": {"a": 1}})
    workflow = Workflow(name="coded", nodes=[node])
    assert workflow.nodes[0].with_ == {"values": {"a": 1}}
    assert workflow.source_path is None
    assert workflow.line_of(("nodes", 0)) is None


def test_a_loop_without_a_label_keeps_the_content_hash_it_had_before_labels() -> None:
    """Adding `label:` to the spec did not make every published loop workflow a new version."""
    text = """
name: hashed
nodes:
  - id: each
    type: loop
    with: {items: [1, 2]}
    nodes:
      - {id: note, type: set, with: {values: {n: "{{ item }}"}}}
"""
    plain = Workflow.model_validate(yaml.safe_load(text))
    # The hash this file had before loops could have a `label:` (computed then).
    assert plain.content_hash == "81a974d263ca4786540bd0e558e987a79b2b6f9014e0c71330780f95426a5cab"
    labelled = Workflow.model_validate(
        yaml.safe_load(text.replace("type: loop", "type: loop\n    label: '{{ item }}'"))
    )
    assert labelled.content_hash != plain.content_hash
