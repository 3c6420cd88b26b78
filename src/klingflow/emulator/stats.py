"""What clients really did, counted: the witness that tests and benchmarks read.

`/_emulator/stats` reports these counters in total, per API key and per task, so a test can
assert "paid exactly once" (`creates`) or "retried, but only the GETs" without trusting the
client under test to report on itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Counters", "Stats"]


@dataclass
class Counters:
    """One set of counts; the field names are the keys `/_emulator/stats` reports."""

    creates: int = 0
    create_requests: int = 0
    gets: int = 0
    cancels: int = 0
    account_requests: int = 0
    chat_requests: int = 0
    rate_limited: int = 0
    webhook_deliveries: int = 0
    webhook_failures: int = 0


@dataclass
class Stats:
    """The counters in total, per key id and per task id."""

    totals: Counters = field(default_factory=Counters)
    keys: dict[str, Counters] = field(default_factory=dict)
    tasks: dict[str, Counters] = field(default_factory=dict)

    def bump(self, name: str, *, key: str | None = None, task_id: str | None = None) -> None:
        """Count one `name` in the totals and, when given, for the key and the task."""
        targets = [self.totals]
        if key is not None:
            targets.append(self.keys.setdefault(key, Counters()))
        if task_id is not None:
            targets.append(self.tasks.setdefault(task_id, Counters()))
        for counters in targets:
            setattr(counters, name, getattr(counters, name) + 1)

    def to_json(
        self, *, peak_concurrency: int, peak_by_key: Mapping[str, int], per_task: bool = True
    ) -> dict[str, Any]:
        """The `/_emulator/stats` body; the peaks come from the task store, which sees them.
        Without `per_task`, no `tasks`: a batch's sampler asks every second, and 50,000
        tasks' counters are megabytes to send and parse each time."""
        body = {
            **asdict(self.totals),
            "peak_concurrency": peak_concurrency,
            "keys": {
                key: {**asdict(c), "peak_concurrency": peak_by_key.get(key, 0)}
                for key, c in self.keys.items()
            },
        }
        if per_task:
            body["tasks"] = {task_id: asdict(c) for task_id, c in self.tasks.items()}
        return body
