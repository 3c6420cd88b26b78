"""`klingflow prices`: the per-second price of every Kling version, mode and audio setting.

Every figure is worked out by `estimate_cost`, from the same `PriceTable` that prices
`klingflow cost`, `--dry-run` and run budgets, so the table cannot disagree with them.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import get_args

from rich.table import Table

from klingflow.cli._console import out, print_json, usd
from klingflow.cli._options import AsJson
from klingflow.cli.videos import PRICE_STAND_IN_PROMPT
from klingflow.errors import InvalidRequestError
from klingflow.formats import usd_text
from klingflow.piapi import KlingVideoRequest, estimate_cost
from klingflow.piapi.kling import Mode, VideoVersion
from klingflow.piapi.pricing import FIXED_PRICE_TASK_TYPES, fixed_price

__all__ = ["PriceRow", "fixed_prices", "prices", "video_prices"]


@dataclass(frozen=True)
class PriceRow:
    """The price of a video of one version, mode and audio setting."""

    version: str
    mode: str
    has_audio: bool
    per_second_usd: Decimal
    durations: tuple[tuple[int, Decimal], ...]
    """(seconds, USD) for the lengths a version takes: 5 and 10, and 15 on Kling 3.0."""


def video_prices() -> list[PriceRow]:
    """One row per version, mode and audio setting that PiAPI accepts, newest first."""
    rows: list[PriceRow] = []
    modes: tuple[Mode, ...] = get_args(Mode)
    for version in reversed(get_args(VideoVersion)):
        for mode in modes:
            for has_audio in (False, True):
                durations = []
                for seconds in (5, 10, 15):
                    try:
                        request = KlingVideoRequest(
                            prompt=PRICE_STAND_IN_PROMPT,
                            version=version,
                            mode=mode,
                            enable_audio=has_audio,
                            duration=seconds,
                        )
                    except InvalidRequestError:
                        continue  # a combination PiAPI refuses (no audio before 2.6, ...)
                    durations.append((seconds, estimate_cost(request)))
                if durations:
                    seconds, price = durations[0]
                    rows.append(
                        PriceRow(version, mode, has_audio, price / seconds, tuple(durations))
                    )
    return rows


def fixed_prices() -> list[tuple[str, Decimal]]:
    """Task types charged per generation, whatever their input."""
    found = [(task_type, fixed_price(task_type)) for task_type in FIXED_PRICE_TASK_TYPES]
    return [(task_type, price) for task_type, price in found if price is not None]


def prices(as_json: AsJson = False) -> None:
    """Print the per-second price of every Kling version, mode and audio setting (the table
    every estimate uses), and the fixed-price task types."""
    rows = video_prices()
    fixed = fixed_prices()
    if as_json:
        print_json(
            {
                "video_generation": [
                    {
                        "version": row.version,
                        "mode": row.mode,
                        "audio": row.has_audio,
                        "per_second_usd": usd_text(row.per_second_usd),
                        "by_duration_usd": {str(s): usd_text(p) for s, p in row.durations},
                    }
                    for row in rows
                ],
                "per_generation_usd": {task_type: usd_text(price) for task_type, price in fixed},
            }
        )
        return
    table = Table("version", "mode", "audio", "per second", "5 s", "10 s", "15 s", box=None)
    for row in rows:
        by_seconds = dict(row.durations)
        table.add_row(
            row.version,
            row.mode,
            "audio" if row.has_audio else "silent",
            usd(row.per_second_usd),
            *(usd(by_seconds[s]) if s in by_seconds else "-" for s in (5, 10, 15)),
        )
    out.print(table)
    for task_type, price in fixed:
        out.print(f"{task_type}: {usd(price)} per generation")
