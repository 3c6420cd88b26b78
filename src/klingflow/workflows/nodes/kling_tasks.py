"""What the Kling node kinds share: submit a request exactly once, wait, download the output.

Paying exactly once is decided here. Before a create request waits for the client's limits,
its intent is written to the run log (`prepared`); it becomes `sent` at the last moment
before the POST leaves, and as soon as PiAPI accepts it, the task id is written next to it.
Whatever runs this code again (a retry, a DBOS recovery after a crash) finds the intent
first: it reuses its task, or sends a `prepared` one that never left. An intent that was
sent but never answered is *uncertain*: it is never resent on its own, the run pauses and
says so (a webhook, `klingflow runs retry --task-id` or `--resubmit` settles it).
"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any

from klingflow.errors import (
    BudgetExceededError,
    PiAPIError,
    SubmitUncertainError,
    TaskFailedError,
)
from klingflow.piapi import KlingRequest, Task
from klingflow.workflows.intents import TaskIdConflictError
from klingflow.workflows.nodes.runtime import Runtime
from klingflow.workflows.records import Intent, IntentState
from klingflow.workflows.uncertain import uncertain_hint

__all__ = ["download_outputs", "submit_once", "submitted", "task_summary", "wait_for_task"]

SENT_ELSEWHERE_GRACE = 30.0
"""Seconds past the client's timeout to wait for another process's answer to a create."""
SENT_ELSEWHERE_POLL_SECONDS = 0.25


def task_summary(task: Task) -> dict[str, Any]:
    """What later nodes read of a finished task (the webhook secret is never included)."""
    return {
        "task_id": task.task_id,
        "status": task.status.value,
        "video_url": task.video_url,
        "output_urls": task.output_urls,
        "usage": task.meta.usage.model_dump(),
        "cost_usd": str(task.cost_usd),
        "error": task.error.summary() or None,
    }


async def submit_once(rt: Runtime, request: KlingRequest) -> Task:
    """Submit `request` for this node, or find the task an earlier attempt already created."""
    services, runlog = rt.services, rt.services.runlog

    async def submit() -> dict[str, Any]:
        claimed = await services.finish_even_if_cancelled(claim())
        if isinstance(claimed, dict):  # sent now, its task id recorded
            return claimed
        intent = claimed
        task_id = intent.task_id or rescued(intent)
        if task_id:
            task = await services.client.get(task_id)
            return task.public_dict()
        runlog.update_intent(intent.intent_id, IntentState.UNCERTAIN)  # sent, never answered
        raise SubmitUncertainError(
            f"an earlier submission of node {rt.node_path} (intent {intent.intent_id}) may "
            "have created a paid task, and no answer was recorded; klingflow will not pay "
            f"twice: {settle_hint(intent.intent_id, intent.created_at)}",
            intent_id=intent.intent_id,
        )

    async def claim() -> dict[str, Any] | Intent:  # never cut off: a recorded intent is sent
        """The node's live intent, or a new one recorded and sent (the create's answer)."""
        estimate = services.client.estimate_cost(request)
        found = await runlog.live_or_reserve_soon(
            rt.run_id, rt.epoch, rt.node_path, request=request.to_body(), estimated_usd=estimate
        )
        if isinstance(found, str):
            return await send(found, estimate)
        if found is None:
            raise over_budget(estimate)
        if found.task_id is None and found.state == IntentState.PREPARED:
            # Recorded, then cut off while it waited for the client's limits: never sent.
            return await send(found.intent_id, found.estimated_usd)
        return found

    def rescued(intent: Intent) -> str | None:
        """The task id PiAPI answered for a sent intent whose record the database refused
        (workflows/rescued_tasks.py), recorded now."""
        kept = runlog.rescued
        task_id = None if kept is None else kept.find(intent.intent_id)
        if task_id is not None:
            runlog.accept_intent(
                intent.intent_id,
                run_id=rt.run_id,
                epoch=rt.epoch,
                node_path=rt.node_path,
                task_id=task_id,
            )
        return task_id

    def settle_hint(intent_id: str, sent_at: float) -> str:
        """Exactly how to settle it: where and when to look, and what to type then."""
        hook = services.webhook
        where = uncertain_hint(
            intent_id,
            sent_at=sent_at,
            timeout_seconds=services.client.timeout_seconds,
            webhook_endpoint=None if hook is None else hook.endpoint,
        )
        return (
            f"{where}, then run `klingflow runs retry {rt.run_id} --task-id ID` (the id is "
            "checked at PiAPI first), or accept a second charge with `--resubmit`"
        )

    def over_budget(estimate: Decimal) -> BudgetExceededError:
        run = runlog.get_run(rt.run_id)
        assert run is not None
        assert run.budget_usd is not None
        return BudgetExceededError(
            f"node {rt.node_path} would cost ${estimate} but the run's budget of "
            f"${run.budget_usd} has ${run.budget_usd - run.spent_usd - run.reserved_usd} "
            "left: skip the node or cancel the run (a run keeps the budget it started with)",
            estimated_usd=estimate,
            budget_usd=run.budget_usd,
        )

    async def send(intent_id: str, estimate: Decimal) -> dict[str, Any]:  # never cut off
        is_ours = False

        async def sending() -> None:  # before each POST (a 429 is sent again): only if ours
            nonlocal is_ours
            if not is_ours and not await runlog.mark_sent_soon(intent_id):
                raise _SentElsewhere(intent_id)
            is_ours = True

        try:
            task = await services.client.submit(
                request, intent_id=intent_id, webhook=services.webhook, on_sending=sending
            )
        except _SentElsewhere:
            return await answer_sent_elsewhere(intent_id)
        except SubmitUncertainError as error:
            settled = runlog.mark_uncertain(intent_id, note=str(error))
            if settled is not None:  # PiAPI's webhook named the task before we gave up
                return (await services.client.get(settled)).public_dict()
            found = runlog.intent_by_id(intent_id)  # written a moment before the POST left
            sent_at = found[1].created_at if found is not None else time.time()
            raise SubmitUncertainError(
                f"{error}: {settle_hint(intent_id, sent_at)}",
                intent_id=intent_id,
                request=error.request,
                status_code=error.status_code,
            ) from error
        except PiAPIError as error:  # answered with an error: nothing was created or charged
            runlog.update_intent(intent_id, IntentState.REJECTED, note=str(error))
            runlog.settle(rt.run_id, reserved_usd=estimate, spent_usd=Decimal(0))
            raise
        try:
            await runlog.accept_intent_soon(
                intent_id,
                run_id=rt.run_id,
                epoch=rt.epoch,
                node_path=rt.node_path,
                task_id=task.task_id,
            )
        except TaskIdConflictError:
            raise
        except Exception:  # refused (a full disk): keep the id for the resumed run
            if runlog.rescued is not None:
                runlog.rescued.keep(intent_id, task.task_id)
            raise
        # public_dict: the step's output is stored (DBOS), and must not hold the webhook secret
        return task.public_dict()

    async def answer_sent_elsewhere(intent_id: str) -> dict[str, Any]:
        """Another process sent this intent first (a worker that took over this run while
        this one still ran it): wait for the task id it records; never send it again."""
        deadline = time.monotonic() + services.client.timeout_seconds + SENT_ELSEWHERE_GRACE
        while time.monotonic() < deadline:
            found = runlog.intent_by_id(intent_id)
            if found is not None and found[1].task_id:
                return (await services.client.get(found[1].task_id)).public_dict()
            if found is None or found[1].state is not IntentState.SENT:
                break  # answered with an error there, or settled by hand
            await asyncio.sleep(SENT_ELSEWHERE_POLL_SECONDS)
        raise SubmitUncertainError(
            f"node {rt.node_path}'s submission (intent {intent_id}) was sent by another "
            "process running this run, and no task id was recorded for it here; klingflow "
            f"will not pay twice: {settle_hint(intent_id, time.time())}",
            intent_id=intent_id,
        )

    return Task.model_validate(await rt.durable.step("kling.submit", submit))


class _SentElsewhere(Exception):
    """Raised before the POST: the intent is no longer `prepared` (another process sent it)."""


async def wait_for_task(
    rt: Runtime,
    task_id: str,
    deadline_seconds: float | None,
    *,
    request: KlingRequest | None = None,
) -> Task:
    """Wait, through the process's status poller, until the task is terminal; settle its cost.

    The poller looks when the task may be done (its expected render time from now, as the
    task was just submitted: from `request` when known, else the first look comes at once
    and its answer tells), and a verified webhook ends the wait with its confirming GET.
    The wait is one step: after a crash it starts over, from the restart.
    """
    services = rt.services
    poller = services.poller
    assert poller is not None, "the engine gives every run its status poller"
    deadline = deadline_seconds or services.wait_policy.deadline_seconds

    async def watch() -> dict[str, Any]:
        task = await poller.wait(
            task_id,
            task_input=request.to_input() if request is not None else None,
            task_type=request.task_type if request is not None else "video_generation",
            deadline_seconds=deadline,
        )
        return task.public_dict()

    task = Task.model_validate(await rt.durable.step("kling.wait", watch))
    while not task.is_terminal:  # only a replay of a run recorded by an older engine
        task = Task.model_validate(await rt.durable.step("kling.wait", watch))

    async def settle() -> bool:
        state = IntentState.COMPLETED if task.status == "completed" else IntentState.FAILED
        return await services.runlog.finish_intent_soon(
            task_id, state, spent_points=task.meta.usage.consume
        )

    await rt.durable.step("kling.settle", settle)
    if task.status != "completed":
        raise TaskFailedError(task)
    return task


async def download_outputs(rt: Runtime, task: Task, name: str | None) -> list[str]:
    """Save every output file of a finished task (`name` is for the first one, the video);
    one step, so a crash does not fetch files twice."""

    async def fetch() -> list[str]:
        urls = enumerate(task.output_urls)
        return [
            str(await rt.save(url, name if n == 0 else None, task_id=task.task_id))
            for n, url in urls
        ]

    paths: list[str] = await rt.durable.step("download", fetch)
    return paths


def submitted(task: Task) -> dict[str, Any]:
    """The seed action's answer to a submission: `{code, data: {status, task_id}}`."""
    return {"code": 200, "data": {"status": task.status.value, "task_id": task.task_id}}
