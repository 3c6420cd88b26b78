"""`kling.video`: generate, wait and download in one node, the common case."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator

from klingflow.workflows.nodes.base import check_file_name
from klingflow.workflows.nodes.kling_requests import VideoNode, VideoParams
from klingflow.workflows.nodes.kling_tasks import (
    download_outputs,
    submit_once,
    task_summary,
    wait_for_task,
)

if TYPE_CHECKING:
    from klingflow.workflows.nodes.runtime import Runtime

__all__ = ["KlingVideoNode", "KlingVideoParams"]


class KlingVideoParams(VideoParams):
    """`kling.video`: generate, wait and download in one node.

    The `kling.generate_video` fields plus `download` (default true), `name` (the file name
    under the run's output folder; default: the task id) and `deadline_seconds` for the wait.
    Output: the finished task (`task_id`, `status`, `video_url`, `usage`, `cost_usd`) and
    `path`, the downloaded file's absolute path (None without download).
    """

    download: bool = True
    name: str | None = None
    deadline_seconds: float | None = Field(default=None, gt=0)

    _name = field_validator("name")(check_file_name)


class KlingVideoNode(VideoNode[KlingVideoParams]):
    """A node whose `with:` block becomes `KlingVideoParams`."""

    type: Literal["kling.video"]

    async def run(self, rt: Runtime, params: KlingVideoParams) -> dict[str, Any]:
        """Generate, wait and download: the common case in one node."""
        task = await submit_once(rt, params.request)
        done = await wait_for_task(
            rt, task.task_id, params.deadline_seconds, request=params.request
        )
        summary = task_summary(done)
        summary["path"] = None
        if params.download and done.video_url:
            summary["path"] = (await download_outputs(rt, done, params.name))[0]
        return summary
