"""The hot path's statements, compiled once per dialect and handed to the driver's cursor.

A video's run-log writes are about a dozen point statements that SQLite runs in a few
microseconds each, while SQLAlchemy's Core execution around each (the compiled-cache lookup,
the execution context, the `CursorResult`) cost about 100 us of Python on the event loop
that also drives every HTTP request (bench/notes.md, session 10). `execute` keeps what
matters of Core and drops the rest: the statement is compiled by SQLAlchemy, for the
connection's dialect, the first time it is sent with a given set of parameter names; its
values go through the same bind processors (JSON, floats) and its rows through the same
result processors; the cursor is the transaction's own DBAPI cursor, so the statement
belongs to the caller's transaction exactly as with `Connection.execute`; and it is sent
through `Connection._cursor_execute`, SQLAlchemy's own path for special-case executions,
which runs the connection's `before/after_cursor_execute` listeners and translates a driver
error (invalidating a cut connection) exactly as a Core execution does, so
`transactions.transaction`'s retries see the same `DBAPIError`s.

A statement that needs Python-side column defaults computed at execution (which only Core's
execution context does) is sent through `Connection.execute` instead, unchanged.
"""

from __future__ import annotations

import weakref
from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.sql.compiler import SQLCompiler

__all__ = ["Answer", "execute"]


@dataclass(frozen=True)
class Answer:
    """What a statement answered: rows affected and, for a SELECT or RETURNING, its rows
    (with attribute access and `_mapping`, as SQLAlchemy's rows)."""

    rowcount: int
    rows: Sequence[Any] = ()

    def first(self) -> Any:
        """The first row, or None."""
        return self.rows[0] if self.rows else None


Arguments = Callable[[Mapping[str, Any]], Any]
"""The DBAPI parameters (a tuple or a dict, as the dialect's paramstyle says) for a call's
values."""


@dataclass(frozen=True)
class _Prepared:
    statement: sa.Executable  # held: the cache is keyed by its id
    sql: str
    arguments: Arguments
    returns_rows: bool
    columns: tuple[sa.ColumnElement[Any], ...]
    row_type: type
    processors: list[Any] = field(default_factory=list, compare=False)
    """Its columns' result processors, filled from its first answer's cursor description
    (the same on every call: the statement's SQL and the driver do not change)."""


_CORE = object()
"""Cached for a statement `execute` leaves to `Connection.execute`."""

_prepared: weakref.WeakKeyDictionary[sa.Dialect, dict[tuple[int, tuple[str, ...]], Any]] = (
    weakref.WeakKeyDictionary()
)
"""Per dialect (an engine's), per statement and parameter names: its `_Prepared`."""


def execute(
    connection: sa.Connection, statement: sa.Executable, values: Mapping[str, Any]
) -> Answer:
    """`connection.execute(statement, values)`, in the connection's transaction, with
    the same SQL, stored values, rows and errors; built once, sent to the cursor."""
    dialect = connection.dialect
    cache = _prepared.get(dialect)
    if cache is None:
        cache = _prepared.setdefault(dialect, {})
    key = (id(statement), tuple(values))
    prepared = cache.get(key)
    if prepared is None:
        prepared = _prepare(dialect, statement, values)
        cache[key] = prepared
    if prepared is _CORE:
        result = connection.execute(statement, dict(values))
        rows = result.all() if result.returns_rows else ()
        return Answer(result.rowcount, rows)
    return _send(connection, prepared, values)


def _send(connection: sa.Connection, prepared: _Prepared, values: Mapping[str, Any]) -> Answer:
    arguments = prepared.arguments(values)
    cursor = connection.connection.cursor()
    try:
        # SQLAlchemy's own cursor path: listeners, logging, errors translated (and a cut
        # connection invalidated) as in any execution.
        connection._cursor_execute(cursor, prepared.sql, arguments)
        try:
            raw = cursor.fetchall() if prepared.returns_rows else ()
            rowcount = cursor.rowcount  # after the rows: SQLite counts a RETURNING's as it goes
            description = cursor.description
        except Exception as error:
            connection._handle_dbapi_exception(error, prepared.sql, arguments, cursor, None)
    finally:
        cursor.close()
    if not prepared.returns_rows:
        return Answer(rowcount)
    return Answer(rowcount, _rows(connection.dialect, prepared, raw, description))


def _rows(
    dialect: sa.Dialect, prepared: _Prepared, raw: Sequence[Any], description: Any
) -> list[Any]:
    row_type = prepared.row_type
    processors = prepared.processors
    if not processors:
        processors.extend(
            column.type.dialect_impl(dialect).result_processor(dialect, entry[1])
            for column, entry in zip(prepared.columns, description, strict=True)
        )
    if not any(processors):
        return [row_type(*row) for row in raw]
    return [
        row_type(*(v if p is None else p(v) for p, v in zip(processors, row, strict=True)))
        for row in raw
    ]


def _row_type(names: tuple[str, ...]) -> type:
    base = namedtuple("Row", names)  # type: ignore[misc]

    class Row(base):
        """A row as SQLAlchemy's: by position, by attribute, or through `_mapping`."""

        __slots__ = ()

        @property
        def _mapping(self) -> dict[str, Any]:
            return dict(zip(names, self, strict=True))

    return Row


def _prepare(dialect: sa.Dialect, statement: sa.Executable, values: Mapping[str, Any]) -> Any:
    """Compile `statement` for `dialect` and these parameter names, once; `_CORE` when only
    Core's execution context can run it (Python-side column defaults)."""
    assert isinstance(statement, sa.sql.ClauseElement)
    compiled = statement.compile(dialect=dialect, column_keys=list(values))
    assert isinstance(compiled, SQLCompiler)
    if compiled.insert_prefetch or compiled.update_prefetch:
        return _CORE
    # The final SQL (an expanding IN rendered) and each parameter: the caller's value by
    # name, or a constant of the statement (an IN list, a LIMIT), as Core would send it.
    expanded = compiled.construct_expanded_state(dict(values))
    # Core's bind processors (JSON, floats), and those of an expanded IN's parameters.
    # (No tuple-typed parameter here, whose processors would be a sequence.)
    processors = cast(
        "dict[str, Callable[[Any], Any]]", {**compiled._bind_processors, **expanded.processors}
    )
    constants = {
        name: value if (p := processors.get(name)) is None else p(value)
        for name, value in expanded.parameters.items()
        if name not in values
    }
    for name in values:
        if name in expanded.parameters and expanded.parameters[name] is not values[name]:
            raise AssertionError(f"{name} is not sent as given in {expanded.statement!r}")
    given = tuple((name, processors.get(name)) for name in expanded.parameters if name in values)
    arguments: Arguments
    if expanded.positiontup is not None:
        order = [
            (name, processors.get(name), name in values, constants.get(name))
            for name in expanded.positiontup
        ]

        def positional(v: Mapping[str, Any]) -> tuple[Any, ...]:
            return tuple(
                (v[name] if p is None else p(v[name])) if mine else constant
                for name, p, mine, constant in order
            )

        arguments = positional
    else:

        def named(v: Mapping[str, Any]) -> dict[str, Any]:
            sent = dict(constants)
            for name, p in given:
                sent[name] = v[name] if p is None else p(v[name])
            return sent

        arguments = named
    # Rows asked for: a SELECT's or a RETURNING's (not the primary key Postgres's INSERT
    # returns for Core's `inserted_primary_key`, which nobody here reads).
    columns = tuple(getattr(statement, "exported_columns", ()))
    returns_rows = bool(columns)
    row_type = _row_type(tuple(str(column.key) for column in columns))
    return _Prepared(statement, expanded.statement, arguments, returns_rows, columns, row_type)
