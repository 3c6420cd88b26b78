"""The node kinds: one module each, and this registry of them.

A kind is one module in this package holding its params model (`NodeParams`), its node class
(`Node[ItsParams]` with `type: Literal["its.type"]`), the `run` that does its work and, for a
paid kind, its `estimate_usd`. To add one, write that module and add its class to `_Kling`
or `_Glue` below (or, like `loop`, to `NodeSpec` alone if it may not sit in a loop's body).
`NODE_TYPES`, the discriminated unions and so loading, validation, the executor and the
estimate follow.
"""

from __future__ import annotations

from typing import Annotated, Any, get_args

from pydantic import Field

from klingflow.workflows.nodes.ai_chat import AIChatNode
from klingflow.workflows.nodes.base import Node
from klingflow.workflows.nodes.download import DownloadNode
from klingflow.workflows.nodes.http_request import HTTPRequestNode
from klingflow.workflows.nodes.kling_generate_video import KlingGenerateVideoNode
from klingflow.workflows.nodes.kling_video import KlingVideoNode
from klingflow.workflows.nodes.kling_wait import KlingWaitNode
from klingflow.workflows.nodes.loop import LoopNode
from klingflow.workflows.nodes.piapi_task import PiAPITaskNode
from klingflow.workflows.nodes.set import SetNode

__all__ = ["NODE_TYPES", "BodyNodeSpec", "NodeSpec"]

# Each kind is written once. The order is the one messages list the kinds in ("known: ..."):
# the Kling kinds, download, loop, then the glue kinds.
_Kling = KlingGenerateVideoNode | KlingWaitNode | KlingVideoNode | PiAPITaskNode | DownloadNode
_Glue = AIChatNode | HTTPRequestNode | SetNode

BodyNodeSpec = Annotated[_Kling | _Glue, Field(discriminator="type")]
"""A node that may appear in a loop body (any node but a loop)."""

NodeSpec = Annotated[_Kling | LoopNode | _Glue, Field(discriminator="type")]
"""Any node, told apart by its `type`."""

LoopNode.model_rebuild(_types_namespace={"BodyNodeSpec": BodyNodeSpec})

NODE_TYPES: dict[str, type[Node[Any]]] = {
    get_args(cls.model_fields["type"].annotation)[0]: cls for cls in get_args(get_args(NodeSpec)[0])
}
"""`type:` value -> node class (its `params_model` validates the rendered `with:`)."""
