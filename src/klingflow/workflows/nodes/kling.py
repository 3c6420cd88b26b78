"""The Kling nodes: `kling.generate_video`, `kling.wait`, `kling.video` and `piapi.task`.

Paying exactly once is decided here. Before a create request leaves, its intent is written
to the run log; as soon as PiAPI accepts it, the task id is written next to it. Whatever
runs this code again (a retry, a DBOS recovery after a crash) finds the intent first and
reuses its task. An intent that was sent but never answered is *uncertain*: it is never
resent on its own, the run pauses and says so (`klingflow runs retry --resubmit` or
`--task-id` settles it).
"""

from __future__ import annotations

import random
from decimal import Decimal
from typing import Any

from klingflow.errors import (
    BudgetExceededError,
    PiAPIError,
    SubmitUncertainError,
    TaskFailedError,
    WaitTimeoutError,
)
from klingflow.piapi import KlingRequest, Task
from klingflow.workflows.nodes import Runtime
from klingflow.workflows.runlog import IntentState
from klingflow.workflows.spec import (
    KlingGenerateVideoParams,
    KlingVideoParams,
    KlingWaitParams,
    PiAPITaskParams,
)

__all__ = ["generate_video", "piapi_task", "task_summary", "video", "wait"]


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
        intent = runlog.current_intent(rt.run_id, rt.epoch, rt.node_path)
        if intent is not None and intent.task_id:
            task = await services.client.get(intent.task_id)
            return task.public_dict()
        if intent is not None and intent.state in (IntentState.SENT, IntentState.UNCERTAIN):
            runlog.update_intent(intent.intent_id, IntentState.UNCERTAIN)
            raise SubmitUncertainError(
                f"an earlier submission of node {rt.node_path} (intent {intent.intent_id}) may "
                "have created a paid task, and no answer was recorded; klingflow will not pay "
                f"twice: find the task and run `klingflow runs retry {rt.run_id} --task-id ID`, "
                "or accept a second charge with `--resubmit`",
                intent_id=intent.intent_id,
            )
        return await services.finish_even_if_cancelled(send())

    async def send() -> dict[str, Any]:  # from the intent to the task id, never cut off
        estimate = services.client.estimate_cost(request)
        intent_id = runlog.reserve_and_record(
            rt.run_id, rt.epoch, rt.node_path, request=request.to_body(), estimated_usd=estimate
        )
        if intent_id is None:
            run = runlog.get_run(rt.run_id)
            assert run is not None
            assert run.budget_usd is not None
            raise BudgetExceededError(
                f"node {rt.node_path} would cost ${estimate} but the run's budget of "
                f"${run.budget_usd} has ${run.budget_usd - run.spent_usd - run.reserved_usd} "
                "left: skip the node or cancel the run (a run keeps the budget it started with)",
                estimated_usd=estimate,
                budget_usd=run.budget_usd,
            )
        try:
            task = await services.client.submit(
                request, intent_id=intent_id, webhook=services.webhook
            )
        except SubmitUncertainError as error:
            settled = runlog.mark_uncertain(intent_id, note=str(error))
            if settled is not None:  # PiAPI's webhook named the task before we gave up
                return (await services.client.get(settled)).public_dict()
            raise
        except PiAPIError as error:  # answered with an error: nothing was created or charged
            runlog.update_intent(intent_id, IntentState.REJECTED, note=str(error))
            runlog.settle(rt.run_id, reserved_usd=estimate, spent_usd=Decimal(0))
            raise
        runlog.accept_intent(
            intent_id,
            run_id=rt.run_id,
            epoch=rt.epoch,
            node_path=rt.node_path,
            task_id=task.task_id,
        )
        # public_dict: the step's output is stored (DBOS), and must not hold the webhook secret
        return task.public_dict()

    return Task.model_validate(await rt.durable.step("kling.submit", submit))


async def wait_for_task(rt: Runtime, task_id: str, deadline_seconds: float | None) -> Task:
    """Poll (or be woken by a webhook) until the task is terminal; settle what it cost.

    The deadline counts planned pauses rather than the wall clock, so a replay after a crash
    takes the same decisions; DBOS's durable sleeps keep their original wake-up times.
    """
    services = rt.services
    policy = services.wait_policy
    deadline = deadline_seconds or policy.deadline_seconds
    pauses = policy.intervals(random.Random(task_id))
    waited = 0.0

    async def look() -> dict[str, Any]:
        return (await services.client.get(task_id)).public_dict()

    while True:
        task = Task.model_validate(await rt.durable.step("kling.get", look))
        if task.is_terminal:
            break
        if waited >= deadline:
            raise WaitTimeoutError(task_id, last_status=task.status.value, waited_seconds=waited)
        pause = min(next(pauses), deadline - waited)
        waited += pause
        await rt.durable.sleep(pause, wake_topic=f"task:{task_id}")

    async def settle() -> bool:
        state = IntentState.COMPLETED if task.status == "completed" else IntentState.FAILED
        return services.runlog.finish_intent(task_id, state, spent_points=task.meta.usage.consume)

    await rt.durable.step("kling.settle", settle)
    if task.status != "completed":
        raise TaskFailedError(task)
    return task


async def _download_all(rt: Runtime, task: Task, name: str | None) -> list[str]:
    async def fetch() -> list[str]:
        urls = enumerate(task.output_urls)  # `name` is for the first output, the video
        return [
            str(await rt.save(url, name if n == 0 else None, task_id=task.task_id))
            for n, url in urls
        ]

    paths: list[str] = await rt.durable.step("download", fetch)
    return paths


async def generate_video(rt: Runtime, params: KlingGenerateVideoParams) -> dict[str, Any]:
    """The seed action: submit and return `{code, data: {status, task_id}}` at once."""
    task = await submit_once(rt, params.request)
    return {"code": 200, "data": {"status": task.status.value, "task_id": task.task_id}}


async def wait(rt: Runtime, params: KlingWaitParams) -> dict[str, Any]:
    return task_summary(await wait_for_task(rt, params.task_id, params.deadline_seconds))


async def video(rt: Runtime, params: KlingVideoParams) -> dict[str, Any]:
    """Generate, wait and download: the common case in one node."""
    task = await submit_once(rt, params.request)
    done = await wait_for_task(rt, task.task_id, params.deadline_seconds)
    summary = task_summary(done)
    summary["path"] = None
    if params.download and done.video_url:
        summary["path"] = (await _download_all(rt, done, params.name))[0]
    return summary


async def piapi_task(rt: Runtime, params: PiAPITaskParams) -> dict[str, Any]:
    """Any Kling task type; waits (and downloads) when asked to."""
    task = await submit_once(rt, params.request)
    if not params.wait:
        return {"code": 200, "data": {"status": task.status.value, "task_id": task.task_id}}
    done = await wait_for_task(rt, task.task_id, params.deadline_seconds)
    summary = task_summary(done)
    summary["paths"] = await _download_all(rt, done, None) if params.download else []
    return summary
