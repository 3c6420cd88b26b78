"""How money and moments look in every JSON output, the CLI's `--json` and the REST API alike.

Money is a string of USD with at least two decimals (`"0.50"`, `"2.00"`), and more only where
an amount has them (a per-second rate of `"0.052"`): strings, so no float rounding, and cents
always shown, so `"0.5"` never sits beside `"0.50"`. Moments are ISO 8601 with their zone
(`"2026-12-06T02:31:25.120000+00:00"`). The key names follow one meaning each: `cost_usd`
(what a task was charged), `estimate_usd` (what it would cost), `spent_usd` (what a run or
account was charged), `budget_usd`, `reserved_usd`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import PlainSerializer

__all__ = ["RENAMED_KEYS", "MomentJSON", "UsdJSON", "json_values", "moment_text", "usd_text"]

_CENT = Decimal("0.01")


def usd_text(amount: Decimal | None) -> str | None:
    """`Decimal("0.5")` -> `"0.50"`; `Decimal("0.052")` -> `"0.052"`; None stays None."""
    if amount is None:
        return None
    exponent = amount.normalize().as_tuple().exponent
    places = max(2, -exponent) if isinstance(exponent, int) else 2
    return f"{amount:.{places}f}"


def moment_text(seconds: float | None) -> str | None:
    """Unix seconds -> ISO 8601 in UTC with its offset; None stays None."""
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat()


RENAMED_KEYS = {"estimated_usd": "estimate_usd", "estimated_cost_usd": "estimate_usd"}
"""Our objects' attribute names -> the one JSON key for that meaning."""


def json_values(data: dict[str, Any]) -> dict[str, Any]:
    """A record's fields as JSON output shows them, by key: `*_usd` money as `usd_text`,
    `*_at` moments as `moment_text`, and the keys of `RENAMED_KEYS` renamed."""
    shown: dict[str, Any] = {}
    for key, value in data.items():
        if key.endswith("_usd") and isinstance(value, Decimal):
            value = usd_text(value)
        elif key.endswith("_at") and isinstance(value, int | float):
            value = moment_text(value)
        shown[RENAMED_KEYS.get(key, key)] = value
    return shown


UsdJSON = Annotated[Decimal, PlainSerializer(usd_text, return_type=str, when_used="json")]
"""A USD amount that serializes to JSON as `usd_text` does."""

MomentJSON = Annotated[float, PlainSerializer(moment_text, return_type=str, when_used="json")]
"""Unix seconds that serialize to JSON as an ISO 8601 moment with its zone."""
