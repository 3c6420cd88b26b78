"""`loop`: run a body of nodes once per item, at most `concurrency` items at a time.

The executor and the engine run it themselves (a durable fan-out through a DBOS queue), so
the kind has no `run` of its own. Loops do not nest: a durable fan-out inside a fan-out
multiplies queues and checkpoints for little gain; put the inner loop in its own workflow.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from klingflow.workflows.nodes.base import Node, NodeParams

if TYPE_CHECKING:
    from klingflow.workflows.nodes import BodyNodeSpec

__all__ = ["LoopNode", "LoopParams"]


class LoopParams(NodeParams):
    """`loop`: run the body once per item, at most `concurrency` items at a time.

    Output: a list with one entry per item, in item order: `{<body node id>: output}` for
    the body's nodes (None for a node skipped by its `if`).
    """

    items: list[Any]
    concurrency: int = Field(default=4, ge=1, le=100)


class LoopNode(Node[LoopParams]):
    """A node whose `with:` block becomes `LoopParams`."""

    type: Literal["loop"]
    # BodyNodeSpec is resolved by the registry (`klingflow.workflows.nodes`), which knows
    # every kind a body may hold.
    nodes: list[BodyNodeSpec] = Field(min_length=1)
    label: str | None = Field(default=None, max_length=1000)
    """A template that names each item in the run's tables (`"{{ item.title }}"`), with
    `item`, `loop`, `inputs` and `trigger` in scope; unset, an item is named by its `label`,
    `title`, `name`, `prompt` or `slug` field."""

    def render_params(self, context: Mapping[str, Any]) -> LoopParams:
        """`items` and `concurrency`, rendered in the context outside the loop."""
        return super().render_params(context)
