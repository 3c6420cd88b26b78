"""Kling task requests, one class per task type, validated before any money is spent.

This module is the single source of PiAPI's input rules: the client validates with it before
sending, and the emulator validates with it before accepting, so the two can never disagree.
Rules come from shared/piapi-spec.md; the ones PiAPI does not document are assumptions listed
in docs/emulator.md. Every broken rule becomes a `(field, rule)` problem in an
`InvalidRequestError`, with fields named as in the request body (`input.duration`).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Self, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from klingflow.errors import InvalidRequestError, Problem
from klingflow.redaction import MASK

__all__ = [
    "AUDIO_VERSIONS",
    "CLASSIC_VERSIONS",
    "EFFECTS",
    "REQUEST_TYPES",
    "AspectRatio",
    "AvatarRequest",
    "CameraControl",
    "EffectsRequest",
    "Element",
    "ExtendVideoRequest",
    "KlingOmniRequest",
    "KlingRequest",
    "KlingTurboRequest",
    "KlingVideoRequest",
    "LipSyncRequest",
    "MotionControlRequest",
    "Shot",
    "SoundRequest",
    "TaskConfig",
    "TaskRequest",
    "TryOnRequest",
    "WebhookConfig",
    "parse_task_request",
]

AspectRatio = Literal["16:9", "9:16", "1:1"]
Mode = Literal["std", "pro"]
Resolution = Literal["720p", "1080p"]
CLASSIC_VERSIONS = ("1.0", "1.5", "1.6", "2.0", "2.1", "2.1-master", "2.5", "2.6")
VideoVersion = Literal["1.0", "1.5", "1.6", "2.0", "2.1", "2.1-master", "2.5", "2.6", "3.0"]
AUDIO_VERSIONS = frozenset({"2.6", "3.0"})
EFFECTS = (
    "squish", "expansion", "jelly", "cat_oversea", "spinoff", "rocket", "hearting",
    "fighting", "kissing", "hugging", "figure", "vstack", "birthday", "water", "surfing",
)  # fmt: skip
EFFECTS_NEEDING_PROMPT = frozenset(
    {"rocket", "hearting", "fighting", "kissing", "hugging", "birthday", "water"}
)
MAX_PROMPT_CHARS = 2500
_URL = re.compile(r"^https?://[^\s/]+", re.IGNORECASE)
_SEED_MODEL_NAME = re.compile(r"^\s*kling\s*v?\s*(\d+(?:\.\d+)?(?:-[a-z]+)?)\s*$", re.IGNORECASE)
_SECONDS = re.compile(r"^\s*(\d+)\s*(?:s|sec|secs|seconds)?\s*$", re.IGNORECASE)


def _rule(field: str, message: str) -> PydanticCustomError:
    """A cross-field rule violation that keeps the field it is about."""
    return PydanticCustomError("kling_rule", "{message}", {"field": field, "message": message})


def problems_from(error: ValidationError, *, prefix: str = "input") -> list[Problem]:
    """Turn a pydantic error into `(field, rule)` pairs named as in the request body."""
    problems: list[Problem] = []
    for item in error.errors(include_url=False):
        ctx = item.get("ctx") or {}
        if item["type"] == "kling_rule":
            field = str(ctx["field"])
        else:
            field = ".".join(str(part) for part in item["loc"])
        if item["type"] == "extra_forbidden":
            message = "is not a known field for this task type"
        else:
            message = item["msg"].removeprefix("Value error, ")
        problems.append((f"{prefix}.{field}" if prefix and field else field or prefix, message))
    return problems


# YAML 1.1 reads an unquoted 16:9 as a base-60 number (16 * 60 + 9), as PyYAML does.
_SEXAGESIMAL_RATIOS = {16 * 60 + 9: "16:9", 9 * 60 + 16: "9:16", 1 * 60 + 1: "1:1"}


def _ratio_from_yaml(value: Any) -> Any:
    """Name YAML's surprise instead of "969 is not one of 16:9, 9:16, 1:1"."""
    if isinstance(value, int) and not isinstance(value, bool) and value in _SEXAGESIMAL_RATIOS:
        ratio = _SEXAGESIMAL_RATIOS[value]
        raise ValueError(
            f'got {value}, which is how YAML reads an unquoted {ratio}: quote it ("{ratio}")'
        )
    return value


def _check_url(value: str | None) -> str | None:
    if value is not None and not _URL.match(value):
        raise ValueError("must be an http(s) URL")
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


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    @field_validator("*", mode="after")
    @classmethod
    def _clean_text(cls, value: Any, info: ValidationInfo) -> Any:
        """Every text field: no control characters or surrogates; prompts: visible text."""
        if isinstance(value, str):
            return check_text(value, needs_visible_text=info.field_name in _PROMPT_FIELDS)
        return value


class Shot(_Strict):
    """One shot of a Kling 3.0 multi-shot video."""

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    duration: int = Field(ge=1, le=14)


class Element(_Strict):
    """A reference image for Kling 1.6 elements (the whole image is one element)."""

    image_url: str

    _url = field_validator("image_url")(_check_url)


class CameraConfig(_Strict):
    horizontal: float = Field(default=0, ge=-10, le=10)
    vertical: float = Field(default=0, ge=-10, le=10)
    pan: float = Field(default=0, ge=-10, le=10)
    tilt: float = Field(default=0, ge=-10, le=10)
    roll: float = Field(default=0, ge=-10, le=10)
    zoom: float = Field(default=0, ge=-10, le=10)


class CameraControl(_Strict):
    """Camera movement for classic text-to-video; `simple` takes one non-zero axis."""

    type: Literal[
        "simple", "down_back", "forward_up", "right_turn_forward", "left_turn_forward"
    ] = "simple"
    config: CameraConfig | None = None

    @model_validator(mode="after")
    def _one_axis(self) -> Self:
        if self.type == "simple":
            if self.config is None:
                raise _rule("camera_control.config", "is required when type is 'simple'")
            moving = [k for k, v in self.config.model_dump().items() if v]
            if len(moving) != 1:
                raise _rule(
                    "camera_control.config",
                    f"'simple' moves exactly one axis, got {len(moving)} non-zero",
                )
        elif self.config is not None:
            raise _rule("camera_control.config", f"must be empty when type is '{self.type}'")
        return self


class WebhookConfig(_Strict):
    """Where PiAPI posts task updates; the secret comes back in `x-webhook-secret`."""

    endpoint: str
    secret: str = ""

    _url = field_validator("endpoint")(_check_url)

    def __repr__(self) -> str:  # the secret must never reach a log through a repr
        return f"WebhookConfig(endpoint={self.endpoint!r}, secret={MASK if self.secret else ''!r})"


class TaskConfig(_Strict):
    """Per-task options: `public` is pay-as-you-go, `private` is host-your-account."""

    service_mode: Literal["public", "private", ""] = "public"
    webhook_config: WebhookConfig | None = None

    @field_validator("webhook_config", mode="before")
    @classmethod
    def _empty_endpoint_is_no_webhook(cls, value: Any) -> Any:
        # PiAPI's own examples send {"endpoint": "", "secret": ""} to mean "no webhook".
        if isinstance(value, Mapping) and not value.get("endpoint"):
            return None
        return value


class KlingRequest(_Strict):
    """Base of every task request. Building one validates it; errors list every problem."""

    model: ClassVar[str] = "kling"
    task_type: ClassVar[str]
    input_aliases: ClassVar[frozenset[str]] = frozenset()
    """Input keys a validator turns into fields (the seed action's `model_name`)."""

    if not TYPE_CHECKING:  # hidden from mypy so the pydantic plugin keeps typed signatures

        def __init__(self, /, **data: Any) -> None:
            try:
                super().__init__(**data)
            except ValidationError as error:
                raise InvalidRequestError(problems_from(error)) from None

    @classmethod
    def from_input(cls, data: Mapping[str, Any]) -> Self:
        """Build from an `input` mapping (loose types such as "5s" allowed), as PiAPI would."""
        return cls(**data)

    @classmethod
    def input_names(cls) -> frozenset[str]:
        """Every `input` key this task type knows; PiAPI's gateway ignores the others."""
        names = {field.alias or name for name, field in cls.model_fields.items()}
        return frozenset(names | set(cls.model_fields) | cls.input_aliases)

    def sent_input_names(self) -> frozenset[str]:
        """The `input` keys (as in the body) the caller gave, not filled in by defaults."""
        fields = type(self).model_fields
        return frozenset(fields[name].alias or name for name in self.model_fields_set)

    @model_validator(mode="before")
    @classmethod
    def _drop_unset(cls, data: Any) -> Any:
        # Templates render a missing optional value as "" or None: both mean "not given".
        if isinstance(data, Mapping):
            return {k: v for k, v in data.items() if v is not None and v != ""}
        return data

    def to_input(self) -> dict[str, Any]:
        """The `input` object as PiAPI expects it (unset fields left out)."""
        return self.model_dump(mode="json", exclude_none=True)

    def to_body(self, config: TaskConfig | None = None) -> dict[str, Any]:
        """The whole create-task body."""
        body: dict[str, Any] = {
            "model": self.model,
            "task_type": self.task_type,
            "input": self.to_input(),
        }
        if config is not None:
            body["config"] = config.model_dump(mode="json", exclude_none=True)
        return body

    @property
    def duration_seconds(self) -> int:
        """Seconds of media the task produces (what per-second prices multiply)."""
        return 5

    @property
    def resolution(self) -> Resolution:
        return "720p"

    @property
    def has_audio(self) -> bool:
        return False


def _seconds(value: Any) -> Any:
    """Accept the seed action's "5s" / "10s" as well as plain integers."""
    if isinstance(value, str) and (match := _SECONDS.match(value)):
        return int(match.group(1))
    return value


class _VideoBase(KlingRequest):
    prompt: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS)
    negative_prompt: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS)
    duration: int = 5
    aspect_ratio: AspectRatio = "16:9"
    _ratio = field_validator("aspect_ratio", mode="before")(_ratio_from_yaml)
    mode: Mode = "std"
    image_url: str | None = None
    image_tail_url: str | None = None

    _urls = field_validator("image_url", "image_tail_url")(_check_url)
    _duration = field_validator("duration", mode="before")(_seconds)

    @property
    def duration_seconds(self) -> int:
        return self.duration

    @property
    def resolution(self) -> Resolution:
        return "1080p" if self.mode == "pro" else "720p"


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
            raise _rule("model_name", f"unknown model name {name!r} (e.g. 'Kling V2.1')")
        version = match.group(1).lower()
        if version not in get_args(VideoVersion):
            raise _rule("model_name", f"unknown model name {name!r} (e.g. 'Kling V2.1')")
        if data.get("version") not in (None, "", version):
            raise _rule("model_name", f"says {version} but version says {data['version']}")
        data["version"] = version
        return data

    @model_validator(mode="after")
    def _version_rules(self) -> Self:
        v3 = self.version == "3.0"
        if self.multi_shots is not None:
            if not v3:
                raise _rule("multi_shots", "needs version 3.0")
            if not 1 <= len(self.multi_shots) <= 6:
                raise _rule("multi_shots", "takes 1 to 6 shots")
            total = sum(shot.duration for shot in self.multi_shots)
            if not 3 <= total <= 15:
                raise _rule("multi_shots", f"shot durations must add up to 3-15 s, got {total}")
        elif not self.prompt and not self.image_url and not self.elements:
            raise _rule("prompt", "is required for text-to-video (no image_url or elements)")
        if v3:
            if self.multi_shots is None and not 3 <= self.duration <= 15:
                raise _rule(
                    "duration", f"must be 3 to 15 seconds for version 3.0, got {self.duration}"
                )
        else:
            if self.duration not in (5, 10):
                raise _rule("duration", f"must be 5 or 10 for version {self.version}")
            if self.prefer_multi_shots:
                raise _rule("prefer_multi_shots", "needs version 3.0")
        if self.enable_audio and self.version not in AUDIO_VERSIONS:
            raise _rule("enable_audio", f"needs version 2.6 or 3.0, not {self.version}")
        if self.image_tail_url and not self.image_url:
            raise _rule("image_tail_url", "needs image_url (the first frame)")
        if self.camera_control is not None and (self.image_url or v3):
            raise _rule("camera_control", "applies to classic text-to-video only")
        if self.elements is not None:
            if self.version != "1.6":
                raise _rule("elements", "needs version 1.6")
            if not 1 <= len(self.elements) <= 4:
                raise _rule("elements", "takes 1 to 4 images")
            if self.image_url:
                raise _rule("elements", "cannot be combined with image_url")
        if self.version == "1.5":
            if self.mode != "pro":
                raise _rule("mode", "version 1.5 runs in pro mode only")
            if self.duration != 5:
                raise _rule("duration", "version 1.5 makes 5 s videos only")
            if self.image_tail_url:
                raise _rule("image_tail_url", "is not supported by version 1.5")
        return self

    @property
    def resolution(self) -> Resolution:
        return "1080p" if self.mode == "pro" or self.professional_mode else "720p"

    def to_input(self) -> dict[str, Any]:
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
        if self.multi_shots is not None:
            return sum(shot.duration for shot in self.multi_shots)
        return self.duration

    @property
    def has_audio(self) -> bool:
        return self.enable_audio


class KlingTurboRequest(_VideoBase):
    """Kling Turbo (`model: kling-turbo`); charged at submission, not at completion."""

    model: ClassVar[str] = "kling-turbo"
    task_type: ClassVar[str] = "video_generation"

    version: Literal["2.5-turbo", "3.0-turbo"] = "2.5-turbo"

    @model_validator(mode="after")
    def _rules(self) -> Self:
        if not self.prompt and not self.image_url:
            raise _rule("prompt", "is required for text-to-video (no image_url)")
        if self.version == "2.5-turbo" and self.duration not in (5, 10):
            raise _rule("duration", "must be 5 or 10 for version 2.5-turbo")
        if self.version == "3.0-turbo" and not 3 <= self.duration <= 15:
            raise _rule("duration", "must be 3 to 15 seconds for version 3.0-turbo")
        if self.image_tail_url and not self.image_url:
            raise _rule("image_tail_url", "needs image_url (the first frame)")
        return self


class KlingOmniRequest(KlingRequest):
    """Kling 3.0 Omni and Kling O1: references `@image_1`... in the prompt to `images`."""

    task_type: ClassVar[str] = "omni_video_generation"

    prompt: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS)
    version: Literal["3.0", "o1"] = "3.0"
    resolution_: Resolution = Field(default="720p", alias="resolution")
    duration: int = 5
    aspect_ratio: AspectRatio = "16:9"
    _ratio = field_validator("aspect_ratio", mode="before")(_ratio_from_yaml)
    enable_audio: bool = False
    multi_shots: list[Shot] | None = None
    images: list[str] | None = Field(default=None, max_length=7)
    mode: Mode | None = None
    """Sent by some clients; PiAPI ignores it here (`resolution` decides), so do we."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)
    _duration = field_validator("duration", mode="before")(_seconds)

    @field_validator("images")
    @classmethod
    def _image_urls(cls, value: list[str] | None) -> list[str] | None:
        for url in value or []:
            _check_url(url)
        return value

    @model_validator(mode="after")
    def _rules(self) -> Self:
        if self.multi_shots is not None:
            if not 1 <= len(self.multi_shots) <= 6:
                raise _rule("multi_shots", "takes 1 to 6 shots")
            total = sum(shot.duration for shot in self.multi_shots)
            if not 3 <= total <= 15:
                raise _rule("multi_shots", f"shot durations must add up to 3-15 s, got {total}")
        elif not self.prompt:
            raise _rule("prompt", "is required (or give multi_shots)")
        if self.multi_shots is not None:
            return self  # PiAPI ignores `duration` when the shots are given
        if self.version == "o1" and self.duration not in (5, 10):
            raise _rule("duration", "must be 5 or 10 for version o1")
        if self.version == "3.0" and not 3 <= self.duration <= 15:
            raise _rule("duration", f"must be 3 to 15 seconds for version 3.0, got {self.duration}")
        return self

    def to_input(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True, by_alias=True)

    @property
    def duration_seconds(self) -> int:
        if self.multi_shots is not None:
            return sum(shot.duration for shot in self.multi_shots)
        return self.duration

    @property
    def resolution(self) -> Resolution:
        return self.resolution_

    @property
    def has_audio(self) -> bool:
        return self.enable_audio


class ExtendVideoRequest(KlingRequest):
    """Extend an earlier Kling video by about 5 s (host-your-account per PiAPI's docs)."""

    task_type: ClassVar[str] = "extend_video"

    origin_task_id: str = Field(min_length=1)
    prompt: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS)
    negative_prompt: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS)
    cfg_scale: float | None = Field(default=None, ge=0, le=1)


class LipSyncRequest(KlingRequest):
    """Make the people in an earlier Kling video speak a text or an audio file."""

    task_type: ClassVar[str] = "lip_sync"

    origin_task_id: str = Field(min_length=1)
    tts_text: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS)
    tts_timbre: str | None = None
    tts_speed: float | None = Field(default=None, ge=0.8, le=2)
    local_dubbing_url: str | None = None

    _url = field_validator("local_dubbing_url")(_check_url)

    @model_validator(mode="after")
    def _speech(self) -> Self:
        if not self.tts_text and not self.local_dubbing_url:
            raise _rule("tts_text", "give tts_text or local_dubbing_url (what to say)")
        return self

    @property
    def has_audio(self) -> bool:
        return True  # the output speaks


class EffectsRequest(KlingRequest):
    """A template effect applied to one image."""

    task_type: ClassVar[str] = "effects"

    image_url: str
    effect: Literal[
        "squish", "expansion", "jelly", "cat_oversea", "spinoff", "rocket", "hearting",
        "fighting", "kissing", "hugging", "figure", "vstack", "birthday", "water", "surfing",
    ]  # fmt: skip
    prompt: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS)
    professional_mode: bool = False
    version: str | None = Field(default=None, max_length=16)
    """PiAPI's official client sends "2.6" here; accepted and sent, it changes nothing."""

    _url = field_validator("image_url")(_check_url)

    @model_validator(mode="after")
    def _prompt_needed(self) -> Self:
        # PiAPI accepts these without a prompt but says they "will very likely fail": a
        # failed generation still costs the user a round trip, so we refuse it up front.
        if self.effect in EFFECTS_NEEDING_PROMPT and not self.prompt:
            raise _rule("prompt", f"is required for the '{self.effect}' effect")
        return self

    @property
    def resolution(self) -> Resolution:
        return "1080p" if self.professional_mode else "720p"


class SoundRequest(KlingRequest):
    """Generate sound from a prompt, or for an earlier Kling video (4 outputs)."""

    task_type: ClassVar[str] = "sound"

    prompt: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS)
    duration: Literal[5, 10] = 10
    origin_task_id: str | None = None
    version: str | None = Field(default=None, max_length=16)
    """PiAPI's official client sends "2.6" here; accepted and sent, it changes nothing."""

    _duration = field_validator("duration", mode="before")(_seconds)

    @model_validator(mode="after")
    def _source(self) -> Self:
        if not self.prompt and not self.origin_task_id:
            raise _rule("prompt", "give a prompt or an origin_task_id")
        return self

    @property
    def duration_seconds(self) -> int:
        return self.duration

    @property
    def has_audio(self) -> bool:
        return True


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

    _urls = field_validator("image_url", "video_url")(_check_url)

    @model_validator(mode="after")
    def _reference(self) -> Self:
        if bool(self.video_url) == bool(self.preset_motion):
            raise _rule("video_url", "give exactly one of video_url and preset_motion")
        return self

    @property
    def resolution(self) -> Resolution:
        return "1080p" if self.mode == "pro" else "720p"

    @property
    def has_audio(self) -> bool:
        return self.keep_original_sound


class AvatarRequest(KlingRequest):
    """A talking avatar from a portrait and speech (fields assumed from Kling's own API)."""

    task_type: ClassVar[str] = "avatar"

    image_url: str
    audio_url: str | None = None
    tts_text: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS)
    prompt: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS)
    mode: Mode = "std"
    version: str | None = Field(default=None, max_length=16)
    """PiAPI's official client sends "2.6" here; accepted and sent, it changes nothing."""

    _urls = field_validator("image_url", "audio_url")(_check_url)

    @model_validator(mode="after")
    def _speech(self) -> Self:
        if not self.audio_url and not self.tts_text:
            raise _rule("audio_url", "give audio_url or tts_text (what the avatar says)")
        return self

    @property
    def resolution(self) -> Resolution:
        return "1080p" if self.mode == "pro" else "720p"

    @property
    def has_audio(self) -> bool:
        return True


class TryOnRequest(KlingRequest):
    """Virtual try-on: dress a person image in a garment (images, not video)."""

    task_type: ClassVar[str] = "ai_try_on"

    model_input: str
    dress_input: str | None = None
    upper_input: str | None = None
    lower_input: str | None = None
    batch_size: int = Field(default=1, ge=1, le=4)
    version: str | None = Field(default=None, max_length=16)
    """PiAPI's official client sends "2.6" here; accepted and sent, it changes nothing."""

    _urls = field_validator("model_input", "dress_input", "upper_input", "lower_input")(_check_url)

    @model_validator(mode="after")
    def _garments(self) -> Self:
        separates = self.upper_input or self.lower_input
        if bool(self.dress_input) == bool(separates):
            raise _rule(
                "dress_input", "give dress_input, or upper_input and/or lower_input, not both"
            )
        return self


TaskRequest = (
    KlingVideoRequest
    | KlingTurboRequest
    | KlingOmniRequest
    | ExtendVideoRequest
    | LipSyncRequest
    | EffectsRequest
    | SoundRequest
    | MotionControlRequest
    | AvatarRequest
    | TryOnRequest
)

REQUEST_TYPES: dict[tuple[str, str], type[KlingRequest]] = {
    (cls.model, cls.task_type): cls
    for cls in (
        KlingVideoRequest,
        KlingTurboRequest,
        KlingOmniRequest,
        ExtendVideoRequest,
        LipSyncRequest,
        EffectsRequest,
        SoundRequest,
        MotionControlRequest,
        AvatarRequest,
        TryOnRequest,
    )
}
"""(model, task_type) -> request class: every Kling task the client and emulator know."""


def parse_task_request(
    body: Mapping[str, Any], *, strict: bool = True
) -> tuple[KlingRequest, TaskConfig | None]:
    """Validate a raw create-task body; raise `InvalidRequestError` naming every problem.

    `strict` refuses keys this module does not know (a typo would cost a video made
    without the setting). With `strict=False` they are left out of validation, as PiAPI's
    gateway passes unknown fields through: at the top level, in `input` and in `config`.
    """
    model, task_type = body.get("model"), body.get("task_type")
    if not isinstance(model, str) or not model:
        raise InvalidRequestError([("model", "is required ('kling' or 'kling-turbo')")])
    if not isinstance(task_type, str) or not task_type:
        raise InvalidRequestError([("task_type", "is required")])
    cls = REQUEST_TYPES.get((model, task_type))
    if cls is None:
        known = sorted({t for m, t in REQUEST_TYPES if m == model})
        if not known:
            raise InvalidRequestError([("model", f"unknown model {model!r}")])
        raise InvalidRequestError(
            [("task_type", f"{task_type!r} is not a {model} task type ({', '.join(known)})")]
        )
    raw_input = body.get("input")
    if not isinstance(raw_input, Mapping):
        raise InvalidRequestError([("input", "is required and must be an object")])
    extra = set(body) - {"model", "task_type", "input", "config"}
    if extra and strict:
        raise InvalidRequestError([(name, "is not a known field") for name in sorted(extra)])
    if not strict:
        names = cls.input_names()
        raw_input = {k: v for k, v in raw_input.items() if k in names}
    request = cls.from_input(raw_input)
    config = None
    raw_config = body.get("config")
    if raw_config is not None:
        if not strict and isinstance(raw_config, Mapping):
            raw_config = {k: v for k, v in raw_config.items() if k in TaskConfig.model_fields}
        try:
            config = TaskConfig.model_validate(raw_config)
        except ValidationError as error:
            raise InvalidRequestError(problems_from(error, prefix="config")) from None
    return request, config
