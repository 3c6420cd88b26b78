"""Kling task requests, one class per task type, validated before any money is spent.

This package is the single source of PiAPI's input rules: the client validates with it before
sending, and the emulator validates with it before accepting, so the two can never disagree.
Rules come from shared/piapi-spec.md; the ones PiAPI does not document are assumptions listed
in docs/emulator.md. Every broken rule becomes a `(field, rule)` problem in an
`InvalidRequestError`, with fields named as in the request body (`input.duration`).

Modules by concept: `inputs` (value types, limits, shared checks), `config` (service mode,
webhook), `request` (the `KlingRequest` base), `video`, `audio` and `image` (the task types by
family), `registry` (every task type, and `parse_task_request` for raw bodies).
"""

from klingflow.piapi.kling.audio import AvatarRequest, LipSyncRequest, SoundRequest
from klingflow.piapi.kling.config import TaskConfig, WebhookConfig
from klingflow.piapi.kling.image import EffectsRequest, MotionControlRequest, TryOnRequest
from klingflow.piapi.kling.inputs import (
    AUDIO_VERSIONS,
    CLASSIC_VERSIONS,
    EFFECTS,
    AspectRatio,
    Mode,
    Resolution,
    VideoVersion,
)
from klingflow.piapi.kling.registry import REQUEST_TYPES, TaskRequest, parse_task_request
from klingflow.piapi.kling.request import KlingRequest
from klingflow.piapi.kling.video import (
    CameraControl,
    Element,
    ExtendVideoRequest,
    KlingOmniRequest,
    KlingTurboRequest,
    KlingVideoRequest,
    Shot,
)

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
    "Mode",
    "MotionControlRequest",
    "Resolution",
    "Shot",
    "SoundRequest",
    "TaskConfig",
    "TaskRequest",
    "TryOnRequest",
    "VideoVersion",
    "WebhookConfig",
    "parse_task_request",
]
