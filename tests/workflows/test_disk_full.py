"""A full disk under the run database: `klingflow run` says so and exits, never hangs, and
`klingflow worker` on the freed disk finishes the batch without paying twice (issue #10).

The disk is real: a small tmpfs mounted for the test (root only; the test skips, saying why,
where mounting is not allowed).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from klingflow.emulator import EmulatorServer
from klingflow.workflows.database import make_engine
from klingflow.workflows.records import RunStatus
from klingflow.workflows.runlog import RunLog

from .harness import command_env, video_loop

PROMPTS = [f"clip {n}" for n in range(5)]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB file system: room for the databases, not for five videos beside them."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here (root needed): {made.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_stops_the_run_with_a_clear_error_and_a_worker_resumes_it(
    small_disk: Path, tmp_path: Path, emulator: EmulatorServer, api_key: str
) -> None:
    workflow = tmp_path / "batch.yaml"
    workflow.write_text(video_loop("full-disk", concurrency=5))
    home = small_disk / "home"
    env = command_env(home, emulator, api_key)
    run = subprocess.run(
        [sys.executable, "-m", "klingflow", "run", str(workflow),
         "-i", f"prompts={json.dumps(PROMPTS)}"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert run.returncode == 14, run.stderr[-2000:]
    assert "the run database refused a write" in run.stderr
    assert "klingflow worker" in run.stderr
    paid = emulator.stats()["creates"]
    assert 1 <= paid <= len(PROMPTS)

    # Room again: the same disk, larger. A worker resumes the run where it stopped.
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    runlog = RunLog(make_engine(f"sqlite:///{home / 'klingflow.sqlite'}"))
    worker = subprocess.Popen(
        [sys.executable, "-m", "klingflow", "worker"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while True:
            [record] = runlog.list_runs()
            if record.status in (RunStatus.COMPLETED, RunStatus.PAUSED, RunStatus.CRASHED):
                break
            assert time.monotonic() < deadline, f"the worker never finished {record.run_id}"
            time.sleep(0.2)
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        runlog.engine.dispose()
    assert record.status == RunStatus.COMPLETED, record.message
    assert emulator.stats()["creates"] == len(PROMPTS)  # the rest paid once, none twice
    videos = sorted(path.name for path in Path(record.output_dir).glob("*.mp4"))
    assert videos == [f"{n}.mp4" for n in range(1, len(PROMPTS) + 1)]
