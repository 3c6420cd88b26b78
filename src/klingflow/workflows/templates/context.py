"""The names a template can use, and the mapping that gives them their values.

`trigger` (the raw trigger payload), `inputs` (resolved inputs), `nodes.<id>.output`, and
inside a loop body `item` and `loop.index` (0-based), `loop.number` (1-based),
`loop.length`. Validation checks templates against these same constants, so a name it
accepts is a name a render defines.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

__all__ = [
    "CONTEXT_NAMES",
    "LOOP_ATTRIBUTES",
    "LOOP_NAMES",
    "NODE_ATTRIBUTES",
    "LazyList",
    "template_context",
]

CONTEXT_NAMES: Final = frozenset({"trigger", "inputs", "nodes"})
"""Top-level names every template can use."""
LOOP_NAMES: Final = frozenset({"item", "loop"})
"""Names defined only inside a loop body."""
LOOP_ATTRIBUTES: Final = frozenset({"index", "number", "length"})
"""`loop.index` is 0-based, `loop.number` 1-based, `loop.length` the item count."""
NODE_ATTRIBUTES: Final = frozenset({"output"})
"""What `nodes.<id>` exposes to templates."""


class LazyList(Sequence[Any]):
    """A list read on demand (a loop's output, `workflows/loop_output.py`): templates use it
    as the list it stands for, and a native value or `tojson` made of it becomes that list."""


def template_context(
    *,
    trigger: Mapping[str, Any],
    inputs: Mapping[str, Any],
    outputs: Mapping[str, Any],
    item: Any = None,
    index: int | None = None,
    length: int | None = None,
) -> dict[str, Any]:
    """The names templates see: `outputs` maps node ids to their outputs.

    Pass `index` (0-based) and `length` inside a loop body; `item` and `loop` exist only then.
    """
    context: dict[str, Any] = {
        "trigger": trigger,
        "inputs": inputs,
        "nodes": {node_id: {"output": output} for node_id, output in outputs.items()},
    }
    if index is not None:
        context["item"] = item
        context["loop"] = {"index": index, "number": index + 1, "length": length}
    return context
