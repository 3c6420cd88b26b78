"""A workflow, or a run of it, laid out as a node graph for an inline SVG (no script, no CDN).

Nodes run top to bottom in file order, so the layout is a column: one box per node, an
arrow from each node to the next, labelled with the next node's `if:` when it has one. A
loop is a group box around its body's column, with its item progress in the title. Each box
names its type and its retry policy when it differs from the workflow's, takes its run
status as a colour class (`s-succeeded`, ...), and links to the node's detail.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from klingflow.workflows.nodes import NodeSpec
from klingflow.workflows.nodes.loop import LoopNode
from klingflow.workflows.retries import WorkflowRetry
from klingflow.workflows.spec import Workflow

__all__ = ["GraphBox", "GraphEdge", "GraphLayout", "layout"]

BOX_WIDTH = 300
BOX_HEIGHT = 58
GAP = 46
PAD = 16
GROUP_HEAD = 34
MARGIN = 12
LABEL_SPACE = 200
"""Room right of the column for an `if:` label that runs past the boxes' middle."""


@dataclass(frozen=True)
class GraphBox:
    """A node's box (or a loop's group box) at (x, y), in SVG units."""

    node_id: str
    type: str
    x: int
    y: int
    width: int
    height: int
    status: str
    href: str
    note: str = ""
    is_group: bool = False


@dataclass(frozen=True)
class GraphEdge:
    """An arrow from (x, y1) down to (x, y2); `label` is the target's `if:` condition."""

    x: int
    y1: int
    y2: int
    label: str = ""


@dataclass
class GraphLayout:
    """A workflow drawn as boxes and edges on a canvas of `width` x `height` pixels."""

    width: int
    height: int
    boxes: list[GraphBox] = field(default_factory=list)
    edges: list[GraphEdge] = field(default_factory=list)


def _retry_note(workflow: Workflow, node: NodeSpec) -> str:
    """The node's retry policy, when its own `retry:` changes the workflow's."""
    if node.retry is None:
        return ""
    policy: WorkflowRetry = workflow.retry_for(node)
    note = f"retry ×{policy.attempts}"
    if policy.retry_failed_generations:
        note += ", regenerates failed"
    return note


def _condition(node: NodeSpec) -> str:
    condition = node.if_
    if condition is None:
        return ""
    text = str(condition).strip()
    if text.startswith("{{") and text.endswith("}}"):
        text = text[2:-2].strip()
    return f"if {text}"


def layout(
    workflow: Workflow,
    *,
    statuses: Mapping[str, str] | None = None,
    notes: Mapping[str, str] | None = None,
    href: Callable[[str, str | None], str],
) -> GraphLayout:
    """The graph of `workflow`; `statuses` and `notes` by node id (a run's), `href(node_id,
    loop_id)` the link of a box (`loop_id`: the loop it is in, if any)."""
    statuses = statuses or {}
    notes = notes or {}
    result = GraphLayout(width=0, height=0)

    def column(nodes: list[NodeSpec], x: int, y: int, width: int, loop_id: str | None) -> int:
        previous_bottom: int | None = None
        for node in nodes:
            if previous_bottom is not None:
                y += GAP
                result.edges.append(GraphEdge(x + width // 2, previous_bottom, y, _condition(node)))
            elif node.if_ is not None:  # the first node's condition, on a stub arrow
                result.edges.append(GraphEdge(x + width // 2, y, y + GAP, _condition(node)))
                y += GAP
            note = " · ".join(n for n in (notes.get(node.id, ""), _retry_note(workflow, node)) if n)
            status = statuses.get(node.id, "")
            if isinstance(node, LoopNode):
                inner_top = y + GROUP_HEAD
                bottom = column(list(node.nodes), x + PAD, inner_top, width - 2 * PAD, node.id)
                height = bottom - y + PAD
                result.boxes.insert(
                    0,
                    GraphBox(
                        node.id,
                        node.type,
                        x,
                        y,
                        width,
                        height,
                        status,
                        href(node.id, loop_id),
                        note,
                        is_group=True,
                    ),
                )  # fmt: skip  (groups first: drawn under their body)
                y += height
            else:
                result.boxes.append(GraphBox(
                    node.id, node.type, x, y, width, BOX_HEIGHT, status, href(node.id, loop_id),
                    note,
                ))  # fmt: skip
                y += BOX_HEIGHT
            previous_bottom = y
        return y

    bottom = column(list(workflow.nodes), MARGIN, MARGIN, BOX_WIDTH + 2 * PAD, None)
    result.width = BOX_WIDTH + 2 * PAD + 2 * MARGIN + LABEL_SPACE
    result.height = bottom + MARGIN
    return result
