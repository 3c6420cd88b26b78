"""Requests whose output speaks or sounds: lip sync, sound, and talking avatars.

Their outputs always carry audio, which prices depend on; each needs something to say (a
text or an audio file) and refuses a request without it.
"""

from __future__ import annotations

from typing import ClassVar, Literal, Self

from pydantic import Field, field_validator, model_validator

from klingflow.piapi.kling.inputs import (
    MAX_PROMPT_CHARS,
    InertVersion,
    Mode,
    Resolution,
    resolution_of,
    rule,
    seconds_from_text,
)
from klingflow.piapi.kling.request import KlingRequest
from klingflow.piapi.urls import check_url

__all__ = ["AvatarRequest", "LipSyncRequest", "SoundRequest"]


class LipSyncRequest(KlingRequest):
    """Make the people in an earlier Kling video speak a text or an audio file."""

    task_type: ClassVar[str] = "lip_sync"

    origin_task_id: str = Field(min_length=1)
    tts_text: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS)
    tts_timbre: str | None = None
    tts_speed: float | None = Field(default=None, ge=0.8, le=2)
    local_dubbing_url: str | None = None

    _url = field_validator("local_dubbing_url")(check_url)

    @model_validator(mode="after")
    def _speech(self) -> Self:
        if not self.tts_text and not self.local_dubbing_url:
            raise rule("tts_text", "give tts_text or local_dubbing_url (what to say)")
        return self

    @property
    def has_audio(self) -> bool:
        """Always: the output speaks."""
        return True  # the output speaks


class SoundRequest(KlingRequest):
    """Generate sound from a prompt, or for an earlier Kling video (4 outputs)."""

    task_type: ClassVar[str] = "sound"

    prompt: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS)
    duration: Literal[5, 10] = 10
    origin_task_id: str | None = None
    version: InertVersion = None

    _duration = field_validator("duration", mode="before")(seconds_from_text)

    @model_validator(mode="after")
    def _source(self) -> Self:
        if not self.prompt and not self.origin_task_id:
            raise rule("prompt", "give a prompt or an origin_task_id")
        return self

    @property
    def duration_seconds(self) -> int:
        """The sound's length, 5 or 10 s."""
        return self.duration

    @property
    def has_audio(self) -> bool:
        """Always: sound is the output."""
        return True


class AvatarRequest(KlingRequest):
    """A talking avatar from a portrait and speech (fields assumed from Kling's own API)."""

    task_type: ClassVar[str] = "avatar"

    image_url: str
    audio_url: str | None = None
    tts_text: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS)
    prompt: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS)
    mode: Mode = "std"
    version: InertVersion = None

    _urls = field_validator("image_url", "audio_url")(check_url)

    @model_validator(mode="after")
    def _speech(self) -> Self:
        if not self.audio_url and not self.tts_text:
            raise rule("audio_url", "give audio_url or tts_text (what the avatar says)")
        return self

    @property
    def resolution(self) -> Resolution:
        """1080p in pro mode."""
        return resolution_of(is_pro=self.mode == "pro")

    @property
    def has_audio(self) -> bool:
        """Always: the avatar speaks."""
        return True
