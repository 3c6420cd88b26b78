"""The `input` a task shows: what the caller sent, normalised, plus PiAPI's documented defaults.

PiAPI echoes the input it accepted. Fields the caller did not send appear only where PiAPI's
own documented requests always carry them (`version`, `mode`, `duration`, `aspect_ratio` of
a video; `enable_audio` where the version has audio), so a 2.1 task never shows
`enable_audio` or `prefer_multi_shots` it was not given. Keys PiAPI does not know are kept as
sent: its gateway passes them through.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from klingflow.piapi.kling import (
    AUDIO_VERSIONS,
    KlingOmniRequest,
    KlingRequest,
    KlingTurboRequest,
    KlingVideoRequest,
)

__all__ = ["echo_input"]


def _documented_defaults(request: KlingRequest) -> set[str]:
    """The unsent fields PiAPI's documented request of this kind carries anyway."""
    if isinstance(request, KlingTurboRequest):
        return {"version", "mode", "duration", "aspect_ratio"}
    if isinstance(request, KlingVideoRequest):
        names = {"version", "mode", "duration", "aspect_ratio"}
        if request.version in AUDIO_VERSIONS:
            names.add("enable_audio")
        if request.version == "3.0":
            names.add("prefer_multi_shots")
        return names
    if isinstance(request, KlingOmniRequest):
        return {"version", "resolution", "duration", "aspect_ratio", "enable_audio"}
    return set()


def echo_input(request: KlingRequest, extras: Mapping[str, Any]) -> dict[str, Any]:
    """The task's `input`: sent fields (normalised, e.g. "5s" -> 5), defaults, extras; sorted."""
    full = request.to_input()
    keep = set(request.sent_input_names()) | _documented_defaults(request)
    if isinstance(request, KlingVideoRequest) and request.multi_shots is not None:
        keep.add("prefer_multi_shots")  # to_input sets it with the shots, as PiAPI shows
    echo = {name: value for name, value in full.items() if name in keep}
    echo.update({name: value for name, value in extras.items() if name not in echo})
    return dict(sorted(echo.items()))
