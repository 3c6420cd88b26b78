"""Cron expressions and time zones: croniter behind typed functions, its errors translated here.

croniter ships no type information, so this is the only module that imports it: what leaves
here is `str | None` problems and aware `datetime`s.

Expressions are standard cron: 5 fields (minute hour day-of-month month day-of-week), or the
`@hourly`/`@daily`/`@weekly`/`@monthly`/`@yearly` shorthands, plus an optional 6th field for
seconds (`* * * * * */30`: every 30 s). croniter's 7th field (years) and Jenkins-style `H`
are refused, so a file means the same to every cron reader.
"""

from __future__ import annotations

import functools
import zoneinfo
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Final

from croniter import (  # type: ignore[import-untyped]  # croniter ships no py.typed
    CroniterBadDateError,
    CroniterError,
    croniter,
)

__all__ = ["CRON_HELP", "cron_problem", "next_tick", "ticks", "timezone_problem"]

CRON_HELP: Final = (
    "5 fields (minute hour day-of-month month day-of-week) and an optional 6th for seconds"
)
_SHORTHANDS: Final = (
    "@hourly",
    "@daily",
    "@midnight",
    "@weekly",
    "@monthly",
    "@yearly",
    "@annually",
)
_PROBE: Final = datetime(2000, 1, 1, tzinfo=UTC)


def cron_problem(expression: str) -> str | None:
    """Why `expression` is not a cron expression klingflow accepts, or None."""
    text = expression.strip()
    if not text:
        return f"is empty; write {CRON_HELP}"
    if text.startswith("@"):
        if text.lower() not in _SHORTHANDS:
            return f"unknown shorthand {text!r} (use one of {', '.join(_SHORTHANDS)})"
    elif (count := len(text.split())) not in (5, 6):
        return f"has {count} field{'s' if count != 1 else ''}; write {CRON_HELP}"
    try:
        croniter(text, _PROBE).get_next(datetime)
    except CroniterBadDateError:
        return f"{text!r} never matches a date (such as 30 February)"
    except CroniterError as error:
        return f"is not a valid cron expression: {error}"
    return None


@functools.cache
def _zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def timezone_problem(name: str) -> str | None:
    """Why `name` is not an IANA time zone name (such as `Europe/Berlin`), or None."""
    if name in _zones():
        return None
    lowered = {zone.lower(): zone for zone in _zones()}
    if (match := lowered.get(name.lower())) is not None:
        hint = f" (did you mean {match!r}?)"
    else:
        hint = " (an IANA name such as 'UTC', 'Europe/Berlin' or 'America/New_York')"
    return f"unknown time zone {name!r}{hint}"


def ticks(
    expression: str, timezone: str, *, after: datetime, until: datetime
) -> Iterator[datetime]:
    """The ticks in (after, until], in order, as aware UTC datetimes.

    The expression is read in `timezone`: across a daylight-saving change, a local time
    that does not exist fires at the jump, and one that happens twice fires twice.
    """
    if after.tzinfo is None or until.tzinfo is None:
        raise ValueError("after and until must be timezone-aware datetimes")
    schedule = croniter(expression.strip(), after.astimezone(zoneinfo.ZoneInfo(timezone)))
    while True:
        try:
            tick = schedule.get_next(datetime)
        except CroniterBadDateError:  # no further date matches
            return
        assert isinstance(tick, datetime)
        if tick > until:
            return
        yield tick.astimezone(UTC)


def next_tick(expression: str, timezone: str, *, after: datetime) -> datetime | None:
    """The first tick after `after` (aware UTC), or None when no date matches any more."""
    if after.tzinfo is None:
        raise ValueError("after must be a timezone-aware datetime")
    schedule = croniter(expression.strip(), after.astimezone(zoneinfo.ZoneInfo(timezone)))
    try:
        tick = schedule.get_next(datetime)
    except CroniterBadDateError:
        return None
    assert isinstance(tick, datetime)
    return tick.astimezone(UTC)
