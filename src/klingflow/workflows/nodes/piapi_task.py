"""`piapi.task`: any Kling task type, as PiAPI takes it (`model`, `task_type`, `input`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Self

from pydantic import Field, SerializeAsAny, model_validator

from klingflow.errors import TemplateError
from klingflow.piapi.kling import KlingRequest, parse_task_request
from klingflow.piapi.pricing import fixed_price
from klingflow.workflows._strict import rule
from klingflow.workflows.nodes.base import Estimate
from klingflow.workflows.nodes.kling_requests import (
    PaidNode,
    RequestParams,
    request_input,
    split_request,
)
from klingflow.workflows.nodes.kling_tasks import (
    download_outputs,
    submit_once,
    submitted,
    task_summary,
    wait_for_task,
)
from klingflow.workflows.templates import render

if TYPE_CHECKING:
    from klingflow.piapi.pricing import PriceTable
    from klingflow.workflows.nodes.runtime import Runtime

__all__ = ["PiAPITaskNode", "PiAPITaskParams"]


class PiAPITaskParams(RequestParams):
    """`piapi.task`: any Kling task type (`model` + `task_type` + `input`, as PiAPI takes them).

    `request` is built with `parse_task_request`, so the client's rules apply. With `wait`
    (default) the output is the finished task; without, the seed's `{code, data}` shape.
    `download` (needs `wait`) saves every output file.
    """

    request: SerializeAsAny[KlingRequest]
    wait: bool = True
    download: bool = False
    deadline_seconds: float | None = Field(default=None, gt=0)

    REQUEST_KEYS: ClassVar[frozenset[str]] = frozenset({"model", "task_type", "input"})

    @model_validator(mode="after")
    def _download_needs_wait(self) -> Self:
        if self.download and not self.wait:
            raise rule("download", "needs wait: true (only a finished task has files)")
        return self

    @classmethod
    def from_with(cls, data: Mapping[str, Any]) -> Self:
        """Validate a rendered `with:` block; the request by `parse_task_request`'s rules."""
        own, rest = split_request(cls, data, cls.REQUEST_KEYS)
        if isinstance(rest.get("input"), Mapping):
            rest["input"] = request_input(rest["input"])
        return cls.with_request(
            own, lambda: parse_task_request({"model": "kling", **rest})[0], is_flat=False
        )


class PiAPITaskNode(PaidNode[PiAPITaskParams]):
    """A node whose `with:` block becomes `PiAPITaskParams`."""

    type: Literal["piapi.task"]

    async def run(self, rt: Runtime, params: PiAPITaskParams) -> dict[str, Any]:
        """Any Kling task type; waits (and downloads) when asked to."""
        task = await submit_once(rt, params.request)
        if not params.wait:
            return submitted(task)
        done = await wait_for_task(
            rt, task.task_id, params.deadline_seconds, request=params.request
        )
        summary = task_summary(done)
        summary["paths"] = await download_outputs(rt, done, None) if params.download else []
        return summary

    def estimate_unrendered_usd(self, context: Mapping[str, Any], prices: PriceTable) -> Estimate:
        """A fixed-price task type costs the same whatever its input: `extend_video` of an
        earlier node's video is $0.26 all the same."""
        try:
            task_type = render(
                self.with_.get("task_type"), context, node_id=self.id, field="with.task_type"
            )
        except TemplateError:
            task_type = None
        fixed = fixed_price(task_type, prices=prices) if isinstance(task_type, str) else None
        if fixed is None:
            return super().estimate_unrendered_usd(context, prices)
        return fixed, None
