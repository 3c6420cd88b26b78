"""`{{ }}` rendering: native types, strict names, the sandbox, loop variables, references."""

from __future__ import annotations

from typing import Any

import pytest

from klingflow.errors import TemplateError
from klingflow.workflows import is_template, references, render, template_context
from klingflow.workflows.templates import is_single_expression, template_usage

CONTEXT = template_context(
    trigger={"prompt": "a fox", "tags": ["a", "b"]},
    inputs={"duration": 5, "ratio": "16:9", "rows": [{"prompt": "p1"}], "flag": False},
    outputs={"video": {"status": "completed", "video_url": "https://x/v.mp4"}},
)


def in_loop(item: Any, index: int, length: int = 3) -> dict[str, Any]:
    return template_context(
        trigger={}, inputs={}, outputs={}, item=item, index=index, length=length
    )


def r(value: Any, context: dict[str, Any] = CONTEXT) -> Any:
    return render(value, context, node_id="video", field="with.prompt")


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ inputs.duration }}", 5),
        ("{{ inputs.rows }}", [{"prompt": "p1"}]),
        ("{{ inputs.flag }}", False),
        ("{{ trigger.tags }}", ["a", "b"]),
        ("{{ inputs.duration * 2 }}", 10),
        ("{{- inputs.duration -}}", 5),
        ("{{ {'a': inputs.duration} }}", {"a": 5}),
        ("{{ nodes.video.output.status == 'completed' }}", True),
    ],
)
def test_a_single_expression_keeps_its_native_type(source: str, expected: Any) -> None:
    """A value that is exactly one `{{ expression }}` renders to the expression's own value."""
    assert r(source) == expected
    assert type(r(source)) is type(expected)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ inputs.duration }}s", "5s"),
        (" {{ inputs.duration }}", " 5"),
        ("{{ inputs.duration }}{{ inputs.duration }}", "55"),
        ("ratio {{ inputs.ratio }}", "ratio 16:9"),
        ("{% if inputs.flag %}yes{% else %}no{% endif %}", "no"),
    ],
)
def test_anything_else_renders_to_a_string(source: str, expected: str) -> None:
    """Text around an expression, or several expressions, make a string."""
    assert r(source) == expected


def test_literals_come_back_unchanged() -> None:
    """Values without template syntax, of any type, are returned as they are."""
    for value in ("plain text", 5, 2.5, True, None, {"a": 1}, [1, "x"]):
        assert r(value) == value


def test_rendering_recurses_through_dicts_and_lists() -> None:
    """Templates nested in mappings and lists are rendered in place, keys untouched."""
    value = {"shots": [{"prompt": "{{ trigger.prompt }}", "duration": "{{ inputs.duration }}"}]}
    assert r(value) == {"shots": [{"prompt": "a fox", "duration": 5}]}


def test_undefined_names_raise_template_error_naming_node_and_field() -> None:
    """A missing name is an error with the node id and the field, never an empty string."""
    with pytest.raises(TemplateError) as caught:
        r("{{ inputs.nope }}")
    assert caught.value.node_id == "video"
    assert caught.value.field == "with.prompt"
    assert "nope" in str(caught.value)


def test_undefined_inside_text_and_inside_a_native_list_are_errors_too() -> None:
    """Strictness holds in string templates and inside values a native expression builds."""
    for source in ("a {{ missing }} b", "{{ [1, inputs.nope] }}", "{{ {'k': missing} }}"):
        with pytest.raises(TemplateError):
            r(source)


def test_nested_errors_name_the_full_field_path() -> None:
    """An error deep in a structure names the path to the value, list indexes included."""
    with pytest.raises(TemplateError) as caught:
        render(
            {"shots": [{"prompt": "ok"}, {"prompt": "{{ nope }}"}]},
            CONTEXT,
            node_id="n",
            field="with",
        )
    assert caught.value.field == "with.shots[1].prompt"


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__.os }}",
        "{{ lipsum.__globals__['os'] }}",
        "{{ self.__init__.__globals__ }}",
        "{{ trigger.__class__ }}",
        "{{ trigger.tags.append('x') }}",
        "{{ inputs.update({'duration': 1}) }}",
        "{{ namespace.__init__ }}",
    ],
)
def test_python_internals_and_mutation_are_refused(source: str) -> None:
    """The sandbox refuses dunder access and mutating methods, as a TemplateError."""
    with pytest.raises(TemplateError, match=r"sandbox|unsafe|undefined|attribute"):
        r(source)
    assert CONTEXT["trigger"]["tags"] == ["a", "b"]


@pytest.mark.parametrize("source", ["{{ 'x' * 10**9 }}", "{{ [0] * 10**8 }}", "{{ 2 ** 100000 }}"])
def test_huge_results_are_refused(source: str) -> None:
    """`*` and `**` cannot build giant values that would exhaust memory or CPU."""
    with pytest.raises(TemplateError, match="sandbox"):
        r(source)


def test_bad_expressions_become_template_errors() -> None:
    """Syntax errors and runtime errors in expressions are TemplateErrors with a cause."""
    for source in ("{{ 1 / 0 }}", "{{ 'a' + 1 }}", "{{ x }", "{% if %}"):
        with pytest.raises(TemplateError) as caught:
            r(source)
        assert caught.value.__cause__ is not None


def test_loop_variables_are_index_number_length_and_item() -> None:
    """Inside a loop, `loop.index` is 0-based, `loop.number` 1-based, `item` the element."""
    context = in_loop({"slug": "red-fox"}, 2)
    assert render("{{ loop.index }}", context, node_id="n", field="f") == 2
    assert render("{{ loop.number }}", context, node_id="n", field="f") == 3
    assert render("{{ loop.length }}", context, node_id="n", field="f") == 3
    name = "{{ loop.number }}-{{ item.slug }}.mp4"
    assert render(name, context, node_id="n", field="f") == "3-red-fox.mp4"


def test_item_and_loop_do_not_exist_outside_a_loop() -> None:
    """The top-level context has no `item` or `loop`."""
    for source in ("{{ item }}", "{{ loop.index }}"):
        with pytest.raises(TemplateError):
            r(source)


def test_default_and_slug_filters_work_with_strict_undefined() -> None:
    """`default` fills a missing key; `slug` makes a safe file name part."""
    context = in_loop({"prompt": "Red Fox, at Dawn!"}, 0)
    source = "{{ item.slug | default(item.prompt) | slug }}"
    assert render(source, context, node_id="n", field="f") == "red-fox-at-dawn"


def test_is_template_detects_template_syntax_only_in_strings() -> None:
    """Strings with `{{`, `{%` or `{#` are templates; other values never are."""
    assert is_template("{{ x }}")
    assert is_template("a {% if x %}b{% endif %}")
    assert not is_template("plain {text}")
    assert not is_template(5)
    assert not is_template(["{{ x }}"])


def test_single_expression_detection_follows_the_ast() -> None:
    """Only one output expression with nothing around it counts as a single expression."""
    assert is_single_expression("{{ a }}")
    assert is_single_expression("{{ '}}' }}")
    assert not is_single_expression("{{ a }} ")
    assert not is_single_expression("{{ a }}{{ b }}")
    assert not is_single_expression("{{ a ")


def test_references_walk_the_ast_not_the_text() -> None:
    """Node ids come from `nodes.<id>` and `nodes['id']` accesses, not from string contents."""
    value = {
        "a": "{{ nodes.video.output.video_url }}",
        "b": ["{{ nodes['write'].output.text | trim }}"],
        "c": "{{ 'nodes.fake.output' }} and {{ trigger.nodes }}",
        "d": "{% for n in [1] %}{{ nodes.inner.output }}{% endfor %}",
        "e": "nodes.plain.output",
    }
    assert references(value) == {"video", "write", "inner"}


def test_template_usage_reports_free_names_and_dynamic_access() -> None:
    """Usage lists the top-level names read and flags keys computed at run time."""
    usage = template_usage("{{ nodes[inputs.which].output }} {{ item.slug }}")
    assert usage.names == {"nodes", "inputs", "item"}
    assert usage.has_dynamic_access
    assert ("item", "slug") in usage.paths
    assert template_usage("{{ x ").syntax_error is not None
