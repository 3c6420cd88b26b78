"""What a Kling task costs, before submitting it and after it ran.

One table serves the client (estimates, budgets) and the emulator (the `usage` it reports).
The defaults are PiAPI's published pay-as-you-go prices (shared/piapi-spec.md §8); where
PiAPI publishes a range or nothing, the assumption is named in docs/emulator.md. Prices change:
pass your own `PriceTable` where it matters.
"""

from __future__ import annotations

import math
from decimal import Decimal

from pydantic import BaseModel, ConfigDict

from klingflow.piapi.kling import (
    AvatarRequest,
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
from klingflow.piapi.models import Usage, points_to_usd, usd_to_points

__all__ = [
    "DEFAULT_PRICES",
    "FIXED_PRICE_TASK_TYPES",
    "PriceTable",
    "actual_cost",
    "estimate_cost",
    "estimate_usage",
    "fixed_price",
]

D = Decimal


class PriceTable(BaseModel):
    """USD prices. Keys read `<version>/<mode>` or `<resolution>/<audio|silent>`."""

    model_config = ConfigDict(frozen=True)

    v3_per_second: dict[str, Decimal] = {
        "std/silent": D("0.10"), "std/audio": D("0.15"),
        "pro/silent": D("0.15"), "pro/audio": D("0.20"),
    }  # fmt: skip
    classic_per_5s: dict[str, Decimal] = {
        "1.0/std": D("0.26"), "1.0/pro": D("0.46"),
        "1.5/std": D("0.26"), "1.5/pro": D("0.46"),
        "1.6/std": D("0.26"), "1.6/pro": D("0.46"),
        "2.0/std": D("0.96"), "2.0/pro": D("0.96"),
        "2.1/std": D("0.26"), "2.1/pro": D("0.46"),
        "2.1-master/std": D("0.96"), "2.1-master/pro": D("0.96"),
        "2.5/std": D("0.20"), "2.5/pro": D("0.33"),
        "2.6/std": D("0.20"), "2.6/pro": D("0.33"),
        "2.6/std/audio": D("0.40"), "2.6/pro/audio": D("0.66"),
    }  # fmt: skip
    turbo: dict[str, Decimal] = {
        "2.5-turbo/std/per_5s": D("0.21"), "2.5-turbo/pro/per_5s": D("0.28"),
        "3.0-turbo/std/per_second": D("0.13"), "3.0-turbo/pro/per_second": D("0.19"),
    }  # fmt: skip
    omni_per_second: dict[str, Decimal] = {
        "3.0/720p/silent": D("0.15"), "3.0/720p/audio": D("0.20"),
        "3.0/1080p/silent": D("0.20"), "3.0/1080p/audio": D("0.30"),
        "o1/720p/silent": D("0.078"), "o1/720p/audio": D("0.078"),
        "o1/1080p/silent": D("0.104"), "o1/1080p/audio": D("0.104"),
    }  # fmt: skip
    motion_control_per_second: dict[str, Decimal] = {
        "2.6/std": D("0.065"), "2.6/pro": D("0.104"),
        "3.0/std": D("0.13"), "3.0/pro": D("0.26"),
    }  # fmt: skip
    avatar_per_second: dict[str, Decimal] = {"std": D("0.052"), "pro": D("0.26")}
    effects_per_generation: dict[str, Decimal] = {"std": D("0.20"), "pro": D("0.30")}
    extend_per_generation: Decimal = D("0.26")
    lip_sync_per_5s: Decimal = D("0.10")
    sound_per_generation: Decimal = D("0.07")
    try_on_per_image: Decimal = D("0.07")


DEFAULT_PRICES = PriceTable()


def estimate_cost(
    request: KlingRequest,
    *,
    prices: PriceTable = DEFAULT_PRICES,
    origin_duration_seconds: int | None = None,
) -> Decimal:
    """The USD price of a request, before submitting it.

    `origin_duration_seconds` is the length of the video a lip sync works on (priced per
    started 5 s); without it a 5 s video is assumed.
    """
    seconds = D(request.duration_seconds)
    audio = "audio" if request.has_audio else "silent"
    match request:
        case KlingVideoRequest(version="3.0"):
            return seconds * prices.v3_per_second[f"{_mode(request)}/{audio}"]
        case KlingVideoRequest():
            key = f"{request.version}/{_mode(request)}"
            if request.enable_audio:
                key += "/audio"
            return prices.classic_per_5s[key] * seconds / 5
        case KlingTurboRequest(version="2.5-turbo"):
            return prices.turbo[f"2.5-turbo/{request.mode}/per_5s"] * seconds / 5
        case KlingTurboRequest():
            return prices.turbo[f"{request.version}/{request.mode}/per_second"] * seconds
        case KlingOmniRequest():
            key = f"{request.version}/{request.resolution}/{audio}"
            return prices.omni_per_second[key] * seconds
        case MotionControlRequest():
            key = f"{request.version}/{request.mode}"
            return prices.motion_control_per_second[key] * seconds
        case AvatarRequest():
            return prices.avatar_per_second[request.mode] * seconds
        case EffectsRequest():
            return prices.effects_per_generation["pro" if request.professional_mode else "std"]
        case ExtendVideoRequest():
            return prices.extend_per_generation
        case LipSyncRequest():
            blocks = math.ceil((origin_duration_seconds or 5) / 5)
            return prices.lip_sync_per_5s * blocks
        case SoundRequest():
            return prices.sound_per_generation
        case TryOnRequest():
            return prices.try_on_per_image * request.batch_size
    raise TypeError(f"no price known for {type(request).__name__}")


FIXED_PRICE_TASK_TYPES = ("extend_video", "sound")
"""Task types charged per generation whatever their input: priced before the input is known."""


def fixed_price(task_type: str, *, prices: PriceTable = DEFAULT_PRICES) -> Decimal | None:
    """The USD price of a fixed-price task type (`extend_video`: $0.26); None for the others."""
    return {
        "extend_video": prices.extend_per_generation,
        "sound": prices.sound_per_generation,
    }.get(task_type)


def estimate_usage(
    request: KlingRequest,
    *,
    prices: PriceTable = DEFAULT_PRICES,
    origin_duration_seconds: int | None = None,
) -> Usage:
    """The `usage` PiAPI shows at submission: turbo is charged at once, the rest reserved."""
    points = usd_to_points(
        estimate_cost(request, prices=prices, origin_duration_seconds=origin_duration_seconds)
    )
    if isinstance(request, KlingTurboRequest):
        return Usage(type="llm", frozen=0, consume=points)
    return Usage(type="point", frozen=points, consume=0)


def _mode(request: KlingRequest) -> str:
    """std or pro, however the request asked for it (`mode`, or HYA's `professional_mode`)."""
    return "pro" if request.resolution == "1080p" else "std"


def actual_cost(usage: Usage) -> Decimal:
    """What a finished task was charged, in USD, from its `usage`."""
    return points_to_usd(usage.consume)
