"""An uncertain submission's message says exactly how to settle it, for the CLI and the UI."""

from __future__ import annotations

import re

from klingflow.emulator import EmulatorServer, FaultRule
from klingflow.workflows.records import RunStatus
from klingflow.workflows.steering import Action, Command, describe_paused

from .harness import Harness

ONCE = "name: once\nnodes:\n  - {id: clip, type: kling.video, with: {prompt: a fox}}\n"
WINDOW = (
    r"a task created from \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC to \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC"
)


def test_the_pause_message_gives_the_intent_the_window_and_the_command(
    harness: Harness, emulator: EmulatorServer
) -> None:
    """The first pause and every refused retry say where to look and what to type."""
    emulator.add_fault(FaultRule(action="drop", method="POST", path="/api/v1/task", phase="after"))
    run = harness.run(ONCE)
    assert run.status == RunStatus.PAUSED
    for message in (
        run.message or "",
        harness.steer(run.run_id, Command(Action.RETRY)).message or "",
    ):
        assert re.search(WINDOW, message), message
        assert f"klingflow runs retry {run.run_id} --task-id ID" in message
        assert "checked at PiAPI first" in message
    assert "--task-id ID" in describe_paused(run)
    assert emulator.stats()["creates"] == 1
