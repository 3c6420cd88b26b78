"""What the run log holds, as Python sees it: the statuses, and one frozen record per row.

Each record is built from its row by its own dataclass fields (`from_row`): a field is read
from the column of the same name, an amount `X_usd` from the column `X_points` (the log
stores PiAPI points, 1 USD = 10,000,000, so budget updates stay integer arithmetic), and a
status from its string. Adding a column means adding one field, never a list typed out again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from decimal import Decimal
from enum import StrEnum
from typing import Any, ClassVar, Self

import sqlalchemy as sa

from klingflow.formats import json_values
from klingflow.piapi.points import points_to_usd

__all__ = [
    "ACTIVE_INTENT_STATES",
    "TERMINAL_RUN_STATUSES",
    "Attempt",
    "Intent",
    "IntentState",
    "NodeRun",
    "NodeStatus",
    "RunRecord",
    "RunStatus",
    "Spend",
    "Submission",
]


class RunStatus(StrEnum):
    """Where a run is in its life.

    There is no `failed`: a node that fails pauses its run (`paused`, with the node named)
    so that a person can retry, skip or cancel it, since what was already paid for stays
    reusable. A run ends `completed`, `cancelled` (by a person), or `crashed` (its process
    died or hit an unexpected error: nothing decided the work had failed, and `runs retry`
    resumes it), as Prefect keeps "failed" apart from "crashed".
    """

    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    CRASHED = "crashed"


TERMINAL_RUN_STATUSES = frozenset({RunStatus.COMPLETED, RunStatus.CANCELLED, RunStatus.CRASHED})
"""A run in one of these changes only by a command (`runs retry` of a crashed run)."""


class NodeStatus(StrEnum):
    """One node execution's outcome.

    A node does fail (`failed`, out of attempts); its run then pauses rather than fails (see
    `RunStatus`), and a retry runs the node again in the same epoch. `skipped`: by its `if`,
    or by a person on a paused run.
    """

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"


class IntentState(StrEnum):
    """A paid submission's state.

    `prepared` is written (with the budget reservation) before the create waits behind the
    client's own concurrency and rate limits; `sent` at the last moment before the POST
    leaves. So after a crash a `prepared` intent was provably never sent (it is sent then,
    by itself), and only a `sent` one can have created a task nobody heard of.
    """

    PREPARED = "prepared"
    SENT = "sent"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    UNCERTAIN = "uncertain"
    COMPLETED = "completed"
    FAILED = "failed"
    ABANDONED = "abandoned"


ACTIVE_INTENT_STATES = frozenset(
    {IntentState.PREPARED, IntentState.SENT, IntentState.ACCEPTED, IntentState.UNCERTAIN}
)
"""Submissions PiAPI may still be working on (or that nobody has settled yet)."""


@dataclass(frozen=True)
class _Row:
    """A record read from one row by its dataclass fields (see the module docstring)."""

    _statuses: ClassVar[Mapping[str, type[StrEnum]]] = {}
    """Fields stored as a status string, and their enum."""

    @classmethod
    def from_row(cls, row: sa.Row[Any]) -> Self:
        """The record of `row` (extra columns, such as a join's, are ignored)."""
        m = row._mapping
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name.endswith("_usd"):
                points = m[f.name.removesuffix("_usd") + "_points"]
                values[f.name] = None if points is None else points_to_usd(points)
            elif f.name in cls._statuses:
                values[f.name] = cls._statuses[f.name](m[f.name])
            else:
                values[f.name] = m[f.name]
        return cls(**values)


@dataclass(frozen=True)
class RunRecord(_Row):
    """A run as the log keeps it: its workflow copied at start, its inputs and its money."""

    _statuses: ClassVar[Mapping[str, type[StrEnum]]] = {"status": RunStatus}

    run_id: str
    idempotency_key: str | None
    workflow_name: str
    workflow_hash: str
    workflow: dict[str, Any]
    source_path: str | None
    trigger: dict[str, Any]
    inputs: dict[str, Any]
    status: RunStatus
    message: str | None
    paused_node: str | None
    epoch: int
    outputs: Any
    output_dir: str
    budget_usd: Decimal | None
    reserved_usd: Decimal
    spent_usd: Decimal
    estimated_usd: Decimal
    created_at: float
    updated_at: float
    finished_at: float | None

    def public_dict(self) -> dict[str, Any]:
        """JSON output: money and moments as `klingflow.formats` shows them."""
        data = {k: v for k, v in self.__dict__.items() if k != "workflow"}
        data["status"] = self.status.value
        return json_values(data)


@dataclass(frozen=True)
class NodeRun(_Row):
    """One node's execution in one epoch of a run (a loop item's body nodes each have one)."""

    _statuses: ClassVar[Mapping[str, type[StrEnum]]] = {"status": NodeStatus}

    run_id: str
    epoch: int
    node_path: str
    node_id: str
    node_type: str
    item_index: int | None
    status: NodeStatus
    inputs: Any
    output: Any
    error: dict[str, Any] | None
    attempts: int
    task_id: str | None
    cost_usd: Decimal | None
    started_at: float | None
    finished_at: float | None

    def public_dict(self) -> dict[str, Any]:
        """JSON output: money and moments as `klingflow.formats` shows them."""
        data = dict(self.__dict__)
        data["status"] = self.status.value
        return json_values(data)


@dataclass(frozen=True)
class Attempt(_Row):
    """One attempt of a node; kept apart from the node so every failed try stays visible."""

    node_path: str
    number: int
    started_at: float
    ended_at: float
    error: dict[str, Any] | None
    retry_in_seconds: float | None

    def public_dict(self) -> dict[str, Any]:
        """JSON output: moments as `klingflow.formats` shows them."""
        return json_values(dict(self.__dict__))


@dataclass(frozen=True)
class Intent(_Row):
    """One paid submission as the intent journal (workflows/intents.py) records it."""

    _statuses: ClassVar[Mapping[str, type[StrEnum]]] = {"state": IntentState}

    intent_id: str
    node_path: str
    state: IntentState
    task_id: str | None
    estimated_usd: Decimal
    note: str | None
    created_at: float

    def public_dict(self) -> dict[str, Any]:
        """JSON output: `estimate_usd` and moments as `klingflow.formats` shows them."""
        return json_values({**self.__dict__, "state": self.state.value})


@dataclass(frozen=True)
class Submission:
    """A paid submission with the run it belongs to, for task lists across runs."""

    run_id: str
    workflow_name: str
    intent: Intent


@dataclass(frozen=True)
class Spend:
    """What runs have spent since a moment (`since`, Unix seconds) and in total."""

    since: float
    today_usd: Decimal
    total_usd: Decimal
    reserved_usd: Decimal
    runs_today: int
    runs_total: int
