"""Templates are bounded: size, loops, recursion, integers and JSON values (issue #15,
point 11). Each hostile template is a TemplateError, never a hang, a crash or a huge string."""

from __future__ import annotations

import pytest

from klingflow.emulator import EmulatorServer
from klingflow.errors import TemplateError
from klingflow.workflows import render, template_context
from klingflow.workflows.records import RunStatus

from .harness import Harness

CONTEXT = template_context(trigger={}, inputs={"n": 3}, outputs={})

HOSTILE = {
    "concat": "{{ 'x' * 999999 ~ 'x' * 999999 }}",
    "plus": "{{ 'x' * 999999 + 'x' * 999999 }}",
    "replace-method": "{{ ('x' * 999999).replace('x', 'yy') }}",
    "replace-filter": "{{ ('x' * 99999) | replace('', 'y' * 99999) }}",
    "percent-width": "{{ '%999999999s' % 'x' }}",
    "percent-many": "{{ '%s%s' % ('x' * 999999, 'y' * 999999) }}",
    "format-width": "{{ '{:>999999999}'.format('x') }}",
    "format-filter": "{{ '%s%s' | format('x' * 999999, 'x' * 999999) }}",
    "center-method": "{{ 'x'.center(10 ** 9) }}",
    "center-filter": "{{ 'x' | center(10 ** 9) }}",
    "ljust": "{{ 'x'.ljust(10 ** 8) }}",
    "zfill": "{{ '1'.zfill(10 ** 8) }}",
    "expandtabs": "{{ ('\\t' * 1000).expandtabs(999999) }}",
    "list-mult": "{{ [1] * 999999 * 2 }}",
    "join-method": "{{ ', '.join(['x' * 999999] * 1000) }}",
    "join-filter": "{{ (['x' * 999999] * 999999) | join }}",
    "indent": "{{ ('x\\n' * 500000) | indent(999) }}",
    "nested-loops": (
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    ),
    "loop-output": "{% for i in range(100000) %}{{ 'x' * 999 }}{% endfor %}",
    "namespace-growth": (
        "{% set ns = namespace(s='') %}{% for i in range(10000) %}"
        "{% set ns.s = ns.s ~ 'x' * 999 %}{% endfor %}{{ ns.s | length }}"
    ),
    "macro-loop": (
        "{% macro m() %}{% for i in range(100000) %}{{ 'x' * 9999 }}{% endfor %}{% endmacro %}"
        "{{ m() | length }}"
    ),
    "recursion": "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
    "power-chain": "{{ (9 ** 999) ** 999 }}",
    "big-product": "{{ 10 ** 999 * 10 ** 999 * 10 ** 999 * 10 ** 999 }}",
    "range-value": "{{ range(3) }}",
    "function-value": "{{ lipsum }}",
    "infinite": "{{ 1e308 * 10 }}",
    "include": "{% include 'other.yaml' %}",
}


@pytest.mark.parametrize("source", list(HOSTILE.values()), ids=list(HOSTILE))
def test_hostile_templates_are_refused_with_a_template_error(source: str) -> None:
    """Each hostile template raises a TemplateError naming the node and field."""
    with pytest.raises(TemplateError) as caught:
        render(source, CONTEXT, node_id="n1", field="with.prompt")
    assert "n1" in str(caught.value)
    assert "with.prompt" in str(caught.value)


def test_ordinary_templates_still_render() -> None:
    """Normal use stays within every limit: loops, joins, formats, native values."""
    assert render("{{ range(inputs.n) | list }}", CONTEXT, node_id=None, field="f") == [0, 1, 2]
    text = "{% for i in range(1000) %}{{ i }},{% endfor %}"
    assert render(text, CONTEXT, node_id=None, field="f").count(",") == 1000
    assert render("{{ '%05d' % 42 }}", CONTEXT, node_id=None, field="f") == "00042"
    assert render("{{ ', '.join(['a', 'b']) }}", CONTEXT, node_id=None, field="f") == "a, b"
    assert render("{{ ('x' * 1000) | length }}", CONTEXT, node_id=None, field="f") == 1000
    assert render("{{ {'a': [1, 2.5, none]} }}", CONTEXT, node_id=None, field="f") == {
        "a": [1, 2.5, None]
    }


@pytest.mark.parametrize("name", ["nested-loops", "range-value", "recursion", "concat"])
def test_a_run_with_a_hostile_template_pauses_with_a_clear_error(
    harness: Harness, emulator: EmulatorServer, name: str
) -> None:
    """The run pauses on the node, the message names the field; nothing is paid."""
    source = HOSTILE[name].replace('"', '\\\\"')
    workflow = f"""
name: hostile
nodes:
  - id: compute
    type: set
    with:
      values: {{x: "{source}"}}
"""
    run = harness.run(workflow)
    assert run.status == RunStatus.PAUSED, run.message
    assert run.paused_node == "compute"
    assert "with.values.x" in (run.message or "")
    assert emulator.stats()["creates"] == 0
