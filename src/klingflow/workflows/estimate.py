"""What a run would cost, worked out before it starts: nothing is sent and nothing is stored.

Every paid node (`kling.generate_video`, `kling.video`, `piapi.task`) is rendered with the
run's inputs, as the run would render it, loop bodies once per item, and priced with the
client's price table, the same estimate the run reserves against its budget. A prompt (or
negative prompt, or file name) that an earlier node writes does not change the price, so
such a node is still priced. What else cannot be known before the run (a duration read from
an earlier node's output, a loop over such an output) is listed as unknown rather than
guessed; a node whose `if` reads only the inputs is left out when it is false, and one whose
`if` reads an earlier output is counted, with a note.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from klingflow.errors import TemplateError
from klingflow.formats import usd_text
from klingflow.piapi.pricing import DEFAULT_PRICES, PriceTable
from klingflow.workflows.nodes import BodyNodeSpec, NodeSpec
from klingflow.workflows.nodes.loop import LoopNode
from klingflow.workflows.spec import Workflow
from klingflow.workflows.templates import template_context

__all__ = ["NodeEstimate", "RunEstimate", "estimate_run"]


@dataclass(frozen=True)
class NodeEstimate:
    """One paid submission the run would make; `usd` is None when it cannot be known yet."""

    node_path: str
    node_type: str
    usd: Decimal | None
    note: str | None = None

    def public_dict(self) -> dict[str, Any]:
        """The estimate as JSON-ready data (USD as text), for the API and `--json`."""
        return {"node_path": self.node_path, "node_type": self.node_type,
                "estimate_usd": usd_text(self.usd), "note": self.note}  # fmt: skip


@dataclass(frozen=True)
class RunEstimate:
    """The paid submissions of one run, in run order, and the workflow's budget."""

    nodes: list[NodeEstimate]
    budget_usd: Decimal | None

    @property
    def total_usd(self) -> Decimal:
        """What the known submissions cost; `unknown` says how many are left out."""
        return sum((n.usd for n in self.nodes if n.usd is not None), Decimal(0))

    @property
    def unknown(self) -> int:
        """How many submissions cannot be priced before the run (left out of the total)."""
        return sum(1 for n in self.nodes if n.usd is None)

    @property
    def over_budget(self) -> bool:
        """Whether the known submissions alone exceed the workflow's `budget_usd`."""
        return self.budget_usd is not None and self.total_usd > self.budget_usd

    def public_dict(self) -> dict[str, Any]:
        """The run's estimate as JSON-ready data, with each node's."""
        return {
            "estimate_usd": usd_text(self.total_usd),
            "unknown": self.unknown,
            "budget_usd": usd_text(self.budget_usd),
            "over_budget": self.over_budget,
            "nodes": [n.public_dict() for n in self.nodes],
        }


def estimate_run(
    workflow: Workflow, payload: Mapping[str, Any], *, prices: PriceTable = DEFAULT_PRICES
) -> RunEstimate:
    """The estimate of a run of `workflow` started with `payload`.

    Raises what starting the run would (`WorkflowInputError`), and `InvalidRequestError`
    for a paid node whose request is invalid with these inputs: the run would pause there.
    """
    inputs = workflow.resolve_inputs(dict(payload))
    context = template_context(trigger=payload, inputs=inputs, outputs={})
    found: list[NodeEstimate] = []
    for node in workflow.nodes:
        if isinstance(node, LoopNode):
            found += _loop(node, payload, inputs, context, prices)
        else:
            found += _node(node, node.id, context, prices)
    return RunEstimate(found, workflow.budget_usd)


def _node(
    node: NodeSpec | BodyNodeSpec, path: str, context: Mapping[str, Any], prices: PriceTable
) -> list[NodeEstimate]:
    """The node's submission, if it is paid and its `if` may hold; its kind prices it."""
    if not node.is_paid:
        return []
    note = None
    try:
        if not node.should_run(context):
            return []
    except TemplateError:  # the `if` reads an earlier node's output
        note = "only if its `if` holds, which depends on an earlier node"
    usd, how = node.estimate_usd(context, prices)
    return [NodeEstimate(path, node.type, usd, how if usd is None else note or how)]


def _loop(
    loop: LoopNode,
    payload: Mapping[str, Any],
    inputs: Mapping[str, Any],
    context: Mapping[str, Any],
    prices: PriceTable,
) -> list[NodeEstimate]:
    paid = [node for node in loop.nodes if node.is_paid]
    if not paid:
        return []
    try:
        if not loop.should_run(context):
            return []
        items = loop.render_params(context).items
    except TemplateError:
        note = "the loop's items depend on an earlier node"
        return [NodeEstimate(f"{loop.id}[*].{node.id}", node.type, None, note) for node in paid]
    found: list[NodeEstimate] = []
    for index, item in enumerate(items):
        inner = template_context(
            trigger=payload, inputs=inputs, outputs={}, item=item, index=index, length=len(items)
        )
        for node in paid:
            found += _node(node, f"{loop.id}[{index}].{node.id}", inner, prices)
    return found
