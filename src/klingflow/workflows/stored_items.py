"""A loop's stored list of items too big to read whole (a batch's 100,000 prompts, 2.7 MB
of JSON): its length and the values of one page, read from the database."""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import partial
from typing import Any, overload

import sqlalchemy as sa

from klingflow.workflows.records import NodeRun
from klingflow.workflows.runlog import RunLog
from klingflow.workflows.schema import node_runs

__all__ = ["StoredItems"]

_PATHS_PER_CALL = 100
"""Paths given to one `json_extract`: SQLite takes at most 127 arguments (before 3.48), and
a page may be 1,000 items."""


class StoredItems(Sequence[Any]):
    """A loop's stored `inputs.items`, too big to read whole: its length and the values of
    a page, read from the database. On SQLite the length comes with the values of `first`
    (the page expected) in one statement, which parses the stored list once (2.7 MB for
    100,000 prompts: each parse cost about 10 ms there)."""

    def __init__(self, runlog: RunLog, node: NodeRun, first: Sequence[int] = ()) -> None:
        self.runlog = runlog
        self.where = sa.and_(
            node_runs.c.run_id == node.run_id,
            node_runs.c.epoch == node.epoch,
            node_runs.c.node_path == node.node_path,
        )
        self.values: dict[int, Any] = {}
        self.length = int(runlog.read(partial(self._length, list(first))) or 0)

    def _length(self, first: list[int], connection: sa.Connection) -> int | None:
        if connection.dialect.name != "sqlite":
            items = node_runs.c.inputs["items"]
            return connection.execute(
                sa.select(sa.func.json_array_length(items)).where(self.where)
            ).scalar()
        # `json_array_length(inputs, '$.items')`, not of `inputs -> 'items'`: the list is
        # not copied out and parsed again.
        length = sa.func.json_array_length(node_runs.c.inputs, "$.items")
        if not first:
            return connection.execute(sa.select(length).where(self.where)).scalar()
        query = sa.select(length, *self._values(first)).where(self.where)
        found = connection.execute(query).first()
        if found is None:
            return None
        self.values.update(self._decoded(first, found[1:]))
        return int(found[0] or 0)

    @staticmethod
    def _values(indices: list[int]) -> list[sa.ColumnElement[Any]]:
        """The values at `indices` of the stored list (SQLite): a JSON array per
        `_PATHS_PER_CALL` of them, its first index asked twice so that a single one comes
        as an array too."""
        columns: list[sa.ColumnElement[Any]] = []
        for start in range(0, len(indices), _PATHS_PER_CALL):
            chunk = indices[start : start + _PATHS_PER_CALL]
            paths = [f"$.items[{index}]" for index in [*chunk, chunk[0]]]
            columns.append(sa.func.json_extract(node_runs.c.inputs, *paths))
        return columns

    @staticmethod
    def _decoded(indices: list[int], arrays: Sequence[str | None]) -> dict[int, Any]:
        """Index -> value, from the arrays `_values` made."""
        found: dict[int, Any] = {}
        for start, array in zip(range(0, len(indices), _PATHS_PER_CALL), arrays, strict=True):
            chunk = indices[start : start + _PATHS_PER_CALL]
            found.update(zip(chunk, json.loads(array or "[]"), strict=False))
        return found

    def __len__(self) -> int:
        return self.length

    def fetch(self, indices: list[int]) -> None:
        """Read the values of `indices` for `__getitem__`, parsing the stored list once."""
        wanted = sorted(set(indices) - set(self.values))
        if wanted:
            self.values.update(self.runlog.read(partial(self._read, wanted)))

    def _read(self, indices: list[int], connection: sa.Connection) -> dict[int, Any]:
        items = node_runs.c.inputs["items"]
        if connection.dialect.name == "sqlite":  # json_extract of several paths: one array
            found = connection.execute(sa.select(*self._values(indices)).where(self.where)).first()
            return {} if found is None else self._decoded(indices, found)
        elements = (
            sa.func.json_array_elements(items)
            .table_valued("value", with_ordinality="n")
            .render_derived()
        )
        query = (
            sa.select(elements.c.n, elements.c.value)
            .select_from(node_runs)
            .join(elements, sa.true())
            .where(self.where, elements.c.n.in_([index + 1 for index in indices]))
        )
        return {int(n) - 1: value for n, value in connection.execute(query)}

    @overload
    def __getitem__(self, index: int) -> Any: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Any]: ...
    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            raise TypeError("a stored list is read by index, a page at a time")
        self.fetch([index])
        return self.values.get(index)
