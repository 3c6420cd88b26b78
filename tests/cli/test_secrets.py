"""The API key never appears in anything the CLI prints or logs, whatever happens."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from klingflow.emulator import EmulatorServer, FaultRule

from .conftest import Invoke


def test_no_command_prints_or_logs_the_key(
    klingflow: Invoke,
    emulator: EmulatorServer,
    api_key: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every command, on success and on failure, keeps the key out of stdout, stderr and logs."""
    caplog.set_level(logging.DEBUG)
    fast = ("--poll-interval", "0.01")
    runs = [
        klingflow("video", "a red fox", "--dry-run"),
        klingflow("video", "a red fox", "--dry-run", "--json"),
        klingflow("video", "a red fox", "--out", str(tmp_path), *fast),
        klingflow("video", "a red fox", "--json", "--out", str(tmp_path), *fast),
        klingflow("cost", "a red fox"),
        klingflow("account"),
        klingflow("account", "--json"),
        klingflow("video", "a red fox", "--duration", "99"),
        klingflow("task", "get", "00000000-0000-4000-8000-000000000000"),
    ]
    submitted = klingflow("video", "a red fox", "--no-wait")
    task_id = json.loads(submitted.stdout)["data"]["task_id"]
    runs += [
        submitted,
        klingflow("task", "get", task_id, "--json"),
        klingflow("task", "wait", task_id, *fast),
        klingflow("task", "cancel", task_id),
    ]
    emulator.add_fault(FaultRule(action="fail_task"))
    runs.append(klingflow("video", "a red fox", *fast))
    emulator.add_fault(FaultRule(action="drop", method="POST", phase="after"))
    runs.append(klingflow("video", "a red fox", *fast))
    emulator.add_fault(FaultRule(action="error", status=503, times=None))
    runs.append(klingflow("task", "get", task_id))
    assert {run.exit_code for run in runs} >= {0, 3, 7, 9, 10, 13}
    for run in runs:
        assert api_key not in run.stdout
        assert api_key not in run.stderr
    assert api_key not in caplog.text
