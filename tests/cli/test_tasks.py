"""`klingflow task get|wait|cancel` on tasks that already exist."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from klingflow.cli.exit_codes import INTERRUPTED_EXIT_CODE, TOO_LATE_EXIT_CODE
from klingflow.emulator import EmulatorServer

from .conftest import Invoke


def submit(klingflow: Invoke) -> str:
    result = klingflow("video", "a red fox", "--no-wait")
    task_id: str = json.loads(result.stdout)["data"]["task_id"]
    return task_id


def test_get_shows_status_and_cost(klingflow: Invoke, emulator: EmulatorServer) -> None:
    """`task get` prints the task's status and what it costs."""
    emulator.configure(pending_seconds=10_000)
    task_id = submit(klingflow)
    result = klingflow("task", "get", task_id)
    assert result.exit_code == 0
    assert f"{task_id}  pending" in result.stdout
    assert "cost     $0.50 (point)" in result.stdout


def test_wait_resumes_a_task_and_downloads_it(klingflow: Invoke, tmp_path: Path) -> None:
    """`task wait --out` finishes what `video --no-wait` started, without resubmitting."""
    task_id = submit(klingflow)
    result = klingflow("task", "wait", task_id, "--out", str(tmp_path), "--poll-interval", "0.01")
    assert result.exit_code == 0, result.output
    assert Path(result.stdout.strip()) == tmp_path / f"{task_id}.mp4"


def test_wait_past_the_deadline_says_resume_and_exits_8(
    klingflow: Invoke, emulator: EmulatorServer
) -> None:
    """A wait that times out tells the user to resume, never to resubmit."""
    emulator.configure(pending_seconds=10_000)
    task_id = submit(klingflow)
    result = klingflow("task", "wait", task_id, "--deadline", "0.001", "--poll-interval", "0.01")
    assert result.exit_code == 8
    assert f"klingflow task wait {task_id}" in result.stderr
    assert "do not resubmit" in result.stderr
    assert emulator.stats()["creates"] == 1


def test_cancel_stops_a_pending_task(klingflow: Invoke, emulator: EmulatorServer) -> None:
    """A pending task can be cancelled; the task then shows PiAPI's cancelled state."""
    emulator.configure(pending_seconds=10_000)
    task_id = submit(klingflow)
    result = klingflow("task", "cancel", task_id, "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["error"]["message"] == "task cancelled"


def test_unknown_task_exits_10(klingflow: Invoke) -> None:
    """Asking for a task that does not exist is exit code 10."""
    result = klingflow("task", "get", "00000000-0000-4000-8000-000000000000")
    assert result.exit_code == 10
    assert "not found" in result.stderr


def test_cancel_after_the_task_finished_says_too_late_and_exits_20(
    klingflow: Invoke, emulator: EmulatorServer
) -> None:
    """Cancelling a completed task changes nothing, says what it was charged, and fails."""
    task_id = submit(klingflow)
    assert klingflow("task", "wait", task_id, "--poll-interval", "0.01").exit_code == 0
    result = klingflow("task", "cancel", task_id)
    assert result.exit_code == TOO_LATE_EXIT_CODE
    assert f"too late to cancel {task_id}: completed, charged $0.50" in result.stderr
    assert emulator.stats()["cancels"] == 0


@pytest.mark.parametrize("command", ["video", "task wait"])
def test_ctrl_c_while_waiting_prints_the_task_id_and_how_to_resume(
    command: str, klingflow: Invoke, emulator: EmulatorServer, api_key: str, tmp_path: Path
) -> None:
    """SIGINT during a wait exits 130 and says `klingflow task wait ID`; nothing is resubmitted."""
    emulator.configure(pending_seconds=10_000)
    args = ["a red fox"] if command == "video" else [submit(klingflow)]
    env = {**os.environ, "PIAPI_BASE_URL": emulator.url, "PIAPI_API_KEY": api_key}
    with subprocess.Popen(
        [sys.executable, "-m", "klingflow", *command.split(), *args, "--out", str(tmp_path)],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=env,
    ) as process:
        assert process.stderr is not None
        if command == "video":  # wait for the submission, then interrupt the wait
            while "submitted" not in (line := process.stderr.readline()):
                assert line, "klingflow video ended before it submitted"
        else:  # `task wait` prints nothing before its live line: wait until it polled
            while emulator.stats()["gets"] == 0:
                assert process.poll() is None
                time.sleep(0.01)
        process.send_signal(signal.SIGINT)
        _, rest = process.communicate(timeout=30)
    assert process.returncode == INTERRUPTED_EXIT_CODE, rest
    [task] = emulator.tasks()
    assert f"klingflow task wait {task['task_id']} --out {tmp_path}" in rest
    assert emulator.stats()["creates"] == 1
