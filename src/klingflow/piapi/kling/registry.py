"""Every Kling task type the client and the emulator know, and the parser of raw bodies.

Adding a task type means adding its request class to `REQUEST_TYPES` (and `TaskRequest`);
`parse_task_request` then accepts it, for the client and the emulator alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, get_args

from pydantic import ValidationError

from klingflow.errors import InvalidRequestError
from klingflow.piapi.kling.audio import AvatarRequest, LipSyncRequest, SoundRequest
from klingflow.piapi.kling.config import TaskConfig
from klingflow.piapi.kling.image import EffectsRequest, MotionControlRequest, TryOnRequest
from klingflow.piapi.kling.request import KlingRequest
from klingflow.piapi.kling.video import (
    ExtendVideoRequest,
    KlingOmniRequest,
    KlingTurboRequest,
    KlingVideoRequest,
)
from klingflow.problems import problems_from

__all__ = ["REQUEST_TYPES", "TaskRequest", "parse_task_request"]


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
    (cls.model, cls.task_type): cls for cls in get_args(TaskRequest)
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
