"""Money and moments look the same in every JSON output (klingflow/formats.py)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import pytest

from klingflow.formats import json_values, moment_text, usd_text


@pytest.mark.parametrize(
    ("amount", "text"),
    [("0.5", "0.50"), ("2", "2.00"), ("0", "0.00"), ("2.500", "2.50"), ("0.052", "0.052")],
)
def test_money_has_cents_always_and_more_decimals_only_when_needed(amount: str, text: str) -> None:
    """USD strings show two decimals, three for a rate such as $0.052 a second."""
    assert usd_text(Decimal(amount)) == text


def test_moments_are_iso_8601_with_their_zone() -> None:
    """Unix seconds become an ISO 8601 string that says UTC (+00:00) and parses back."""
    text = moment_text(1_765_000_000.5)
    assert text == "2025-12-06T05:46:40.500000+00:00"
    assert text is not None
    assert datetime.fromisoformat(text).timestamp() == 1_765_000_000.5


def test_record_fields_follow_the_key_conventions() -> None:
    """`*_usd` money, `*_at` moments, and `estimated_usd` named `estimate_usd`."""
    shown = json_values(
        {"spent_usd": Decimal("1.5"), "estimated_usd": Decimal("2"), "created_at": 0.0, "n": 3}
    )
    assert shown == {
        "spent_usd": "1.50",
        "estimate_usd": "2.00",
        "created_at": "1970-01-01T00:00:00+00:00",
        "n": 3,
    }
