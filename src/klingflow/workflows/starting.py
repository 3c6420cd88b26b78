"""Starting a run: its inputs checked, written to the run log, then handed to DBOS.

Two things start runs: the `Engine` (a process that also executes them) and the `RunQueue`
(`klingflow run --detach`, which only queues). Both share `RunStarter.start_run`, so every
entry point (CLI, API, hooks, forms, schedules) runs the same checks and the same
idempotency rule; they differ only in how the run reaches DBOS's queue (`_enqueue`).
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from typing import Any

from pydantic import SecretStr

from klingflow.errors import InvalidRequestError
from klingflow.piapi.pricing import DEFAULT_PRICES, PriceTable
from klingflow.settings import Settings
from klingflow.workflows.estimate import estimate_run
from klingflow.workflows.records import RunRecord, RunStatus
from klingflow.workflows.runlog import RunLog
from klingflow.workflows.secret_inputs import keep_secrets, mask_secret_inputs, require_sealing_key
from klingflow.workflows.spec import Workflow

__all__ = ["START_CHECK_SECONDS", "RunStarter", "create_run", "known_secrets"]

START_CHECK_SECONDS = 30.0
"""Longest the checks before a run starts may take (rendering every paid request)."""


def known_secrets(settings: Settings, api_key: SecretStr | None) -> tuple[str, ...]:
    """The values the run log masks wherever they appear (in a trigger, a message)."""
    return tuple(
        secret.get_secret_value()
        for secret in (api_key, settings.chat_api_key, settings.webhook_secret, settings.api_token)
        if secret is not None
    )


async def create_run(
    runlog: RunLog,
    settings: Settings,
    workflow: Workflow,
    payload: dict[str, Any],
    *,
    idempotency_key: str | None,
    prices: PriceTable,
    sealing_key: SecretStr | None = None,
) -> tuple[RunRecord, bool]:
    """The key's run, or a new queued one (inputs and paid requests checked first); and
    whether it is new. Secret inputs are stored `***` and sealed with `sealing_key` (the
    PiAPI key) for the run (workflows/secret_inputs.py)."""
    known = None if idempotency_key is None else runlog.find_by_key(idempotency_key)
    if known is not None:
        return known, False
    require_sealing_key(workflow, sealing_key)
    # The estimate's checks, off the event loop (a large loop renders every item) and within
    # START_CHECK_SECONDS; each template render has its own limits as well.
    check = asyncio.to_thread(estimate_run, workflow, payload, prices=prices)
    try:
        await asyncio.wait_for(check, timeout=START_CHECK_SECONDS)
    except TimeoutError:
        raise InvalidRequestError(
            [("payload", f"checking the run took over {START_CHECK_SECONDS:g} s: "
              "simplify its templates or split the batch")]
        ) from None  # fmt: skip
    trigger, inputs, secrets = mask_secret_inputs(
        workflow, payload, workflow.resolve_inputs(payload)
    )
    run, created = runlog.create_run(
        workflow_name=workflow.name,
        workflow_hash=workflow.content_hash,
        workflow=workflow.model_dump(mode="json", by_alias=True, exclude_unset=True),
        source_path=workflow.source_path,
        trigger=trigger,
        inputs=inputs,
        output_root=str(settings.outputs_dir),
        budget_usd=workflow.budget_usd,
        idempotency_key=idempotency_key,
    )
    if created:
        keep_secrets(runlog, run.run_id, secrets, sealing_key)
    return run, created


class RunStarter(ABC):
    """What starts runs: checks a run, writes it, and queues it through DBOS (`_enqueue`)."""

    settings: Settings
    runlog: RunLog
    sealing_key: SecretStr | None = None
    """The PiAPI key, which seals a run's secret inputs (None: no run may have any)."""

    @property
    def prices(self) -> PriceTable:
        """The prices a run's budget is checked against."""
        return DEFAULT_PRICES

    async def start_run(
        self,
        workflow: Workflow,
        payload: dict[str, Any],
        *,
        idempotency_key: str | None = None,
    ) -> RunRecord:
        """Create the run and queue it, its inputs checked first; a known idempotency key
        returns the key's run, whatever this payload says (a retried call gets its answer).

        The checks are the estimate's: the inputs, and every paid node's request as these
        inputs render it. A payload that cannot make a valid Kling request raises here
        (`WorkflowInputError`, `InvalidRequestError`) instead of starting a run that would
        pause on it. A known run still `queued` is queued again: its process may have died
        between writing it and queueing it, and `_enqueue` leaves a run DBOS has alone.
        """
        run, created = await create_run(
            self.runlog,
            self.settings,
            workflow,
            payload,
            idempotency_key=idempotency_key,
            prices=self.prices,
            sealing_key=self.sealing_key,
        )
        if created or run.status is RunStatus.QUEUED:
            await self._enqueue(run.run_id, is_new=created)
        return run

    @abstractmethod
    async def _enqueue(self, run_id: str, *, is_new: bool) -> None:
        """Hand the run's workflow to DBOS's runs queue; a run DBOS already has must not
        run twice (`is_new` False: it may or may not have it)."""
