"""Paused runs give back their execution slot (`KLINGFLOW_MAX_RUNS`, per process): a pile
of runs waiting for a command never freezes the triggers after them (issue #15, point 8)."""

from __future__ import annotations

from klingflow.emulator import EmulatorServer, FaultRule

from .conftest import StartService


def test_paused_runs_do_not_block_later_triggers(
    start_service: StartService, emulator: EmulatorServer
) -> None:
    """One slot; three runs whose generation fails pause; a fourth trigger still completes."""
    service = start_service(max_runs=1)
    service.publish()
    emulator.add_fault(FaultRule(action="fail_task", times=3))
    paused = [service.start("clip", {"prompt": f"a fox {n}"}) for n in range(3)]
    for run_id in paused:
        detail = service.settle(run_id)
        assert detail["run"]["status"] == "paused", detail["run"]["message"]
    later = service.start("clip", {"prompt": "a fox, later"})
    done = service.finish(later)
    assert done["run"]["status"] == "completed", done["run"]["message"]
    statuses = [service.http.get(f"/api/runs/{r}").json()["run"]["status"] for r in paused]
    assert statuses == ["paused"] * 3
