"""Prices from the one table, before submitting and after the fact."""

from __future__ import annotations

from decimal import Decimal

import pytest

from klingflow.piapi.kling import (
    EffectsRequest,
    ExtendVideoRequest,
    KlingOmniRequest,
    KlingRequest,
    KlingTurboRequest,
    KlingVideoRequest,
    LipSyncRequest,
    MotionControlRequest,
    SoundRequest,
    TryOnRequest,
)
from klingflow.piapi.models import Usage
from klingflow.piapi.pricing import PriceTable, actual_cost, estimate_cost, estimate_usage

IMG = "https://example.com/cat.png"
SHOTS = [{"prompt": "a dog runs", "duration": 3}, {"prompt": "it stops", "duration": 2}]


@pytest.mark.parametrize(
    ("request_", "usd"),
    [
        (KlingVideoRequest(prompt="p", duration=5), "0.50"),
        (KlingVideoRequest(prompt="p", duration=10, enable_audio=True), "1.50"),
        (KlingVideoRequest(prompt="p", duration=15, mode="pro"), "2.25"),
        (KlingVideoRequest(prompt="p", duration=5, mode="pro", enable_audio=True), "1.00"),
        (KlingVideoRequest.from_input({"multi_shots": SHOTS, "enable_audio": True}), "0.75"),
        (KlingVideoRequest(prompt="p", version="2.1", duration=10), "0.52"),
        (KlingVideoRequest(prompt="p", version="2.6", mode="pro", enable_audio=True), "0.66"),
        (KlingVideoRequest(prompt="p", version="2.1-master"), "0.96"),
        (KlingTurboRequest(prompt="p", mode="pro", duration=10), "0.56"),
        (KlingOmniRequest(prompt="p", duration=3), "0.45"),
        (
            KlingOmniRequest.from_input(
                {"prompt": "p", "resolution": "1080p", "enable_audio": True}
            ),
            "1.50",
        ),
        (EffectsRequest(image_url=IMG, effect="squish"), "0.20"),
        (ExtendVideoRequest(origin_task_id="t"), "0.26"),
        (LipSyncRequest(origin_task_id="t", tts_text="hi"), "0.10"),
        (SoundRequest(prompt="rain"), "0.07"),
        (MotionControlRequest(image_url=IMG, preset_motion="dance"), "0.325"),
        (TryOnRequest(model_input=IMG, dress_input=IMG, batch_size=3), "0.21"),
    ],
)
def test_estimate_matches_published_prices(request_: KlingRequest, usd: str) -> None:
    """Each task type is priced from PiAPI's published pay-as-you-go table."""
    assert estimate_cost(request_) == Decimal(usd)


def test_lip_sync_is_priced_per_started_five_seconds_of_the_origin_video() -> None:
    """A 12 s origin video costs three 5 s blocks of lip sync."""
    request = LipSyncRequest(origin_task_id="t", tts_text="hello")
    assert estimate_cost(request, origin_duration_seconds=12) == Decimal("0.30")


def test_a_custom_price_table_overrides_the_defaults() -> None:
    """Prices change: a caller's table is used instead of the built-in one."""
    prices = PriceTable(sound_per_generation=Decimal("0.05"))
    assert estimate_cost(SoundRequest(prompt="rain"), prices=prices) == Decimal("0.05")


def test_usage_is_reserved_for_kling_and_charged_upfront_for_turbo() -> None:
    """Kling freezes points at submit; turbo (type llm) consumes them at once, as PiAPI shows."""
    assert estimate_usage(KlingOmniRequest(prompt="p", duration=3)) == Usage(
        type="point", frozen=4_500_000, consume=0
    )
    assert estimate_usage(KlingTurboRequest(prompt="p", mode="pro")) == Usage(
        type="llm", frozen=0, consume=2_800_000
    )


def test_actual_cost_reads_consumed_points_in_usd() -> None:
    """10,000,000 points are one US dollar."""
    assert actual_cost(Usage(frozen=10_000_000, consume=4_500_000)) == Decimal("0.45")
