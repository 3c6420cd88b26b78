"""A run's life inside its workflow: it runs its nodes, pauses for a command, and ends.

The engine's `klingflow.run` workflow is `RunLife.live`. Every status write, every decision
and every wait goes through `Durable`, so a replay after a crash walks the same path and
never flips a status back; a paused run stays alive waiting for `next_command`, and what
it does with a command is steering's decision (steering.py). Nothing here touches DBOS.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from klingflow.piapi import AsyncPiAPI
from klingflow.workflows.executor import LoopRunner, NodePaused, RunState, execute_run
from klingflow.workflows.nodes.runtime import Durable, Services
from klingflow.workflows.records import RunRecord, RunStatus
from klingflow.workflows.runlog import RunLog
from klingflow.workflows.secret_inputs import open_run
from klingflow.workflows.spec import Workflow
from klingflow.workflows.steering import (
    Action,
    Command,
    PausedDecision,
    claim_if_settled,
    decide_paused,
    resolve_pause,
)

__all__ = ["RunLife", "RunSlot"]


class RunSlot:
    """One run's hold on an execution slot (KLINGFLOW_MAX_RUNS), given back while paused;
    `give` is safe to repeat, so a cancellation anywhere leaves the count right."""

    def __init__(self, slots: asyncio.Semaphore) -> None:
        self._slots = slots
        self._held = False

    async def take(self) -> None:
        """Wait for a free slot (until then, the run stays `queued`)."""
        await self._slots.acquire()
        self._held = True

    def give(self) -> None:
        """Give the slot back, if held."""
        if self._held:
            self._held = False
            self._slots.release()


@dataclass
class RunLife:
    """One run, from its first node to its end, with its pauses and the commands that end
    them; `live` returns the run's outputs (`{"cancelled": True}` for a cancelled run)."""

    run_id: str
    runlog: RunLog
    client: AsyncPiAPI
    services: Callable[[], Services]
    """The shared resources, fresh for each pass over the nodes."""
    durable: Durable
    run_slots: asyncio.Semaphore
    """Runs executing nodes at once in this process; a paused run holds none."""
    loop_runner: LoopRunner
    next_command: Callable[[], Awaitable[Command]]
    """Waits (durably) for the next command sent to this run."""

    async def live(self) -> dict[str, Any]:
        """Run the run: its epoch read once, its status written as steps."""
        runlog = self.runlog

        async def load_epoch() -> int:
            run = runlog.get_run(self.run_id)
            assert run is not None, f"run {self.run_id} is not in the run log"
            return run.epoch

        epoch: int = await self.durable.step("run.epoch", load_epoch)
        run = runlog.get_run(self.run_id)
        assert run is not None
        workflow = Workflow.model_validate(run.workflow)
        run = open_run(runlog, run, workflow, self.client.api_key)  # its secret inputs
        # Status writes are steps: a replay after a crash must not flip them back.
        slot = RunSlot(self.run_slots)
        await slot.take()  # until a slot is free, the run stays `queued`
        try:
            await self.durable.step("run.status", self._status(RunStatus.RUNNING))
            return await self._execute(run, epoch, workflow, slot)
        finally:
            slot.give()

    def _status(self, value: RunStatus, **fields: Any) -> Callable[[], Awaitable[None]]:
        """A status write, to be run as a step."""

        async def write() -> None:
            self.runlog.set_status(self.run_id, value, **fields)

        return write

    async def _execute(
        self, run: RunRecord, epoch: int, workflow: Workflow, slot: RunSlot
    ) -> dict[str, Any]:
        """The run's nodes, and its pauses: the caller holds a run slot, given back while
        the run waits for a command."""
        durable, status = self.durable, self._status
        while True:
            state = RunState(run, epoch, workflow, self.services(), durable)
            try:
                outputs = await execute_run(state, loop_runner=self.loop_runner)
            except NodePaused as paused:
                message, node = paused.error["message"], paused.node_path
                while True:  # until a command the run can act on
                    await durable.step(
                        "run.status", status(RunStatus.PAUSED, message=message, paused_node=node)
                    )
                    settled = await durable.step(
                        "run.settled", self._settled_at_pause(epoch, paused)
                    )
                    if settled:
                        command = Command(action=Action.RETRY)
                    else:
                        slot.give()  # a paused run holds no slot
                        command = await self.next_command()
                        await slot.take()
                    decision = decide_paused(command, node)
                    if decision is PausedDecision.CANCEL:
                        message = "cancelled while paused"
                        await durable.step(
                            "run.status", status(RunStatus.CANCELLED, message=message)
                        )
                        return {"cancelled": True}
                    if decision is PausedDecision.COMPLETE_EMPTY:
                        await durable.step("run.status", status(RunStatus.COMPLETED, outputs={}))
                        return {}
                    if decision is PausedDecision.RESTART:
                        epoch = await durable.step("run.restart", self._new_epoch())
                        break
                    refusal: str | None = await durable.step(
                        f"run.{command.action}", self._resolve(epoch, paused, command)
                    )
                    if refusal is None:
                        break
                    message = refusal
                await durable.step("run.status", status(RunStatus.RUNNING))
                continue
            await durable.step("run.status", status(RunStatus.COMPLETED, outputs=outputs))
            return outputs

    def _settled_at_pause(self, epoch: int, paused: NodePaused) -> Callable[[], Awaitable[bool]]:
        """Whether webhooks settled the pause before it began, as a step (`claim_if_settled`)."""

        async def check() -> bool:
            return claim_if_settled(self.runlog, self.run_id, epoch, paused)

        return check

    def _new_epoch(self) -> Callable[[], Awaitable[int]]:
        """A new epoch for the run (`restart`), as a step."""

        async def bump() -> int:
            return self.runlog.new_epoch(self.run_id)

        return bump

    def _resolve(
        self, epoch: int, paused: NodePaused, command: Command
    ) -> Callable[[], Awaitable[str | None]]:
        """Retry's or skip's changes to the run log, as a step (`resolve_pause`)."""

        async def apply() -> str | None:
            return await resolve_pause(
                self.runlog, self.client, self.run_id, epoch, paused, command
            )

        return apply
