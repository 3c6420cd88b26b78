"""`klingflow publish FILE...`: valid files go into the run database's registry, or none do."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from klingflow.settings import Settings
from klingflow.workflows import load_workflow
from klingflow.workflows.database import make_engine
from klingflow.workflows.registry import WorkflowRegistry

from .conftest import Invoke

NIGHTLY = """\
name: nightly
inputs:
  who: {type: string, required: true}
nodes:
  - {id: note, type: set, with: {values: {greeting: "hello {{ inputs.who }}"}}}
schedules:
  - cron: "0 3 * * *"
    timezone: Europe/Berlin
    payload: {who: night shift}
"""


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KLINGFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("KLINGFLOW_DATABASE_URL", raising=False)
    return tmp_path / "home"


@pytest.fixture
def registry(home: Path) -> Iterator[WorkflowRegistry]:
    """The registry `klingflow publish` writes to (read after the command ran)."""
    engine = make_engine(Settings().resolved_database_url())
    yield WorkflowRegistry(engine)
    engine.dispose()


def test_publish_prints_name_hash_and_whether_it_is_new(
    klingflow: Invoke, tmp_path: Path, registry: WorkflowRegistry
) -> None:
    """A new version prints `NAME HASH published`, the same text again `unchanged`, and an
    older version's text `republished` (it is the latest again)."""
    path = tmp_path / "nightly.yaml"
    path.write_text(NIGHTLY)
    short = load_workflow(path).content_hash[:12]

    first = klingflow("publish", str(path))
    assert first.exit_code == 0, first.output
    assert first.stdout == f"nightly {short} published\n"
    assert klingflow("publish", str(path)).stdout == f"nightly {short} unchanged\n"

    path.write_text(NIGHTLY.replace("0 3 * * *", "30 3 * * *"))
    other = tmp_path / "other.json"
    other.write_text(
        json.dumps({"name": "other", "nodes": [{"id": "a", "type": "set", "with": {"values": {}}}]})
    )
    both = klingflow("publish", str(path), str(other))
    assert both.exit_code == 0, both.output
    latest = registry.latest("nightly")
    assert latest is not None
    assert latest.load().schedules[0].cron == "30 3 * * *"
    [changed, added] = both.stdout.splitlines()
    assert changed.split() == ["nightly", latest.hash[:12], "published"]
    assert added.split()[::2] == ["other", "published"]
    assert len(registry.versions("nightly")) == 2
    assert registry.names() == ["nightly", "other"]

    path.write_text(NIGHTLY)  # reverted: the first version is the latest again
    reverted = klingflow("publish", str(path))
    assert reverted.exit_code == 0, reverted.output
    assert reverted.stdout == f"nightly {short} republished\n"
    assert registry.latest_hash("nightly") == load_workflow(path).content_hash
    assert klingflow("publish", str(path)).stdout == f"nightly {short} unchanged\n"


def test_tab_indented_json_publishes_with_other_files_or_nothing_does(
    klingflow: Invoke, tmp_path: Path, registry: WorkflowRegistry
) -> None:
    """JSON indented with tabs publishes as it validated; when one file of several is
    broken, its problem names it and none of the others is published either."""
    good = tmp_path / "a.yaml"
    good.write_text(NIGHTLY)
    tabbed = tmp_path / "tabbed.json"
    tabbed.write_text(
        '{\n\t"name": "tabbed",\n\t"nodes": [\n'
        '\t\t{"id": "a", "type": "set", "with": {"values": {"x": 1}}}\n\t]\n}\n'
    )
    broken = tmp_path / "broken.json"
    broken.write_text('{\n\t"name": "broken",\n\t"nodes": [\n}\n')

    refused = klingflow("publish", str(good), str(tabbed), str(broken))
    assert refused.exit_code == 15
    assert refused.stdout == ""
    assert refused.stderr.splitlines() == [
        f"{broken}:4: invalid JSON: Expecting value (column 1)",
    ]
    assert registry.names() == []

    assert klingflow("validate", str(tabbed)).exit_code == 0
    result = klingflow("publish", str(good), str(tabbed))
    assert result.exit_code == 0, result.output
    assert [line.split()[::2] for line in result.stdout.splitlines()] == [
        ["nightly", "published"],
        ["tabbed", "published"],
    ]
    stored = registry.latest("tabbed")
    assert stored is not None
    assert stored.source == tabbed.read_text()
    assert stored.load().content_hash == load_workflow(tabbed).content_hash


def test_an_invalid_schedule_is_refused_and_nothing_is_published(
    klingflow: Invoke, tmp_path: Path, registry: WorkflowRegistry
) -> None:
    """Every problem of every file is printed with its line; exit 15; the registry stays empty."""
    good = tmp_path / "good.yaml"
    good.write_text(NIGHTLY.replace("nightly", "good"))
    bad = tmp_path / "bad.yaml"
    bad.write_text(NIGHTLY.replace("0 3 * * *", "0 25 * * *").replace("{who: night shift}", "{}"))
    result = klingflow("publish", str(good), str(bad))
    assert result.exit_code == 15
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"{bad}:7: schedules[0].cron: is not a valid cron expression: "
        "[0 25 * * *] is not acceptable, out of range",
    ]
    assert registry.names() == []

    bad.write_text(NIGHTLY.replace("{who: night shift}", "{}"))
    checked = klingflow("validate", str(bad))
    assert checked.exit_code == 15
    assert checked.stderr.strip() == f"{bad}:9: schedules[0].payload.who: is required (inputs.who)"
    assert klingflow("publish", str(bad)).exit_code == 15
    assert registry.names() == []
