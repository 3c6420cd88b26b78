"""`set`: name values for later nodes (computed once, from templates)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from klingflow.workflows.nodes.base import Node, NodeParams

if TYPE_CHECKING:
    from klingflow.workflows.nodes.runtime import Runtime

__all__ = ["SetNode", "SetParams"]


class SetParams(NodeParams):
    """`set`: name values for later nodes. Output: `values`, rendered."""

    values: dict[str, Any]


class SetNode(Node[SetParams]):
    """A node whose `with:` block becomes `SetParams`."""

    type: Literal["set"]

    async def run(self, rt: Runtime, params: SetParams) -> dict[str, Any]:
        """The rendered `values`: rendering was the work, so nothing here needs a step."""
        return params.values
