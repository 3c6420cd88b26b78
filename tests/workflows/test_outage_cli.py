"""`klingflow run` on Postgres through a short outage: it finishes, with no traceback.

A real `klingflow run` subprocess, KLINGFLOW_DATABASE_URL on a fresh database, which refuses
connections for 4 s mid-batch (the server is never stopped). Issue #10 point 5: the command
does not die with a traceback on a short outage; the user sees at most a one-line notice.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

from klingflow.emulator import EmulatorServer

from .harness import command_env, video_loop
from .test_outage import cut

OUTAGE_SECONDS = 4.0
PROMPTS = ["blip clip 1", "blip clip 2", "blip clip 3"]


def test_klingflow_run_rides_out_a_short_outage_without_a_traceback(
    postgres_url: str, emulator: EmulatorServer, api_key: str, tmp_path: Path
) -> None:
    """Postgres refuses connections for 4 s while the first video generates: the command
    exits 0 with every video saved and paid once, and says at most one line about it."""
    emulator.configure(processing_seconds=2_000)  # 2 s of real time per video at x1000
    (tmp_path / "batch.yaml").write_text(video_loop("blip"))
    home = tmp_path / "home"
    env = command_env(home, emulator, api_key, database_url=postgres_url)
    command = [
        sys.executable, "-m", "klingflow", "run", str(tmp_path / "batch.yaml"),
        "-i", f"prompts={json.dumps(PROMPTS)}",
    ]  # fmt: skip
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen(command, env=env, stdout=stdout, stderr=stderr)
    outage: dict[str, float] = {}
    try:
        deadline = time.monotonic() + 60
        while emulator.stats()["creates"] < 1:
            assert process.poll() is None, err.read_text()
            assert time.monotonic() < deadline, "the run never submitted"
            time.sleep(0.02)
        cut(postgres_url, is_cut=True)
        outage["began"] = time.monotonic()

        def end_outage() -> None:
            cut(postgres_url, is_cut=False)
            outage["ended"] = time.monotonic()

        timer = threading.Timer(OUTAGE_SECONDS, end_outage)
        timer.start()
        code = process.wait(timeout=90)
        timer.join()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    stdout_text, stderr_text = out.read_text(), err.read_text()
    assert code == 0, stdout_text + stderr_text
    assert outage["ended"] - outage["began"] >= OUTAGE_SECONDS
    assert "Traceback" not in stdout_text + stderr_text
    # Besides the run's progress lines, one notice: not one per connection attempt.
    notices = [line for line in stderr_text.splitlines() if "database" in line]
    assert len(notices) <= 1, stderr_text
    assert all("unreachable" in line for line in notices), notices
    assert stdout_text.splitlines() == [str(path) for path in sorted(home.glob("runs/*/*.mp4"))]
    assert emulator.stats()["creates"] == len(PROMPTS)
    assert sorted(p.name for p in home.glob("runs/*/*.mp4")) == ["1.mp4", "2.mp4", "3.mp4"]
