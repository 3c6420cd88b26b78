"""Hostile templates, generated from every string-producing operation at several sizes: each
is a TemplateError naming the node and field, never a hang, a crash or a huge string; in a
run it pauses the node and pays for nothing (issue #15, adversarial suite)."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

from klingflow.emulator import EmulatorServer
from klingflow.errors import TemplateError
from klingflow.piapi import AsyncPiAPI, WaitPolicy
from klingflow.settings import Settings
from klingflow.workflows import load_workflow_text, render, template_context
from klingflow.workflows.engine import Engine
from klingflow.workflows.records import RunRecord, RunStatus

from .conftest import Cases

SIZES = ["10 ** 6 + 1", "10 ** 7", "10 ** 9", "2 ** 40"]
PATTERNS = [
    "{{{{ 'x' * ({n}) }}}}",
    "{{{{ 'ab' * ({n} // 2) ~ 'x' * 999999 }}}}",
    "{{{{ ('x' * 999999).replace('x', 'y' * ({n} // 999999 + 2)) }}}}",
    "{{{{ '%' ~ ({n}) ~ 's' % 'x' }}}}",
    "{{{{ ('%' ~ ({n}) ~ 's') % 'x' }}}}",
    "{{{{ ('{{:>' ~ ({n}) ~ '}}').format('x') }}}}",
    "{{{{ 'x'.center({n}) }}}}",
    "{{{{ 'x' | center({n}) }}}}",
    "{{{{ 'x'.ljust({n}) }}}}",
    "{{{{ 'x'.rjust({n}) }}}}",
    "{{{{ '1'.zfill({n}) }}}}",
    "{{{{ [0] * ({n}) }}}}",
    "{{{{ ('x' * 1000) | indent({n}) }}}}",
    "{{{{ ('\\t' * 1000).expandtabs({n} // 1000 + 1000) }}}}",
    "{{{{ (['x' * 999999] * 1000) | join(' ' * ({n} // 10 ** 6 + 1)) }}}}",
    "{{% for i in range(100000) %}}{{% for j in range(({n}) // 10 ** 5 + 2) %}}"
    "{{% endfor %}}{{% endfor %}}",
    "{{% for i in range(100000) %}}{{{{ 'x' * (({n}) // 10 ** 6 + 100) }}}}{{% endfor %}}",
    "{{{{ 10 ** 999 * 10 ** 999 * 10 ** 999 * 10 ** ({n} % 999 + 1) * 10 ** 999 }}}}",
]
FIXED = [
    "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
    "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
    "{{ (9 ** 999) ** 999 }}",
    "{{ range(3) }}",
    "{{ lipsum }}",
    "{{ cycler(1, 2) }}",
    "{{ namespace(a=1) }}",
    "{{ 1e308 * 10 }}",
    "{{ -1e308 * 10 }}",
    "{% include 'x' %}",
    "{% import 'x' as y %}",
    "{% extends 'x' %}",
    "{{ ''.__class__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ self.__init__.__globals__ }}",
    "{{ nodes.x.output }}",
    "{{ undefined_name }}",
    "{{ 1 / 0 }}",
    "{{ [1][5] }}",
    "{{ {}.pop('a') }}",
    "{{ [1].append(2) }}",
    "{{ 'a' + 1 }}",
    "{{ x }",
    "{% if %}",
    "{% set ns = namespace(s='') %}{% for i in range(10000) %}{% set ns.s = ns.s ~ 'x' * 999 %}"
    "{% endfor %}{{ ns.s | length }}",
]
CONTEXT = template_context(trigger={}, inputs={}, outputs={})


def hostile() -> list[str]:
    generated = [p.format(n=n) for p, n in itertools.product(PATTERNS, SIZES)]
    return generated + FIXED


def test_hostile_templates_are_template_errors(cases: Cases) -> None:
    """Every generated hostile template raises a TemplateError naming node and field."""
    failures: list[str] = []
    sources = hostile()
    for source in sources:
        try:
            value = render(source, CONTEXT, node_id="n1", field="with.prompt")
        except TemplateError as error:
            if "n1" not in str(error) or "with.prompt" not in str(error):
                failures.append(f"{source[:80]!r}: {error} does not name the node and field")
        except Exception as error:  # anything but a TemplateError is the bug
            failures.append(f"{source[:80]!r}: raised {type(error).__name__}: {error}")
        else:
            size = len(value) if isinstance(value, str | list) else 0
            failures.append(f"{source[:80]!r}: rendered ({size} long) instead of refusing")
    cases.add("templates", len(sources))
    assert failures == [], "\n".join(failures)


def test_hostile_templates_in_a_run_pause_and_pay_nothing(
    emulator: EmulatorServer, tmp_path: Path, api_key: str, cases: Cases
) -> None:
    """A run whose prompt template is hostile pauses on the node with its field named."""
    picks = [FIXED[0], FIXED[3], PATTERNS[0].format(n=SIZES[2]), PATTERNS[15].format(n=SIZES[0])]

    async def main() -> list[RunRecord]:
        settings = Settings(home=tmp_path, database_url=f"sqlite:///{tmp_path / 'kf.sqlite'}")
        wait = WaitPolicy(initial_interval_seconds=0.02, max_interval_seconds=0.1, jitter=0)
        client = AsyncPiAPI(api_key=api_key, base_url=emulator.url)
        async with client, Engine(settings, client=client, wait_policy=wait) as engine:
            return await work(engine)

    async def work(engine: Engine) -> list[RunRecord]:
        ids = []
        for source in picks:
            text = (
                "name: hostile\nnodes:\n  - id: words\n    type: set\n    with:\n"
                f"      values: {{x: {source!r}}}\n  - id: clip\n    type: kling.video\n"
                '    with: {prompt: "{{ nodes.words.output.x }}", download: false}\n'
            )
            run = await engine.start_run(load_workflow_text(text), {})
            ids.append(run.run_id)
        return await engine.wait(ids, timeout_seconds=60)

    runs = asyncio.run(main())
    cases.add("templates in runs", len(picks))
    for run in runs:
        assert run.status == RunStatus.PAUSED, run.message
        assert run.paused_node == "words"
        assert "with.values.x" in (run.message or "")
    assert emulator.stats()["creates"] == 0
