"""Injected faults: which rule hits a request, and the answer it turns into.

Rules are consumed in order, from a seeded RNG. A rule with `times=N` hits the next N
matching requests; with `times=None` it stays, and its `probability` makes it a rate ("5% of
GETs answer 503"). The same seed and the same requests give the same faults, so a failing
test or benchmark can be replayed.

`apply_fault` turns a rule into what the client sees: a delay, an error, a 429, a body cut
short (`malformed`), or a connection closed mid-body (`drop`, `truncate`: `CutResponse`).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Collection
from dataclasses import dataclass, field

from fastapi.responses import Response
from starlette.types import Receive, Scope, Send

from klingflow.emulator.config import FaultRule
from klingflow.emulator.responses import Dialect, status_phrase

__all__ = [
    "FILE_FAULTS",
    "REQUEST_FAULTS",
    "STOPPING_MESSAGE",
    "TASK_FAULTS",
    "CutResponse",
    "FaultBook",
    "apply_fault",
]

REQUEST_FAULTS = frozenset({"error", "slow", "drop", "malformed", "rate_limit"})
"""The actions that can hit an API request's answer."""
TASK_FAULTS = frozenset({"fail_task"})
"""The actions that hit the task a create request makes: it fails when processing ends."""
FILE_FAULTS = frozenset({"error", "slow", "drop", "truncate"})
"""The actions that can hit a download of an output file."""
STOPPING_MESSAGE = "service unavailable (the emulator was reset or is stopping)"
"""What a `slow` fault cut short by a reset or a stop answers, with 503."""


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
        """Replace the rules in force, each with its full count of hits."""
        self._armed = [_Armed(rule, rule.times) for rule in rules]

    def add(self, rule: FaultRule) -> None:
        """Arm one more rule, after those already in force (the first match wins)."""
        self._armed.append(_Armed(rule, rule.times))

    def clear(self) -> None:
        """Disarm every rule."""
        self._armed.clear()

    def rules(self) -> list[dict[str, object]]:
        """The rules in force as JSON, each with its `remaining` hits (None: unlimited)."""
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


class CutResponse(Response):
    """Headers promise `body`, then the connection closes after `keep` bytes of it."""

    def __init__(
        self, body: bytes, *, keep: int, status: int = 200, headers: dict[str, str]
    ) -> None:
        super().__init__(status_code=status)
        self._payload, self._keep = body, keep
        self._extra = {k: v for k, v in headers.items() if k.lower() != "content-length"}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(k.encode(), v.encode()) for k, v in self._extra.items()]
        headers.append((b"content-length", str(len(self._payload)).encode()))
        await send({"type": "http.response.start", "status": self.status_code, "headers": headers})
        await send(
            {"type": "http.response.body", "body": self._payload[: self._keep], "more_body": True}
        )
        # Returning with the body unfinished makes the server drop the connection.


def _injected_error(fault: FaultRule, dialect: Dialect) -> Response:
    return dialect.error(fault.status, f"{status_phrase(fault.status)} (injected)", None)


async def apply_fault(
    fault: FaultRule,
    response: Response | None,
    dialect: Dialect,
    *,
    stopping: asyncio.Event | None,
) -> Response | None:
    """What the client gets when `fault` hits; None when the request goes on unchanged.

    `response` is the handler's answer for faults of phase "after", None before the handler
    ran. A `slow` fault only delays (None), unless `stopping` is set meanwhile: then it
    answers 503 at once, so a reset or a stop is never held up by a 30 s delay.
    """
    if fault.action == "slow":
        if stopping is None:  # served without our lifespan: nothing to cut it
            await asyncio.sleep(fault.delay_seconds)
            return None
        try:
            await asyncio.wait_for(stopping.wait(), timeout=fault.delay_seconds)
        except TimeoutError:
            return None
        return dialect.error(503, STOPPING_MESSAGE, None)
    if fault.action == "error":
        return _injected_error(fault, dialect)
    if fault.action == "rate_limit":
        headers = {}
        if fault.retry_after_seconds is not None:
            headers["Retry-After"] = str(max(0, round(fault.retry_after_seconds)))
        return dialect.error(429, "rate limit exceeded (injected)", headers)
    if response is None:
        # Before the handler nothing was done, so the cut answer is an error of the
        # rule's status: a gateway that answers 2xx has taken the request.
        response = _injected_error(fault, dialect)
    body, status = bytes(response.body), response.status_code
    if fault.action == "malformed":
        return Response(
            body[: max(1, int(len(body) * fault.fraction))],
            status_code=status,
            media_type="application/json",
        )
    assert fault.action == "drop"
    return CutResponse(
        body,
        keep=int(len(body) * fault.fraction),
        status=status,
        headers={"content-type": "application/json"},
    )
