"""The bytes of a stored JSON value, counted in the database without sending it: what lets a
reader leave out a value too big to show (a run's trigger of 100,000 rows, a loop's output)
before reading it."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

__all__ = ["json_bytes"]


class json_bytes(FunctionElement[int]):
    """`json_bytes(column)`: SQLite counts a blob's bytes without decoding text into
    characters (half the time on 40 MB), Postgres its text."""

    type = sa.Integer()
    inherit_cache = True


@compiles(json_bytes)
def _json_bytes(element: json_bytes, compiler: Any, **kw: Any) -> str:
    return f"octet_length(CAST({compiler.process(element.clauses, **kw)} AS TEXT))"


@compiles(json_bytes, "sqlite")
def _json_bytes_sqlite(element: json_bytes, compiler: Any, **kw: Any) -> str:
    return f"length(CAST({compiler.process(element.clauses, **kw)} AS BLOB))"
