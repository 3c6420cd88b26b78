"""Requests that start from an image: template effects, motion control, virtual try-on."""

from __future__ import annotations

from typing import ClassVar, Literal, Self

from pydantic import Field, field_validator, model_validator

from klingflow.piapi.kling.inputs import (
    EFFECTS_NEEDING_PROMPT,
    MAX_PROMPT_CHARS,
    Effect,
    InertVersion,
    Mode,
    Resolution,
    resolution_of,
    rule,
)
from klingflow.piapi.kling.request import KlingRequest
from klingflow.piapi.urls import check_url

__all__ = ["EffectsRequest", "MotionControlRequest", "TryOnRequest"]


class EffectsRequest(KlingRequest):
    """A template effect applied to one image."""

    task_type: ClassVar[str] = "effects"

    image_url: str
    effect: Effect
    prompt: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS)
    professional_mode: bool = False
    version: InertVersion = None

    _url = field_validator("image_url")(check_url)

    @model_validator(mode="after")
    def _prompt_needed(self) -> Self:
        # PiAPI accepts these without a prompt but says they "will very likely fail": a
        # failed generation still costs the user a round trip, so we refuse it up front.
        if self.effect in EFFECTS_NEEDING_PROMPT and not self.prompt:
            raise rule("prompt", f"is required for the '{self.effect}' effect")
        return self

    @property
    def resolution(self) -> Resolution:
        """1080p with `professional_mode`."""
        return resolution_of(is_pro=self.professional_mode)


class MotionControlRequest(KlingRequest):
    """Animate an image with the motion of a reference video or a preset."""

    task_type: ClassVar[str] = "motion_control"

    image_url: str
    video_url: str | None = None
    preset_motion: str | None = None
    motion_direction: Literal["video", "image"] = "video"
    keep_original_sound: bool = False
    mode: Mode = "std"
    version: Literal["2.6", "3.0"] = "2.6"
    prompt: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS)

    _urls = field_validator("image_url", "video_url")(check_url)

    @model_validator(mode="after")
    def _reference(self) -> Self:
        if bool(self.video_url) == bool(self.preset_motion):
            raise rule("video_url", "give exactly one of video_url and preset_motion")
        return self

    @property
    def resolution(self) -> Resolution:
        """1080p in pro mode."""
        return resolution_of(is_pro=self.mode == "pro")

    @property
    def has_audio(self) -> bool:
        """With `keep_original_sound`, the reference video's sound."""
        return self.keep_original_sound


class TryOnRequest(KlingRequest):
    """Virtual try-on: dress a person image in a garment (images, not video)."""

    task_type: ClassVar[str] = "ai_try_on"

    model_input: str
    dress_input: str | None = None
    upper_input: str | None = None
    lower_input: str | None = None
    batch_size: int = Field(default=1, ge=1, le=4)
    version: InertVersion = None

    _urls = field_validator("model_input", "dress_input", "upper_input", "lower_input")(check_url)

    @model_validator(mode="after")
    def _garments(self) -> Self:
        separates = self.upper_input or self.lower_input
        if bool(self.dress_input) == bool(separates):
            raise rule(
                "dress_input", "give dress_input, or upper_input and/or lower_input, not both"
            )
        return self
