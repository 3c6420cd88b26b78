"""`make bench` writes docs/benchmarks.md from its JSON: the template keeps working.

The measurements themselves take minutes and assert nothing about time (issue 16: no timing
assertions in tests); this checks that `bench/run.py --render` turns a results file into
the document, with the machine, the targets table, a missed target's margin and each
section's command, commit and load average, and that the sections that wait side by side
really run in processes of their own.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

RESULTS = {
    "machine": {
        "cores": 2,
        "cpu": "Test CPU",
        "memory_gb": 8.0,
        "os": "Linux",
        "python": "3.11.7",
        "sqlite": "3.40.1",
        "postgres": "15.8",
        "libraries": {"dbos": "3.4.0"},
    },
    "sections": {
        "makespan": {
            "name": "makespan",
            "title": "1. Makespan against the account's limit",
            "command": "bench/run.py --only makespan",
            "text": "| contender | makespan / ideal |\n|---|---:|\n| klingflow polling | 1.2 |",
            "targets": [
                {
                    "name": "makespan / ideal, polling",
                    "value": 1.2,
                    "target": "<= 1.10",
                    "ok": False,
                    "note": "",
                }
            ],
            "figures": ["images/bench/makespan.png"],
            "raw": {},
            "seconds": 12.5,
            "run": {
                "commit": "abc1234",
                "quick": True,
                "load_average": {"min": 0.5, "mean": 0.7, "max": 0.9},
                "at": "2026-12-06 07:00 UTC",
            },
        }
    },
}


def test_render_writes_the_document_from_the_json(tmp_path: Path) -> None:
    (tmp_path / "benchmarks.json").write_text(json.dumps(RESULTS), encoding="utf-8")
    subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--render", "--docs", str(tmp_path)],
        check=True,
        timeout=60,
    )
    document = (tmp_path / "benchmarks.md").read_text(encoding="utf-8")
    assert "2 cores, Test CPU" in document
    assert "Postgres 15.8" in document
    assert "| 1 | makespan / ideal, polling: **1.2** | <= 1.10 | **no** | +9% |" in document
    assert "## 1. Makespan against the account's limit" in document
    assert "commit `abc1234`" in document
    assert "load average 0.5 / 0.7 / 0.9" in document
    assert "| klingflow polling | 1.2 |" in document
    assert "![makespan](images/bench/makespan.png)" in document


def test_side_by_side_runs_each_call_in_a_process_of_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The waiting sections' contenders (bench/common.py): each in a fresh process, so none
    shares an interpreter with another, and their results come back in the calls' order."""
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    common = importlib.import_module("common")
    first, second, power = common.side_by_side(
        [os.getpid, os.getpid, partial(pow, 2, 10)], stagger_seconds=0.05
    )
    assert len({first, second, os.getpid()}) == 3
    assert power == 1024
