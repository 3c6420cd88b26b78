"""The batch live view: through a pipe, one plain line per state change; through a
pseudo-terminal, a summary line above a bounded table of what is in flight."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest

from klingflow.emulator import EmulatorServer

from .conftest import Invoke

# Four rows, two at a time: the other two wait for a slot, and must say `queued`.
BATCH = """\
name: pairs
budget_usd: 10
inputs:
  rows: {type: array, required: true}
nodes:
  - id: each
    type: loop
    with: {items: "{{ inputs.rows }}", concurrency: 2}
    nodes:
      - id: video
        type: kling.video
        with: {prompt: "{{ item.prompt }}", duration: 5}
"""
ROWS = "prompt,slug\na fox,fox\na cat,cat\nan owl,owl\na seal,seal\n"


@pytest.fixture
def batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KLINGFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("KLINGFLOW_DATABASE_URL", raising=False)
    monkeypatch.setenv("KLINGFLOW_POLL_SECONDS", "0.02")
    (tmp_path / "pairs.yaml").write_text(BATCH)
    (tmp_path / "rows.csv").write_text(ROWS)
    return tmp_path


def test_piped_the_view_is_one_plain_line_per_state_change(
    klingflow: Invoke, batch: Path, emulator: EmulatorServer
) -> None:
    """Each row is labelled by its slug, waits as `queued`, then runs and completes, once each."""
    emulator.configure(processing_seconds=30)  # long enough that two rows wait for a slot
    result = klingflow("run", str(batch / "pairs.yaml"), "-i", f"rows=@{batch / 'rows.csv'}")
    assert result.exit_code == 0, result.output
    changes = [line for line in result.stderr.splitlines() if re.match(r"^\d+\. ", line)]
    by_row: dict[str, list[str]] = {}
    for line in changes:
        match = re.match(r"^\d+\. (\w+): (\w+) · ", line)
        if match and match.group(1) in {"fox", "cat", "owl", "seal"}:
            by_row.setdefault(match.group(1), []).append(match.group(2))
    assert set(by_row) == {"fox", "cat", "owl", "seal"}
    for states in by_row.values():
        assert states[-1] == "completed"
        assert len(states) == len(set(states))  # each change printed once
    assert sum("queued" in states for states in by_row.values()) >= 2  # waiting for a slot
    assert changes[-1].endswith("4/4 done · $2.00 of $10.00")


def test_on_a_terminal_the_view_is_a_summary_above_the_rows_in_flight(
    batch: Path, emulator: EmulatorServer, api_key: str
) -> None:
    """Through a pseudo-terminal: `N/4 done · $X of $10.00` and each row in flight by slug."""
    emulator.configure(processing_seconds=30)
    env = {
        **os.environ,
        "PIAPI_BASE_URL": emulator.url,
        "PIAPI_API_KEY": api_key,
        "TERM": "xterm-256color",
        "COLUMNS": "120",
        "LINES": "40",
    }
    env.pop("NO_COLOR", None)
    controller, terminal = pty.openpty()
    with subprocess.Popen(
        [sys.executable, "-m", "klingflow", "run", str(batch / "pairs.yaml"), "-i",
         f"rows=@{batch / 'rows.csv'}"],
        stdin=terminal, stdout=terminal, stderr=terminal, env=env, close_fds=True,
    ) as process:  # fmt: skip
        os.close(terminal)
        screen = b""
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            screen += chunk
        process.wait(timeout=120)
    os.close(controller)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.decode("utf-8", "replace"))
    assert process.returncode == 0, text
    assert re.search(r"\d/4 done · \$\d\.\d\d of \$10\.00", text)
    for slug in ("fox", "cat", "owl", "seal"):
        assert re.search(rf"\d\s+{slug}\s+(running|queued)", text), slug
    assert "queued" in text
    assert "completed · spent $2.00" in text  # the run's end, printed after the view
