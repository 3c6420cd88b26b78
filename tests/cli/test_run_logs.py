"""`klingflow worker` logs each run it starts, pauses and finishes; `--log-format json` too."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from klingflow.cli import app
from klingflow.emulator import EmulatorServer, FaultRule

from .conftest import Invoke

CLIP = "name: clip\nnodes:\n  - {id: clip, type: kling.video, with: {prompt: a fox}}\n"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KLINGFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("KLINGFLOW_DATABASE_URL", raising=False)
    monkeypatch.setenv("KLINGFLOW_POLL_SECONDS", "0.02")
    (tmp_path / "clip.yaml").write_text(CLIP)
    return tmp_path / "home"


def worker_events(count: int, *args: str) -> list[str]:
    """Start `klingflow worker ARGS`, read its stderr until `count` run events, stop it."""
    with subprocess.Popen(
        [sys.executable, "-m", "klingflow", "worker", *args],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=dict(os.environ),
    ) as process:
        assert process.stderr is not None
        events: list[str] = []
        while len(events) < count:
            line = process.stderr.readline()
            assert line, f"the worker stopped: {events}"
            if " run " in line or line.startswith("{"):
                events.append(line.strip())
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=60)
    return events


def test_the_worker_logs_a_start_and_a_finish_with_the_spend_in_json(
    klingflow: Invoke, home: Path, tmp_path: Path
) -> None:
    """A queued run is one `started` and one `finished` JSON object: id, workflow, spend."""
    queued = klingflow("run", str(tmp_path / "clip.yaml"), "--detach")
    assert queued.exit_code == 0, queued.output
    run_id = queued.stdout.strip()
    started, finished = (json.loads(line) for line in worker_events(2, "--log-format", "json"))
    assert (started["event"], started["run_id"], started["workflow"]) == ("started", run_id, "clip")
    assert (finished["event"], finished["status"], finished["spent_usd"]) == (
        "finished",
        "completed",
        "0.50",
    )
    assert finished["time"].endswith("+00:00")


def test_the_worker_logs_a_pause_as_one_text_line(
    klingflow: Invoke, home: Path, tmp_path: Path, emulator: EmulatorServer
) -> None:
    """A run that pauses is `run paused: RUN clip paused on clip · spent $0.00 · why`."""
    emulator.add_fault(FaultRule(action="fail_task", times=None))
    queued = klingflow("run", str(tmp_path / "clip.yaml"), "--detach")
    run_id = queued.stdout.strip()
    started, paused = worker_events(2)
    assert f"run started: {run_id} clip running · spent $0.00" in started
    assert f"run paused: {run_id} clip paused on clip · spent $0.00 · " in paused


def test_serve_takes_the_same_log_format_choice() -> None:
    """`klingflow serve --help` offers `--log-format text|json`, wired as the worker's is."""
    result = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "200"})
    assert "--log-format text|json" in " ".join(result.output.split())
