"""`kling.wait`: wait for a task an earlier node (or another run) submitted."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from klingflow.workflows.nodes.base import Node, NodeParams
from klingflow.workflows.nodes.kling_tasks import task_summary, wait_for_task

if TYPE_CHECKING:
    from klingflow.workflows.nodes.runtime import Runtime

__all__ = ["KlingWaitNode", "KlingWaitParams"]


class KlingWaitParams(NodeParams):
    """`kling.wait`: wait for a task to finish.

    Output: the finished task (`task_id`, `status`, `video_url`, `usage`, `cost_usd`).
    """

    task_id: str = Field(min_length=1)
    deadline_seconds: float | None = Field(default=None, gt=0)


class KlingWaitNode(Node[KlingWaitParams]):
    """A node whose `with:` block becomes `KlingWaitParams`."""

    type: Literal["kling.wait"]

    async def run(self, rt: Runtime, params: KlingWaitParams) -> dict[str, Any]:
        """The finished task's summary; a failed task raises `TaskFailedError`."""
        return task_summary(await wait_for_task(rt, params.task_id, params.deadline_seconds))
