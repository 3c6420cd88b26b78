"""Which injected fault, if any, hits a request: rules consumed in order, from a seeded RNG.

A rule with `times=N` hits the next N matching requests; with `times=None` it stays, and its
`probability` makes it a rate ("5% of GETs answer 503"). The same seed and the same requests
give the same faults, so a failing test or benchmark can be replayed.
"""

from __future__ import annotations

import random
from collections.abc import Collection
from dataclasses import dataclass, field

from klingflow.emulator.config import FaultRule

__all__ = ["REQUEST_FAULTS", "FaultBook"]

REQUEST_FAULTS = frozenset({"error", "slow", "drop", "malformed", "rate_limit"})


@dataclass
class _Armed:
    rule: FaultRule
    remaining: int | None


@dataclass
class FaultBook:
    """The rules in force and how many hits each has left."""

    rng: random.Random
    _armed: list[_Armed] = field(default_factory=list)

    def load(self, rules: list[FaultRule]) -> None:
        self._armed = [_Armed(rule, rule.times) for rule in rules]

    def add(self, rule: FaultRule) -> None:
        self._armed.append(_Armed(rule, rule.times))

    def clear(self) -> None:
        self._armed.clear()

    def rules(self) -> list[dict[str, object]]:
        return [
            {**armed.rule.model_dump(mode="json"), "remaining": armed.remaining}
            for armed in self._armed
        ]

    def take(
        self,
        *,
        method: str,
        path: str,
        actions: Collection[str],
        task_type: str | None = None,
        phase: str | None = None,
    ) -> FaultRule | None:
        """The first live rule for this request among `actions`, consuming one hit.

        With `phase`, only rules of that phase are considered, so a request can meet one
        rule before its handler runs and another after it.
        """
        for armed in self._armed:
            rule = armed.rule
            if rule.action not in actions or armed.remaining == 0:
                continue
            if phase is not None and rule.phase != phase:
                continue
            if rule.method and rule.method.upper() != method.upper():
                continue
            if rule.path and not path.startswith(rule.path):
                continue
            if rule.task_type and rule.task_type != task_type:
                continue
            if rule.probability < 1 and self.rng.random() >= rule.probability:
                continue
            if armed.remaining is not None:
                armed.remaining -= 1
            return rule
        return None
