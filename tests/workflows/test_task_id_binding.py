"""The run log never books one submission's task on another's, whatever PiAPI answers."""

from __future__ import annotations

from pathlib import Path

from klingflow.emulator import EmulatorServer
from klingflow.workflows.records import IntentState, RunStatus

from .harness import Harness

ONE_VIDEO = "name: once\nnodes:\n  - {id: clip, type: kling.video, with: {prompt: a fox}}\n"


def test_a_task_id_already_bound_to_another_run_pauses_loudly(
    emulator: EmulatorServer, tmp_path: Path, api_key: str
) -> None:
    """A seeded emulator restarted hands out yesterday's id: the new run pauses, naming both."""
    harness = Harness(emulator=emulator, home=tmp_path, api_key=api_key)
    emulator.configure(seed=5)
    first = harness.run(ONE_VIDEO)
    assert first.status == RunStatus.COMPLETED, first.message
    emulator.reset(keep_config=True)  # the same seed: the same task ids again

    second = harness.run(ONE_VIDEO)

    assert second.status == RunStatus.PAUSED
    assert first.run_id in (second.message or "")
    assert second.run_id in (second.message or "")
    runlog = harness.runlog()
    [old] = runlog.intents(first.run_id)
    [new] = runlog.intents(second.run_id)
    assert old.state == IntentState.COMPLETED  # the first run's booking is untouched
    assert new.state == IntentState.UNCERTAIN  # maybe paid: `runs retry` settles it
    assert new.task_id is None
    again = runlog.get_run(first.run_id)
    assert again is not None
    assert again.spent_usd == first.spent_usd > 0
