"""What Kling inputs may hold, and the checks every task type shares.

The value types and limits (versions, aspect ratios, effects, prompt length) and the
validators that more than one request class applies: text PiAPI would bill for but cannot
use, YAML's reading of an unquoted `16:9`, the seed action's "5s" durations. A cross-field
rule raises `rule(field, message)`, which keeps the field it is about for the problem list.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from klingflow.problems import ABSOLUTE_RULE

__all__ = [
    "AUDIO_VERSIONS",
    "CLASSIC_VERSIONS",
    "EFFECTS",
    "EFFECTS_NEEDING_PROMPT",
    "MAX_PROMPT_CHARS",
    "AspectRatio",
    "Effect",
    "InertVersion",
    "Mode",
    "Resolution",
    "Strict",
    "VideoVersion",
    "check_text",
    "ratio_from_yaml",
    "resolution_of",
    "rule",
    "seconds_from_text",
]

AspectRatio = Literal["16:9", "9:16", "1:1"]
Mode = Literal["std", "pro"]
Resolution = Literal["720p", "1080p"]
VideoVersion = Literal["1.0", "1.5", "1.6", "2.0", "2.1", "2.1-master", "2.5", "2.6", "3.0"]
CLASSIC_VERSIONS = tuple(version for version in get_args(VideoVersion) if version != "3.0")
"""The versions before Kling 3.0: 5 or 10 s, one shot, no `prefer_multi_shots`."""
AUDIO_VERSIONS = frozenset({"2.6", "3.0"})
"""The versions that can `enable_audio`."""
Effect = Literal[
    "squish", "expansion", "jelly", "cat_oversea", "spinoff", "rocket", "hearting",
    "fighting", "kissing", "hugging", "figure", "vstack", "birthday", "water", "surfing",
]  # fmt: skip
EFFECTS: tuple[str, ...] = get_args(Effect)
EFFECTS_NEEDING_PROMPT = frozenset(
    {"rocket", "hearting", "fighting", "kissing", "hugging", "birthday", "water"}
)
"""Effects PiAPI accepts without a prompt although they "will very likely fail"."""
MAX_PROMPT_CHARS = 2500
InertVersion = Annotated[str | None, Field(max_length=16)]
"""A `version` PiAPI's official client sends ("2.6") where it changes nothing: accepted, sent."""
_SECONDS = re.compile(r"^\s*(\d+)\s*(?:s|sec|secs|seconds)?\s*$", re.IGNORECASE)


def rule(field: str, message: str) -> PydanticCustomError:
    """A cross-field rule violation that keeps the field it is about."""
    return PydanticCustomError(ABSOLUTE_RULE, "{message}", {"field": field, "message": message})


# YAML 1.1 reads an unquoted 16:9 as a base-60 number (16 * 60 + 9), as PyYAML does.
_SEXAGESIMAL_RATIOS = {16 * 60 + 9: "16:9", 9 * 60 + 16: "9:16", 1 * 60 + 1: "1:1"}


def ratio_from_yaml(value: Any) -> Any:
    """Name YAML's surprise instead of "969 is not one of 16:9, 9:16, 1:1"."""
    if isinstance(value, int) and not isinstance(value, bool) and value in _SEXAGESIMAL_RATIOS:
        ratio = _SEXAGESIMAL_RATIOS[value]
        raise ValueError(
            f'got {value}, which is how YAML reads an unquoted {ratio}: quote it ("{ratio}")'
        )
    return value


_PROMPT_FIELDS = frozenset({"prompt"})
_ALLOWED_CONTROLS = frozenset("\n\r\t")


def check_text(value: str, *, needs_visible_text: bool = False) -> str:
    """Refuse text PiAPI would bill for but cannot use: NUL, ANSI escapes and other control
    characters (newlines and tabs are fine), lone surrogates (not Unicode text at all), and,
    where `needs_visible_text`, a non-empty value with nothing visible (spaces, zero-width
    characters). Raises `ValueError` with the reason."""
    for char in value:
        category = unicodedata.category(char)
        if category == "Cs":
            raise ValueError("contains a lone surrogate: not valid Unicode text")
        if category == "Cc" and char not in _ALLOWED_CONTROLS:
            raise ValueError(
                f"contains the control character {char!r} (NUL, ANSI escape...): remove it"
            )
    if (
        needs_visible_text
        and value
        and all(
            char.isspace() or unicodedata.category(char) in ("Cf", "Zs", "Zl", "Zp")
            for char in value
        )
    ):
        raise ValueError("has no visible text")
    return value


class Strict(BaseModel):
    """Base of every Kling model: frozen, unknown keys refused (a typo would cost a video made
    without the setting), and every text field checked with `check_text`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @field_validator("*", mode="after")
    @classmethod
    def _clean_text(cls, value: Any, info: ValidationInfo) -> Any:
        """Every text field: no control characters or surrogates; prompts: visible text."""
        if isinstance(value, str):
            return check_text(value, needs_visible_text=info.field_name in _PROMPT_FIELDS)
        return value


def resolution_of(*, is_pro: bool) -> Resolution:
    """Pro mode renders 1080p, standard 720p: what resolution-priced tasks are billed by."""
    return "1080p" if is_pro else "720p"


def seconds_from_text(value: Any) -> Any:
    """Accept the seed action's "5s" / "10s" as well as plain integers."""
    if isinstance(value, str) and (match := _SECONDS.match(value)):
        return int(match.group(1))
    return value
