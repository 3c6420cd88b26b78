"""`runs list` and `runs show` piped into other tools: whole ids and dates with their zone,
and run ids taken by unique prefix."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from .conftest import Invoke

TINY = "name: tiny\nnodes:\n  - {id: note, type: set, with: {values: {x: 1}}}\n"


@pytest.fixture
def run_ids(klingflow: Invoke, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Two finished runs of a workflow that pays for nothing."""
    monkeypatch.setenv("KLINGFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("KLINGFLOW_DATABASE_URL", raising=False)
    monkeypatch.setenv("KLINGFLOW_POLL_SECONDS", "0.02")
    (tmp_path / "tiny.yaml").write_text(TINY)
    ids = []
    for _ in range(2):
        result = klingflow("run", str(tmp_path / "tiny.yaml"), "--json")
        assert result.exit_code == 0, result.output
        [record] = json.loads(result.stdout)
        ids.append(record["run_id"])
    return ids


def test_runs_list_piped_keeps_whole_ids_and_dates_with_zone(
    klingflow: Invoke, run_ids: list[str]
) -> None:
    """One tab-separated line per run: the full run id, and `YYYY-MM-DD HH:MM:SS UTC`."""
    result = klingflow("runs", "list")
    assert result.exit_code == 0
    header, *lines = result.stdout.splitlines()
    assert header.split("\t")[:5] == ["run", "workflow", "status", "spent", "created"]
    rows = [line.split("\t") for line in lines]
    assert sorted(row[0] for row in rows) == sorted(run_ids)
    for row in rows:
        assert row[1:4] == ["tiny", "completed", "$0.00"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", row[4])


def test_runs_show_piped_lists_nodes_whole(klingflow: Invoke, run_ids: list[str]) -> None:
    """`runs show` prints its node table as tab-separated lines, and the creation time's zone."""
    result = klingflow("runs", "show", run_ids[0])
    assert result.exit_code == 0, result.output
    assert re.search(r"created \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", result.stdout)
    assert "note\tsucceeded\t1\t" in result.stdout


def test_a_unique_prefix_of_a_run_id_is_enough(klingflow: Invoke, run_ids: list[str]) -> None:
    """`runs show run-3f2a` and `runs show 3f2a` find the one run beginning so."""
    first, second = run_ids
    length = next(n for n in range(5, 21) if first[:n] != second[:n])
    for given in (first[:length], first[:length].removeprefix("run-")):
        if not given:
            continue
        shown = json.loads(klingflow("runs", "show", given, "--json").stdout)
        assert shown["run"]["run_id"] == first


def test_an_ambiguous_prefix_is_a_usage_error_naming_the_candidates(
    klingflow: Invoke, run_ids: list[str]
) -> None:
    """`run-` begins both runs: exit 2 and both ids listed; no run is touched."""
    result = klingflow("runs", "show", "run-")
    assert result.exit_code == 2
    words = " ".join(re.sub(r"[│╭╮╰╯─]", " ", result.output).split())
    assert all(run_id in words for run_id in run_ids)
    assert "give more of the id" in words


def test_json_outputs_use_one_money_and_time_format(klingflow: Invoke, run_ids: list[str]) -> None:
    """`runs list --json` and `runs show --json`: money "0.00", moments ISO 8601 with zone."""
    [record, *_] = json.loads(klingflow("runs", "list", "--json").stdout)
    assert record["spent_usd"] == "0.00"
    assert record["estimate_usd"] == "0.00"
    assert "estimated_usd" not in record
    assert record["created_at"].endswith("+00:00")
    shown = json.loads(klingflow("runs", "show", record["run_id"], "--json").stdout)
    assert all(node["started_at"].endswith("+00:00") for node in shown["nodes"])
