"""PiAPI's usage points and dollars (1 USD = 10,000,000 points), exactly.

A module of its own, without the task models, so that reading the run log (which keeps
amounts as points) does not build PiAPI's pydantic models first."""

from __future__ import annotations

from decimal import Decimal

__all__ = ["POINTS_PER_USD", "points_to_usd", "usd_to_points"]

POINTS_PER_USD = 10_000_000


def points_to_usd(points: int) -> Decimal:
    """Convert PiAPI usage points to USD (exact)."""
    return Decimal(points) / POINTS_PER_USD


def usd_to_points(usd: Decimal) -> int:
    """Convert USD to PiAPI usage points, rounding to the nearest point."""
    return int((usd * POINTS_PER_USD).to_integral_value())
