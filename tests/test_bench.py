"""`make bench` writes docs/benchmarks.md from its JSON: the template keeps working.

The measurements themselves take minutes and assert nothing about time (issue 16: no timing
assertions in tests); this checks only that `bench/run.py --render` turns a results file into
the document, with the machine, the targets table, a missed target's margin and each
section's command, commit and load average.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
