"""`kling.generate_video`, the seed action: submit one Kling video task and return at once."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from klingflow.workflows.nodes.kling_requests import VideoNode, VideoParams
from klingflow.workflows.nodes.kling_tasks import submit_once, submitted

if TYPE_CHECKING:
    from klingflow.workflows.nodes.runtime import Runtime

__all__ = ["KlingGenerateVideoNode", "KlingGenerateVideoParams"]


class KlingGenerateVideoParams(VideoParams):
    """`kling.generate_video`, the seed action: submit one Kling video task and return at once.

    `with:` takes the seed's fields (`prompt`, `duration` as "5s" or 5, `model_name` as
    "Kling V2.1", `aspect_ratio`) and every `KlingVideoRequest` option (version, mode,
    enable_audio, prefer_multi_shots, multi_shots, negative_prompt, cfg_scale, image_url,
    image_tail_url, camera_control, elements); Kling's own rules apply, so `prompt` is
    required unless `multi_shots`, `image_url` or `elements` stand in. Output, as the seed
    returns it: `{"code": 200, "data": {"status": "pending", "task_id": "..."}}`.
    """


class KlingGenerateVideoNode(VideoNode[KlingGenerateVideoParams]):
    """A node whose `with:` block becomes `KlingGenerateVideoParams`."""

    type: Literal["kling.generate_video"]

    async def run(self, rt: Runtime, params: KlingGenerateVideoParams) -> dict[str, Any]:
        """The seed action: submit and return `{code, data: {status, task_id}}` at once."""
        return submitted(await submit_once(rt, params.request))
