"""The registry of published versions (SQLite in tmp_path): outcomes, order, formats, cache."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from klingflow.errors import WorkflowDefinitionError
from klingflow.workflows import load_workflow
from klingflow.workflows.database import make_engine
from klingflow.workflows.registry import PublishedWorkflow, PublishOutcome, WorkflowRegistry

A = """\
name: nightly
nodes:
  - {id: note, type: set, with: {values: {greeting: hello}}}
"""
B = A + "schedules:\n  - {cron: '* * * * *', name: expensive}\n"
TABBED = (
    '{\n\t"name": "tabbed",\n\t"nodes": [\n'
    '\t\t{"id": "a", "type": "set", "with": {"values": {}}}\n'
    "\t]\n}\n"
)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[WorkflowRegistry]:
    engine = make_engine(f"sqlite:///{tmp_path / 'registry.sqlite'}")
    yield WorkflowRegistry(engine)
    engine.dispose()


def test_publishing_an_older_version_makes_it_the_latest_again(
    registry: WorkflowRegistry,
) -> None:
    """a, b, a: the third publish is `republished`, and a is the latest with a later time."""
    a, first = registry.publish(A)
    b, second = registry.publish(B)
    again, third = registry.publish(A)
    assert (first, second, third) == ("published", "published", "republished")
    assert again.hash == a.hash
    assert a.created_at < b.created_at < again.created_at
    assert registry.latest("nightly") == again
    assert registry.latest_hash("nightly") == a.hash
    assert [v.hash for v in registry.versions("nightly")] == [a.hash, b.hash]
    assert registry.publish(A) == (again, PublishOutcome.UNCHANGED)
    assert registry.latest_hash("missing") is None


def test_the_latest_version_s_text_reformatted_is_unchanged(registry: WorkflowRegistry) -> None:
    """A text with the same content hash is the same version; the first text is kept."""
    version, _ = registry.publish(A)
    reformatted = "# the same workflow\n" + A
    assert registry.publish(reformatted) == (version, PublishOutcome.UNCHANGED)
    assert registry.version("nightly", version.hash) == version


def test_tab_indented_json_publishes_and_loads(registry: WorkflowRegistry, tmp_path: Path) -> None:
    """JSON that YAML refuses (tabs) is stored as given and loads as it validated."""
    path = tmp_path / "tabbed.json"
    path.write_text(TABBED)
    version, outcome = registry.publish(TABBED, path=str(path))
    assert outcome == PublishOutcome.PUBLISHED
    assert version.source == TABBED
    loaded = version.load()
    assert loaded.content_hash == load_workflow(path).content_hash == version.hash
    assert registry.publish(TABBED)[1] == PublishOutcome.UNCHANGED  # no file name needed


def test_a_yaml_flow_mapping_is_still_yaml(registry: WorkflowRegistry) -> None:
    """Text that starts with `{` but is not JSON is read as YAML, as before."""
    flow = "{name: flow, nodes: [{id: a, type: set, with: {values: {}}}]}\n"
    version, _ = registry.publish(flow)
    assert version.load().name == "flow"


def test_publish_names_the_file_in_problems(registry: WorkflowRegistry) -> None:
    """Problems name the path given; without one they say `<workflow>`."""
    broken = TABBED.replace('"set"', '"sett"')
    with pytest.raises(WorkflowDefinitionError) as caught:
        registry.publish(broken, path="flows/tabbed.json")
    assert str(caught.value) == (
        "flows/tabbed.json (node 'a'): type: unknown node type 'sett' (did you mean 'set'?)"
    )
    with pytest.raises(WorkflowDefinitionError, match=r"^<workflow>"):
        registry.publish(broken)


def test_publish_all_publishes_nothing_when_one_text_is_invalid(
    registry: WorkflowRegistry,
) -> None:
    """Every text's problems are raised together, each with its path, and nothing is stored."""
    bad_json = json.dumps({"name": "bad", "nodes": []})
    with pytest.raises(WorkflowDefinitionError) as caught:
        registry.publish_all(
            [A, bad_json, "name: [\n"], paths=["a.yaml", "bad.json", "broken.yaml"]
        )
    assert [problem.path for problem in caught.value.problems] == ["bad.json", "broken.yaml"]
    assert registry.names() == []


def test_publish_all_applies_texts_in_order(registry: WorkflowRegistry) -> None:
    """Two versions of one name in one call: the later is the latest."""
    [(a, first), (b, second), (_, third)] = registry.publish_all([A, B, TABBED])
    assert (first, second, third) == ("published", "published", "published")
    assert registry.latest_hash("nightly") == b.hash
    assert registry.names() == ["nightly", "tabbed"]
    [(_, outcome)] = registry.publish_all([A])
    assert outcome == PublishOutcome.REPUBLISHED
    assert registry.latest_hash("nightly") == a.hash


def test_load_parses_each_text_once(registry: WorkflowRegistry) -> None:
    """Versions with the same text share one parsed workflow; other texts get their own."""
    version, _ = registry.publish(A)
    copy = PublishedWorkflow(version.name, version.hash, version.source, 0.0)
    assert version.load() is copy.load()
    assert registry.publish(B)[0].load() is not version.load()
