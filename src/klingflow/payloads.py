"""What a trigger payload may hold, checked before a run stores it.

A payload is stored as JSON in the run log (SQLite or Postgres) and shown in the web UI,
`GET /api/runs` and `runs list --json`. A lone surrogate cannot be encoded as UTF-8 and a
NUL is refused by Postgres `jsonb`: stored, either would break every listing afterwards.
Very deep nesting and huge integers cost time (and recursion) in every later dump. Each is
refused here, naming where in the payload it sits, before anything is stored or spent.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from klingflow.errors import Problem

__all__ = [
    "MAX_PAYLOAD_DEPTH",
    "MAX_PAYLOAD_INTEGER",
    "MAX_PAYLOAD_VALUES",
    "data_problems",
    "nesting_problem",
    "payload_problems",
]

MAX_PAYLOAD_DEPTH = 32
"""Nesting levels of objects and lists in one payload."""
MAX_PAYLOAD_INTEGER = 2**63 - 1
"""The largest integer (in magnitude) a payload holds: what both databases store exactly."""
MAX_PAYLOAD_VALUES = 1_000_000
"""Values (strings, numbers, lists, objects) in one payload: a YAML alias bomb stops here,
while a batch of 100,000 rows of a few columns (`-i rows=@prompts.csv`) still fits."""


class _Count:
    def __init__(self) -> None:
        self.values = 0


def _text_problem(text: str) -> str | None:
    if "\x00" in text:
        return "contains a NUL character, which cannot be stored"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "contains a lone surrogate: not valid Unicode text"
    return None


def payload_problems(value: Any, where: str = "trigger") -> list[Problem]:
    """Every problem in `value`, each `(path, message)`; at most one per path branch."""
    return list(_walk(value, where, 0, _Count()))


def _walk(value: Any, where: str, depth: int, count: _Count) -> Iterator[Problem]:
    count.values += 1
    if count.values > MAX_PAYLOAD_VALUES:
        if count.values == MAX_PAYLOAD_VALUES + 1:
            yield (where, f"the whole holds more than {MAX_PAYLOAD_VALUES:,} values")
        return
    if depth > MAX_PAYLOAD_DEPTH:
        short = where if len(where) <= 60 else f"{where[:60]}…"
        yield (short, f"is nested more than {MAX_PAYLOAD_DEPTH} levels deep")
        return
    if isinstance(value, str):
        if (problem := _text_problem(value)) is not None:
            yield (where, problem)
    elif isinstance(value, bool) or value is None or isinstance(value, float):
        return
    elif isinstance(value, int):
        if abs(value) > MAX_PAYLOAD_INTEGER:
            yield (where, f"is an integer beyond ±{MAX_PAYLOAD_INTEGER}")
    elif isinstance(value, dict):
        for key, item in value.items():
            if count.values > MAX_PAYLOAD_VALUES:
                return
            name = str(key)
            if (problem := _text_problem(name)) is not None:
                yield (f"{where}.<key>", f"a key {problem}")
                continue
            yield from _walk(item, f"{where}.{name}", depth + 1, count)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            if count.values > MAX_PAYLOAD_VALUES:
                return
            yield from _walk(item, f"{where}[{index}]", depth + 1, count)


def data_problems(text: str) -> str | None:
    """What makes `text` unfit to parse at all: a NUL character (YAML refuses it with a
    traceback-shaped error, Postgres cannot store it)."""
    if "\x00" in text:
        return "contains a NUL character: is it a binary file?"
    return None


def nesting_problem(text: str) -> str | None:
    """Collections in YAML or JSON `text` nested more than `MAX_PAYLOAD_DEPTH` levels deep,
    found before PyYAML parses it: its pure-Python scanner takes seconds (quadratic) to reach
    the deep end of `[[[[...` and then fails by recursion, while libyaml's C parser counts
    the levels in milliseconds. Text it cannot parse is left to the parser's own message;
    without libyaml (a PyYAML built without it) nothing is checked here."""
    import yaml  # only the readers of YAML files need it

    if not getattr(yaml, "__with_libyaml__", False):
        return None
    depth = 0  # collections open around the next value: its depth, as `payload_problems` counts
    try:
        for event in yaml.parse(text, Loader=yaml.CSafeLoader):
            if isinstance(event, yaml.NodeEvent) and depth > MAX_PAYLOAD_DEPTH:
                return f"is nested more than {MAX_PAYLOAD_DEPTH} levels deep"
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    except yaml.YAMLError:
        return None
    return None
