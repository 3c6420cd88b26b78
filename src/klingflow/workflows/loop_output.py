"""A loop's output: recorded as a small reference, read from its items' nodes when used.

A loop's output is a list in item order, one `{body node id: output}` per item (None for a
failed one). Its items' body nodes are in the run log anyway, so the loop node records only
a reference to them (`{"$loop_output": {"loop", "length", "failed", "body"}}`), and later
nodes' templates get a `LoopOutput`: a read-only sequence that reads the run log a page at a
time when a template indexes it, walks it or counts it. Building the list at the loop's end
made the end of a 100,000-video loop hold every item's output two or three times over
(the list, its JSON for the run log, DBOS's copy of the next pass's reads).

Readers for people (`shown_output`) give the list itself while it is small and say it was
left out beyond that, as for any big value; a run recorded before this change stored the
list, which every reader takes as it is.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from typing import Any, Final, overload

from klingflow.workflows.loop_items import item_outputs, output_exceeds
from klingflow.workflows.records import Attempt, NodeRun
from klingflow.workflows.runlog import RunLog
from klingflow.workflows.templates import LazyList

__all__ = [
    "REFERENCE_KEY",
    "LoopOutput",
    "is_reference",
    "live_output",
    "shown_error",
    "shown_node",
    "shown_output",
    "shown_top_level",
    "stored_output",
]

REFERENCE_KEY: Final = "$loop_output"
"""The one key of a loop node's recorded output since outputs are read lazily."""
PAGE_ITEMS: Final = 200
"""Items read at a time, by index or by a walk over the output."""


def is_reference(value: Any) -> bool:
    """Whether a loop node's recorded output (or a paused loop's `partial_output`) is a
    reference to its items rather than the list itself (a run of an older klingflow)."""
    return (
        isinstance(value, Mapping)
        and len(value) == 1
        and isinstance(value.get(REFERENCE_KEY), Mapping)
    )


class LoopOutput(LazyList):
    """A loop's output read from the run log on demand: `len` costs nothing, an index reads
    its page of `PAGE_ITEMS` (the last page read is kept), a walk reads page after page.

    Templates use it as the list it stands for (`length`, `map`, `list`, `[i]`, slices,
    `tojson`, `{% for %}`); a template that turns it into a value (`{{ nodes.each.output }}`
    as a parameter or an output) builds the list then, the user's choice to hold it."""

    def __init__(
        self, runlog: RunLog, run_id: str, epoch: int, loop_id: str, *, body: Sequence[str],
        length: int, failed: int = 0,
    ) -> None:  # fmt: skip
        self._runlog = runlog
        self._where = (run_id, epoch, loop_id)
        self._body = tuple(body)
        self._length = length
        self._failed = failed
        self._page: tuple[int, list[Any]] = (-1, [])

    @property
    def _reference(self) -> dict[str, Any]:
        """What the run log records of it (underscored: templates cannot reach it)."""
        _, _, loop_id = self._where
        return {
            REFERENCE_KEY: {
                "loop": loop_id,
                "length": self._length,
                "failed": self._failed,
                "body": list(self._body),
            }
        }

    def _read(self, start: int, end: int) -> list[Any]:
        run_id, epoch, loop_id = self._where
        return item_outputs(self._runlog, run_id, epoch, loop_id, self._body, start, end)

    def __len__(self) -> int:
        return self._length

    @overload
    def __getitem__(self, index: int) -> Any: ...
    @overload
    def __getitem__(self, index: slice) -> list[Any]: ...
    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            start, stop, step = index.indices(self._length)
            if step != 1:
                return [self[i] for i in range(start, stop, step)]
            return self._read(start, stop) if start < stop else []
        if not isinstance(index, int) or isinstance(index, bool):
            raise TypeError(f"a loop's output is indexed by number, not {type(index).__name__}")
        if index < 0:
            index += self._length
        if not 0 <= index < self._length:
            raise IndexError("loop output index out of range")
        first = index - index % PAGE_ITEMS
        if self._page[0] != first:
            self._page = (first, self._read(first, min(first + PAGE_ITEMS, self._length)))
        return self._page[1][index - first]

    def __iter__(self) -> Iterator[Any]:
        for start in range(0, self._length, PAGE_ITEMS):
            yield from self._read(start, min(start + PAGE_ITEMS, self._length))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, LoopOutput | list | tuple):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # as a list's

    def __add__(self, other: Any) -> list[Any]:
        return [*self, *other]

    def __radd__(self, other: Any) -> list[Any]:
        return [*other, *self]

    def __repr__(self) -> str:
        return repr(list(self))  # what `{{ nodes.each.output }}` in text prints, as a list


def stored_output(value: Any) -> Any:
    """What the run log and DBOS keep of a node's output: a loop's reference, not its items."""
    return value._reference if isinstance(value, LoopOutput) else value


def live_output(runlog: RunLog, run_id: str, epoch: int, value: Any) -> Any:
    """A loop node's recorded output as templates use it: a reference becomes a
    `LoopOutput` over this epoch's items; a list (an older run's) stays as it is."""
    if not is_reference(value):
        return value
    ref = value[REFERENCE_KEY]
    return LoopOutput(
        runlog, run_id, epoch, str(ref["loop"]), body=[str(b) for b in ref["body"]],
        length=int(ref["length"]), failed=int(ref.get("failed", 0)),
    )  # fmt: skip


def shown_output(
    runlog: RunLog, run_id: str, epoch: int, value: Any, *, max_bytes: int
) -> tuple[Any, bool]:
    """A loop node's recorded output (or partial output) as people see it, and whether it
    was left out: the list while its JSON is at most `max_bytes` (measured in the database
    first), else None and True. The items are read as they are now: a skipped loop's
    failed items are None. Anything but a reference comes back as it is."""
    if not is_reference(value):
        return value, False
    ref = value[REFERENCE_KEY]
    length = int(ref["length"])
    if output_exceeds(runlog, run_id, epoch, str(ref["loop"]), length=length, max_bytes=max_bytes):
        return None, True
    return list(live_output(runlog, run_id, epoch, value)), False


def shown_error(
    runlog: RunLog, run_id: str, epoch: int, error: dict[str, Any] | None, *, max_bytes: int
) -> tuple[dict[str, Any] | None, bool]:
    """A paused loop's error (of its node or an attempt) with its `partial_output` as the
    list (`shown_output`), and whether that was left out (its key dropped) for its size."""
    if not error or not is_reference(error.get("partial_output")):
        return error, False
    partial, left_out = shown_output(
        runlog, run_id, epoch, error["partial_output"], max_bytes=max_bytes
    )
    if left_out:
        return {key: value for key, value in error.items() if key != "partial_output"}, True
    return {**error, "partial_output": partial}, False


def shown_node(runlog: RunLog, node: NodeRun, *, max_bytes: int) -> tuple[NodeRun, list[str]]:
    """A node as people see it: a loop's output and partial output as their lists (see
    `shown_output`), with the names (`output`, `error`) of the values left out for size."""
    if node.node_type != "loop":
        return node, []
    output, output_left_out = shown_output(
        runlog, node.run_id, node.epoch, node.output, max_bytes=max_bytes
    )
    error, error_left_out = shown_error(
        runlog, node.run_id, node.epoch, node.error, max_bytes=max_bytes
    )
    left_out = ["output"] * output_left_out + ["error"] * error_left_out
    return replace(node, output=output, error=error), left_out


def shown_top_level(
    runlog: RunLog, nodes: list[NodeRun], attempts: list[Attempt], *, max_bytes: int
) -> tuple[list[NodeRun], list[Attempt]]:
    """Top-level nodes and their attempts as people see them (`shown_node`): a value left
    out for its size is None (a loop's output), or missing (a partial output)."""
    shown = [shown_node(runlog, node, max_bytes=max_bytes)[0] for node in nodes]
    loops = {node.node_path: node for node in nodes if node.node_type == "loop"}
    for position, attempt in enumerate(attempts):
        if (loop := loops.get(attempt.node_path)) is not None:
            error, _ = shown_error(
                runlog, loop.run_id, loop.epoch, attempt.error, max_bytes=max_bytes
            )
            attempts[position] = replace(attempt, error=error)
    return shown, attempts
