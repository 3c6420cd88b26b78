"""Video task requests: text- and image-to-video (classic, 3.0, Turbo), Omni, and extend.

These share the video knobs (prompt, duration, aspect ratio, mode, first/last frame) and the
multi-shot rules of Kling 3.0, which live here once for the classic and the Omni request.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar, Literal, Self, get_args

from pydantic import ConfigDict, Field, field_validator, model_validator

from klingflow.piapi.kling.inputs import (
    AUDIO_VERSIONS,
    MAX_PROMPT_CHARS,
    AspectRatio,
    Mode,
    Resolution,
    Strict,
    VideoVersion,
    ratio_from_yaml,
    resolution_of,
    rule,
    seconds_from_text,
)
from klingflow.piapi.kling.request import KlingRequest
from klingflow.piapi.urls import check_url

__all__ = [
    "CameraConfig",
    "CameraControl",
    "Element",
    "ExtendVideoRequest",
    "KlingOmniRequest",
    "KlingTurboRequest",
    "KlingVideoRequest",
    "Shot",
    "check_shots",
    "seconds_of",
]

_SEED_MODEL_NAME = re.compile(r"^\s*kling\s*v?\s*(\d+(?:\.\d+)?(?:-[a-z]+)?)\s*$", re.IGNORECASE)


class Shot(Strict):
    """One shot of a Kling 3.0 multi-shot video."""

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    duration: int = Field(ge=1, le=14)


def check_shots(shots: list[Shot]) -> None:
    """Kling 3.0's multi-shot rule, for the classic and the Omni request alike: 1 to 6 shots
    that add up to 3-15 s (PiAPI then ignores the request's own `duration`)."""
    if not 1 <= len(shots) <= 6:
        raise rule("multi_shots", "takes 1 to 6 shots")
    total = sum(shot.duration for shot in shots)
    if not 3 <= total <= 15:
        raise rule("multi_shots", f"shot durations must add up to 3-15 s, got {total}")


def seconds_of(shots: list[Shot] | None, *, duration: int) -> int:
    """The video's length: the shots' sum when there are shots (PiAPI ignores `duration`)."""
    return duration if shots is None else sum(shot.duration for shot in shots)


class Element(Strict):
    """A reference image for Kling 1.6 elements (the whole image is one element)."""

    image_url: str

    _url = field_validator("image_url")(check_url)


class CameraConfig(Strict):
    """How far the camera moves on each axis, -10 to 10 (0: not at all)."""

    horizontal: float = Field(default=0, ge=-10, le=10)
    vertical: float = Field(default=0, ge=-10, le=10)
    pan: float = Field(default=0, ge=-10, le=10)
    tilt: float = Field(default=0, ge=-10, le=10)
    roll: float = Field(default=0, ge=-10, le=10)
    zoom: float = Field(default=0, ge=-10, le=10)


class CameraControl(Strict):
    """Camera movement for classic text-to-video; `simple` takes one non-zero axis."""

    type: Literal[
        "simple", "down_back", "forward_up", "right_turn_forward", "left_turn_forward"
    ] = "simple"
    config: CameraConfig | None = None

    @model_validator(mode="after")
    def _one_axis(self) -> Self:
        if self.type == "simple":
            if self.config is None:
                raise rule("camera_control.config", "is required when type is 'simple'")
            moving = [k for k, v in self.config.model_dump().items() if v]
            if len(moving) != 1:
                raise rule(
                    "camera_control.config",
                    f"'simple' moves exactly one axis, got {len(moving)} non-zero",
                )
        elif self.config is not None:
            raise rule("camera_control.config", f"must be empty when type is '{self.type}'")
        return self


class _VideoBase(KlingRequest):
    """The knobs the classic and the Turbo video requests share."""

    prompt: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS)
    negative_prompt: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS)
    duration: int = 5
    aspect_ratio: AspectRatio = "16:9"
    _ratio = field_validator("aspect_ratio", mode="before")(ratio_from_yaml)
    mode: Mode = "std"
    image_url: str | None = None
    image_tail_url: str | None = None

    _urls = field_validator("image_url", "image_tail_url")(check_url)
    _duration = field_validator("duration", mode="before")(seconds_from_text)

    @property
    def duration_seconds(self) -> int:
        return self.duration

    @property
    def resolution(self) -> Resolution:
        return resolution_of(is_pro=self.mode == "pro")


class KlingVideoRequest(_VideoBase):
    """Text- or image-to-video, classic versions 1.0 to 2.6 and Kling 3.0.

    Accepts the seed action's inputs as written there: `model_name` "Kling V2.1" selects
    version 2.1, and `duration` "5s" means 5. With `multi_shots`, the top-level `prompt` and
    `duration` are ignored by PiAPI, so the duration becomes the sum of the shots.
    """

    task_type: ClassVar[str] = "video_generation"
    input_aliases: ClassVar[frozenset[str]] = frozenset({"model_name"})

    version: VideoVersion = "3.0"
    cfg_scale: float | None = Field(default=None, ge=0, le=1)
    camera_control: CameraControl | None = None
    enable_audio: bool = False
    prefer_multi_shots: bool = False
    multi_shots: list[Shot] | None = None
    elements: list[Element] | None = None
    professional_mode: bool | None = None

    @model_validator(mode="before")
    @classmethod
    def _seed_model_name(cls, data: Any) -> Any:
        if not isinstance(data, Mapping) or data.get("model_name") in (None, ""):
            return data
        data = dict(data)
        name = str(data.pop("model_name"))
        match = _SEED_MODEL_NAME.match(name)
        if match is None:
            raise rule("model_name", f"unknown model name {name!r} (e.g. 'Kling V2.1')")
        version = match.group(1).lower()
        if version not in get_args(VideoVersion):
            raise rule("model_name", f"unknown model name {name!r} (e.g. 'Kling V2.1')")
        if data.get("version") not in (None, "", version):
            raise rule("model_name", f"says {version} but version says {data['version']}")
        data["version"] = version
        return data

    @model_validator(mode="after")
    def _version_rules(self) -> Self:
        v3 = self.version == "3.0"
        if self.multi_shots is not None:
            if not v3:
                raise rule("multi_shots", "needs version 3.0")
            check_shots(self.multi_shots)
        elif not self.prompt and not self.image_url and not self.elements:
            raise rule("prompt", "is required for text-to-video (no image_url or elements)")
        if v3:
            if self.multi_shots is None and not 3 <= self.duration <= 15:
                raise rule(
                    "duration", f"must be 3 to 15 seconds for version 3.0, got {self.duration}"
                )
        else:
            if self.duration not in (5, 10):
                raise rule("duration", f"must be 5 or 10 for version {self.version}")
            if self.prefer_multi_shots:
                raise rule("prefer_multi_shots", "needs version 3.0")
        if self.enable_audio and self.version not in AUDIO_VERSIONS:
            raise rule("enable_audio", f"needs version 2.6 or 3.0, not {self.version}")
        if self.image_tail_url and not self.image_url:
            raise rule("image_tail_url", "needs image_url (the first frame)")
        if self.camera_control is not None and (self.image_url or v3):
            raise rule("camera_control", "applies to classic text-to-video only")
        if self.elements is not None:
            if self.version != "1.6":
                raise rule("elements", "needs version 1.6")
            if not 1 <= len(self.elements) <= 4:
                raise rule("elements", "takes 1 to 4 images")
            if self.image_url:
                raise rule("elements", "cannot be combined with image_url")
        if self.version == "1.5":
            if self.mode != "pro":
                raise rule("mode", "version 1.5 runs in pro mode only")
            if self.duration != 5:
                raise rule("duration", "version 1.5 makes 5 s videos only")
            if self.image_tail_url:
                raise rule("image_tail_url", "is not supported by version 1.5")
        return self

    @property
    def resolution(self) -> Resolution:
        """1080p in pro mode or with `professional_mode`."""
        return resolution_of(is_pro=self.mode == "pro" or bool(self.professional_mode))

    def to_input(self) -> dict[str, Any]:
        """The `input`, without switches this version lacks; shots replace `duration`."""
        data = super().to_input()
        # Switches a version does not have are not sent (PiAPI documents them from 2.6/3.0).
        if self.version not in AUDIO_VERSIONS and not self.enable_audio:
            del data["enable_audio"]
        if self.version != "3.0" and not self.prefer_multi_shots:
            del data["prefer_multi_shots"]
        if self.multi_shots is not None:
            data.pop("duration", None)  # ignored by PiAPI; the shots decide
            if "prefer_multi_shots" not in self.model_fields_set:
                data["prefer_multi_shots"] = True
        return data

    @property
    def duration_seconds(self) -> int:
        """The shots' sum with `multi_shots`, else `duration`."""
        return seconds_of(self.multi_shots, duration=self.duration)

    @property
    def has_audio(self) -> bool:
        """With `enable_audio` (versions 2.6 and 3.0)."""
        return self.enable_audio


class KlingTurboRequest(_VideoBase):
    """Kling Turbo (`model: kling-turbo`); charged at submission, not at completion."""

    model: ClassVar[str] = "kling-turbo"
    task_type: ClassVar[str] = "video_generation"

    version: Literal["2.5-turbo", "3.0-turbo"] = "2.5-turbo"

    @model_validator(mode="after")
    def _rules(self) -> Self:
        if not self.prompt and not self.image_url:
            raise rule("prompt", "is required for text-to-video (no image_url)")
        if self.version == "2.5-turbo" and self.duration not in (5, 10):
            raise rule("duration", "must be 5 or 10 for version 2.5-turbo")
        if self.version == "3.0-turbo" and not 3 <= self.duration <= 15:
            raise rule("duration", "must be 3 to 15 seconds for version 3.0-turbo")
        if self.image_tail_url and not self.image_url:
            raise rule("image_tail_url", "needs image_url (the first frame)")
        return self


class KlingOmniRequest(KlingRequest):
    """Kling 3.0 Omni and Kling O1: references `@image_1`... in the prompt to `images`."""

    task_type: ClassVar[str] = "omni_video_generation"

    prompt: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS)
    version: Literal["3.0", "o1"] = "3.0"
    resolution_: Resolution = Field(default="720p", alias="resolution")
    duration: int = 5
    aspect_ratio: AspectRatio = "16:9"
    _ratio = field_validator("aspect_ratio", mode="before")(ratio_from_yaml)
    enable_audio: bool = False
    multi_shots: list[Shot] | None = None
    images: list[str] | None = Field(default=None, max_length=7)
    mode: Mode | None = None
    """Sent by some clients; PiAPI ignores it here (`resolution` decides), so do we."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)
    _duration = field_validator("duration", mode="before")(seconds_from_text)

    @field_validator("images")
    @classmethod
    def _image_urls(cls, value: list[str] | None) -> list[str] | None:
        for url in value or []:
            check_url(url)
        return value

    @model_validator(mode="after")
    def _rules(self) -> Self:
        if self.multi_shots is not None:
            check_shots(self.multi_shots)
        elif not self.prompt:
            raise rule("prompt", "is required (or give multi_shots)")
        if self.multi_shots is not None:
            return self  # PiAPI ignores `duration` when the shots are given
        if self.version == "o1" and self.duration not in (5, 10):
            raise rule("duration", "must be 5 or 10 for version o1")
        if self.version == "3.0" and not 3 <= self.duration <= 15:
            raise rule("duration", f"must be 3 to 15 seconds for version 3.0, got {self.duration}")
        return self

    def to_input(self) -> dict[str, Any]:
        """The `input`, with `resolution` under its own name (a field alias here)."""
        return self.model_dump(mode="json", exclude_none=True, by_alias=True)

    @property
    def duration_seconds(self) -> int:
        """The shots' sum with `multi_shots`, else `duration`."""
        return seconds_of(self.multi_shots, duration=self.duration)

    @property
    def resolution(self) -> Resolution:
        """As asked: Omni takes a resolution, not a mode."""
        return self.resolution_

    @property
    def has_audio(self) -> bool:
        """With `enable_audio`."""
        return self.enable_audio


class ExtendVideoRequest(KlingRequest):
    """Extend an earlier Kling video by about 5 s (host-your-account per PiAPI's docs)."""

    task_type: ClassVar[str] = "extend_video"

    origin_task_id: str = Field(min_length=1)
    prompt: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS)
    negative_prompt: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS)
    cfg_scale: float | None = Field(default=None, ge=0, le=1)
