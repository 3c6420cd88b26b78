"""Checks before a run: references, names, inputs, and literal parameters by the client's rules."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest

from klingflow.errors import WorkflowDefinitionError, WorkflowProblem
from klingflow.workflows import Workflow, load_workflow_text, validate_workflow
from klingflow.workflows.validation import check_params


def problems(text: str) -> list[WorkflowProblem]:
    with pytest.raises(WorkflowDefinitionError) as caught:
        load_workflow_text(textwrap.dedent(text), path="wf.yaml")
    return caught.value.problems


def one(text: str) -> WorkflowProblem:
    (problem,) = problems(text)
    return problem


def workflow(nodes: str, *, inputs: str = "{}") -> str:
    return (
        f"name: checks\ninputs: {inputs}\nnodes:\n{textwrap.indent(textwrap.dedent(nodes), '  ')}"
    )


def messages(node_type: str, data: dict[str, Any]) -> dict[str, str]:
    return {".".join(map(str, path)): message for path, message in check_params(node_type, data)}


# --- references ---------------------------------------------------------------------------


def test_a_reference_to_a_missing_node_suggests_the_closest_id() -> None:
    """`nodes.vidoe` names the node that does not exist and the likely one."""
    problem = one(
        workflow("""\
        - {id: video, type: kling.video, with: {prompt: x}}
        - {id: save, type: download, with: {url: "{{ nodes.vidoe.output.video_url }}"}}
        """)
    )
    assert (problem.line, problem.node_id, problem.field) == (5, "save", "with.url")
    assert problem.message == "refers to node 'vidoe', which does not exist (did you mean 'video'?)"


def test_a_node_cannot_use_a_node_that_runs_later() -> None:
    """References point backwards only: the flow is the order of the file."""
    problem = one(
        workflow("""\
        - {id: save, type: download, with: {url: "{{ nodes.video.output.video_url }}"}}
        - {id: video, type: kling.video, with: {prompt: x}}
        """)
    )
    assert problem.node_id == "save"
    assert "runs later" in problem.message


def test_a_node_cannot_refer_to_itself() -> None:
    """An `if` reading the node's own output is refused."""
    problem = one(
        workflow("""\
        - id: video
          type: kling.video
          if: "{{ nodes.video.output.status == 'completed' }}"
          with: {prompt: x}
        """)
    )
    assert (problem.field, problem.message) == ("if", "node 'video' refers to itself")


def test_loop_bodies_see_earlier_body_nodes_and_nodes_before_the_loop() -> None:
    """Inside a body: earlier body nodes and nodes before the loop are fine."""
    text = workflow("""\
    - {id: style, type: set, with: {values: {look: cinematic}}}
    - id: each
      type: loop
      with: {items: [a, b]}
      nodes:
        - id: video
          type: kling.video
          with: {prompt: "{{ item }}, {{ nodes.style.output.look }}"}
        - id: save
          type: download
          if: "{{ nodes.video.output.status == 'completed' }}"
          with: {url: "{{ nodes.video.output.video_url }}", name: "{{ loop.index }}.mp4"}
    - {id: report, type: set, with: {values: {all: "{{ nodes.each.output }}"}}}
    """)
    assert load_workflow_text(text).node_count == 5


def test_body_nodes_are_not_addressable_outside_their_loop() -> None:
    """After the loop, `nodes.video` is refused with a pointer to the loop's output list."""
    problem = one(
        workflow("""\
        - id: each
          type: loop
          with: {items: [a]}
          nodes:
            - {id: video, type: kling.video, with: {prompt: "{{ item }}"}}
        - {id: report, type: set, with: {values: {url: "{{ nodes.video.output.video_url }}"}}}
        """)
    )
    assert problem.node_id == "report"
    assert "inside loop 'each'" in problem.message
    assert "nodes.each.output" in problem.message


def test_a_body_node_cannot_read_its_own_loop() -> None:
    """The loop's output exists only after all items, so its body cannot read it."""
    problem = one(
        workflow("""\
        - id: each
          type: loop
          with: {items: [a]}
          nodes:
            - {id: note, type: set, with: {values: {x: "{{ nodes.each.output }}"}}}
        """)
    )
    assert "the loop this node runs in" in problem.message


def test_nodes_expose_only_their_output() -> None:
    """`nodes.<id>.outptu` is caught before the run."""
    problem = one(
        workflow("""\
        - {id: video, type: kling.video, with: {prompt: x}}
        - {id: save, type: download, with: {url: "{{ nodes.video.outptu.video_url }}"}}
        """)
    )
    assert problem.message == "nodes.video has no 'outptu'; use nodes.video.output"


def test_outputs_may_read_top_level_nodes_only() -> None:
    """`outputs:` sees every top-level node but not loop bodies, and names its key."""
    text = (
        workflow("""\
    - id: each
      type: loop
      with: {items: [a]}
      nodes:
        - {id: video, type: kling.video, with: {prompt: "{{ item }}"}}
    """)
        + 'outputs:\n  ok: "{{ nodes.each.output }}"\n  bad: "{{ nodes.video.output }}"\n'
    )
    problem = one(text)
    assert (problem.node_id, problem.field, problem.line) == (None, "outputs.bad", 11)


# --- names and inputs ---------------------------------------------------------------------


def test_item_and_loop_outside_a_loop_are_refused() -> None:
    """`item` and `loop` exist only in a loop body, not even in the loop's own `with:`."""
    found = problems(
        workflow("""\
        - {id: video, type: kling.video, with: {prompt: "{{ item.prompt }}"}}
        - id: each
          type: loop
          with: {items: "{{ loop.index }}"}
          nodes:
            - {id: s, type: set, with: {values: {}}}
        """)
    )
    assert [(p.node_id, p.message) for p in found] == [
        ("video", "'item' is only defined inside a loop's nodes"),
        ("each", "'loop' is only defined inside a loop's nodes"),
    ]


def test_unknown_top_level_names_are_refused_with_a_hint() -> None:
    """Only trigger, inputs and nodes exist at the top level; a typo gets a suggestion."""
    found = problems(
        workflow("""\
        - {id: a, type: set, with: {values: {x: "{{ input.prompt }}", y: "{{ prompt }}"}}}
        """)
    )
    assert [p.message for p in found] == [
        "unknown name 'input' (did you mean 'inputs'?)",
        "unknown name 'prompt' (use inputs, nodes, trigger)",
    ]


def test_jinja_globals_and_template_locals_are_not_unknown_names() -> None:
    """`range(...)` and `{% for %}` variables are fine."""
    load_workflow_text(
        workflow("""\
        - {id: a, type: set, with: {values: {x: "{% for n in range(3) %}{{ n }}{% endfor %}"}}}
        """)
    )


def test_undeclared_inputs_are_refused() -> None:
    """`inputs.<name>` must be declared under `inputs:`."""
    problem = one(
        workflow(
            """\
            - {id: video, type: kling.video, with: {prompt: "{{ inputs.promt }}"}}
            """,
            inputs="{prompt: {type: string, required: true}}",
        )
    )
    assert problem.message == "inputs.promt is not declared under inputs (did you mean 'prompt'?)"


def test_unknown_loop_attributes_are_refused() -> None:
    """`loop.idx` is not one of index, number and length."""
    problem = one(
        workflow("""\
        - id: each
          type: loop
          with: {items: [a]}
          nodes:
            - {id: s, type: set, with: {values: {n: "{{ loop.idx }}"}}}
        """)
    )
    assert problem.message.startswith("loop.idx does not exist")


def test_template_syntax_errors_are_reported_with_their_field() -> None:
    """A template that does not parse is a problem at its field."""
    problem = one(workflow('- {id: a, type: set, with: {values: {x: "{{ trigger.x "}}}\n'))
    assert problem.field == "with.values.x"
    assert problem.message.startswith("template syntax error")


def test_if_must_be_one_expression() -> None:
    """An `if` with text around the expression would always be true, so it is refused."""
    problem = one(
        workflow("""\
        - {id: a, type: set, with: {values: {}}}
        - {id: b, type: set, if: "{{ nodes.a.output }} is set", with: {values: {}}}
        """)
    )
    assert (problem.field, problem.node_id) == ("if", "b")


def test_node_ids_are_unique_across_loop_bodies() -> None:
    """An id reused inside a loop body is reported at the second use."""
    problem = one(
        workflow("""\
        - {id: video, type: kling.video, with: {prompt: x}}
        - id: each
          type: loop
          with: {items: [a]}
          nodes:
            - {id: video, type: kling.video, with: {prompt: "{{ item }}"}}
        """)
    )
    assert (problem.line, problem.field) == (9, "id")
    assert problem.message == "duplicate node id (first on line 4)"


def test_validate_workflow_works_on_a_workflow_built_in_code() -> None:
    """Without a file there are no lines, but every problem is still found."""
    built = Workflow.model_validate(
        {
            "name": "in-code",
            "nodes": [
                {"id": "a", "type": "set", "with": {"values": {"x": "{{ nodes.b.output }}"}}},
                {"id": "b", "type": "kling.video", "with": {"prompt": "x", "duration": 30}},
            ],
        }
    )
    found = validate_workflow(built)
    assert [(p.line, p.node_id, p.field) for p in found] == [
        (None, "a", "with.values.x"),
        (None, "b", "with.duration"),
    ]
    assert str(found[0]).startswith("<workflow> (node 'a'): with.values.x: ")


# --- literal Kling parameters ---------------------------------------------------------------


def test_literal_kling_parameters_follow_the_client_rules() -> None:
    """Rules PiAPI would reject are found in the file, named as `with.<field>`."""
    assert messages("kling.video", {"prompt": "x", "duration": 10, "version": "1.5"}) == {
        "mode": "version 1.5 runs in pro mode only"
    }
    assert messages("kling.generate_video", {"prompt": "x", "model_name": "Kling V9"}) == {
        "model_name": "unknown model name 'Kling V9' (e.g. 'Kling V2.1')"
    }
    assert messages("kling.video", {"prompt": "x", "enable_audio": True, "version": "2.1"}) == {
        "enable_audio": "needs version 2.6 or 3.0, not 2.1"
    }
    assert messages("kling.generate_video", {"duration": "5s"}) == {
        "prompt": "is required for text-to-video (no image_url or elements)"
    }


def test_the_seed_action_fields_are_accepted_as_the_seed_writes_them() -> None:
    """`duration: "10s"` and `model_name: "Kling V1.6"` are valid literals."""
    data = {"prompt": "x", "duration": "10s", "model_name": "Kling V1.6", "aspect_ratio": "9:16"}
    assert messages("kling.generate_video", data) == {}


def test_a_yaml_number_version_is_read_as_the_version_string() -> None:
    """`version: 2.1` (a YAML float) means "2.1", not a type error."""
    assert messages("kling.video", {"prompt": "x", "version": 2.1, "duration": 10}) == {}
    assert messages("kling.video", {"prompt": "x", "version": 2.1, "duration": 7}) == {
        "duration": "must be 5 or 10 for version 2.1"
    }


def test_templated_fields_are_never_blamed() -> None:
    """A problem that some value of the templates would avoid is not reported."""
    # The template could render to a Kling 3.0 version, where duration 12 is fine.
    assert (
        messages("kling.video", {"prompt": "x", "duration": 12, "version": "{{ inputs.v }}"}) == {}
    )
    # The template could render an image_url, so no prompt is needed.
    assert messages("kling.video", {"image_url": "{{ inputs.image }}"}) == {}
    # Templated values themselves are unknown, so never wrong.
    assert messages("kling.video", {"prompt": "{{ item }}", "duration": "{{ inputs.d }}"}) == {}


def test_problems_no_template_value_can_fix_are_still_reported() -> None:
    """A literal duration no version accepts is reported even with a templated version."""
    found = messages("kling.video", {"prompt": "x", "duration": 40, "version": "{{ inputs.v }}"})
    assert list(found) == ["duration"]


def test_multi_shot_rules_are_checked_on_literal_shots() -> None:
    """Multi-shot needs 3.0 and 3-15 s in all; templated shot prompts are fine."""
    shots = [{"prompt": "{{ item.a }}", "duration": 10}, {"prompt": "b", "duration": 8}]
    assert messages("kling.video", {"multi_shots": shots}) == {
        "multi_shots": "shot durations must add up to 3-15 s, got 18"
    }
    assert messages("kling.video", {"multi_shots": shots[:1], "enable_audio": True}) == {}


def test_unknown_kling_parameters_do_not_hide_the_rules() -> None:
    """A typo is reported next to the rules the other fields break."""
    found = messages("kling.video", {"promt": "x", "prompt": "y", "duration": 11, "version": "2.6"})
    assert found == {
        "promt": "is not a parameter of kling.video (did you mean 'prompt'?)",
        "duration": "must be 5 or 10 for version 2.6",
    }


def test_kling_video_node_fields_are_checked_too() -> None:
    """`download`, `name` and `deadline_seconds` belong to the node and have their own rules."""
    found = messages("kling.video", {"prompt": "x", "name": "/etc/x.mp4", "deadline_seconds": 0})
    assert set(found) == {"name", "deadline_seconds"}


# --- piapi.task -------------------------------------------------------------------------------


def test_piapi_task_types_must_exist() -> None:
    """An unknown task type is refused with the closest known one."""
    found = messages("piapi.task", {"task_type": "extend_vidoe", "input": {}})
    assert found == {
        "task_type": "'extend_vidoe' is not a kling task type (did you mean 'extend_video'?)"
    }
    assert messages("piapi.task", {"input": {}}) == {
        "task_type": "is required (a Kling task type such as 'extend_video')"
    }


def test_a_literal_piapi_input_is_checked_by_parse_task_request() -> None:
    """A fully literal input gets every rule of its task type."""
    found = messages("piapi.task", {"task_type": "lip_sync", "input": {"origin_task_id": "t"}})
    assert found == {"input.tts_text": "give tts_text or local_dubbing_url (what to say)"}
    found = messages("piapi.task", {"task_type": "extend_video", "input": {"prompt": "x"}})
    assert found == {"input.origin_task_id": "is required"}
    found = messages("piapi.task", {"model": "klingg", "task_type": "sound", "input": {}})
    assert found == {"model": "unknown model 'klingg' (did you mean 'kling'?)"}


def test_a_partly_templated_piapi_input_is_checked_on_its_literals() -> None:
    """Templated input fields stand in as present; literal ones keep their rules."""
    origin = "{{ nodes.first.output.task_id }}"
    ok = {"task_type": "extend_video", "input": {"origin_task_id": origin, "prompt": "more"}}
    assert messages("piapi.task", ok) == {}
    bad = {"task_type": "extend_video", "input": {"origin_task_id": origin, "cfg_scale": 3}}
    assert list(messages("piapi.task", bad)) == ["input.cfg_scale"]
    unknown = {"task_type": "extend_video", "input": {"origin_task_id": origin, "colour": "red"}}
    assert list(messages("piapi.task", unknown)) == ["input.colour"]


def test_piapi_download_needs_wait() -> None:
    """Only a finished task has files to download."""
    data = {"task_type": "sound", "input": {"prompt": "rain"}, "wait": False, "download": True}
    assert messages("piapi.task", data) == {
        "download": "needs wait: true (only a finished task has files)"
    }


# --- the other node types -----------------------------------------------------------------------


def test_download_names_cannot_escape_the_output_folder() -> None:
    """Absolute paths, `..`, backslashes and subfolders are refused: downloads land in the
    run's folder itself, so `validate` refuses what the download would refuse after paying."""
    for name in ("../x.mp4", "/tmp/x.mp4", "a/../../x.mp4", "C:\\x.mp4", "~/x.mp4", "clips/x.mp4"):
        assert "name" in messages("download", {"url": "https://x/y.mp4", "name": name}), name
    assert messages("download", {"url": "https://x/y.mp4", "name": "1-fox.mp4"}) == {}


def test_ai_chat_takes_a_prompt_or_messages() -> None:
    """Exactly one of `prompt` and `messages`, and a sane temperature."""
    assert messages("ai.chat", {}) == {"prompt": "give exactly one of prompt and messages"}
    both = {"prompt": "x", "messages": [{"role": "user", "content": "y"}]}
    assert messages("ai.chat", both) == {"prompt": "give exactly one of prompt and messages"}
    assert list(messages("ai.chat", {"prompt": "x", "temperature": 5})) == ["temperature"]
    assert list(messages("ai.chat", {"messages": [{"role": "robot", "content": "x"}]})) == [
        "messages.0.role"
    ]


def test_http_request_checks_method_url_and_timeout() -> None:
    """`http.request` accepts a lowercase method and refuses non-HTTP URLs."""
    assert messages("http.request", {"method": "post", "url": "https://x", "json": {"a": 1}}) == {}
    found = messages(
        "http.request", {"method": "FETCH", "url": "file:///etc", "timeout_seconds": 0}
    )
    assert set(found) == {"method", "url", "timeout_seconds"}


def test_loop_concurrency_is_at_least_one_and_items_a_list() -> None:
    """A literal loop needs a list of items and a positive concurrency."""
    assert set(messages("loop", {"items": "abc", "concurrency": 0})) == {"items", "concurrency"}
    assert messages("loop", {"items": "{{ inputs.rows }}"}) == {}


def test_a_loop_label_is_checked_like_any_template_with_the_item_in_scope() -> None:
    """`label:` sees `item` and `loop`, not other nodes; its problems name its line."""
    problem = one(
        workflow("""\
        - id: each
          type: loop
          label: "{{ loop.number }}: {{ nodes.each.output }}"
          with: {items: [1, 2]}
          nodes:
            - {id: note, type: set, with: {values: {n: "{{ item }}"}}}
        """)
    )
    assert (problem.line, problem.node_id, problem.field) == (6, "each", "label")
    assert "nodes.each" in problem.message or "'each'" in problem.message
