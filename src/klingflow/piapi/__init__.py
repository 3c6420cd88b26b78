"""A typed client for PiAPI's Kling task API: `PiAPI` (sync) and `AsyncPiAPI` (asyncio).

```python
from klingflow.piapi import PiAPI, KlingVideoRequest

with PiAPI() as client:  # PIAPI_API_KEY from the environment
    task, path = client.generate(KlingVideoRequest(prompt="a red fox"), "videos/")
```

Requests are validated before anything is sent; the paid create request is never resent
unless PiAPI provably did not take it; waits poll adaptively (or end on a webhook);
downloads are atomic and resumable. See docs/client.md.
"""

import typing as _typing

from klingflow._exports import lazy_exports as _lazy_exports

# Loaded on first use (PEP 562): reading a price or a points amount (`klingflow.piapi.models`,
# which the run log uses) must not pay for the client's httpx and the Kling request models.
if _typing.TYPE_CHECKING:
    from klingflow.errors import (
        APIStatusError,
        AuthenticationError,
        BadRequestError,
        DownloadError,
        InsufficientCreditsError,
        InvalidRequestError,
        PermissionDeniedError,
        PiAPIConnectionError,
        PiAPIError,
        PiAPITimeoutError,
        RateLimitError,
        ServerError,
        SubmitUncertainError,
        TaskFailedError,
        TaskNotFoundError,
        UnexpectedResponseError,
        WaitTimeoutError,
        WebhookVerificationError,
    )
    from klingflow.piapi._client import AsyncPiAPI, PiAPI
    from klingflow.piapi._retries import RetryPolicy
    from klingflow.piapi.downloads import ProgressCallback
    from klingflow.piapi.kling import (
        AvatarRequest,
        CameraControl,
        EffectsRequest,
        Element,
        ExtendVideoRequest,
        KlingOmniRequest,
        KlingRequest,
        KlingTurboRequest,
        KlingVideoRequest,
        LipSyncRequest,
        MotionControlRequest,
        Shot,
        SoundRequest,
        TaskConfig,
        TryOnRequest,
        WebhookConfig,
        parse_task_request,
    )
    from klingflow.piapi.models import (
        TERMINAL_STATUSES,
        AccountInfo,
        ActiveTaskCounts,
        Task,
        TaskError,
        TaskMeta,
        TaskStatus,
        Usage,
    )
    from klingflow.piapi.pricing import PriceTable, actual_cost, estimate_cost
    from klingflow.piapi.throttle import RateLimit
    from klingflow.piapi.waiting import AsyncWebhookEvents, TaskEvent, WaitPolicy, WebhookEvents
    from klingflow.piapi.webhooks import WebhookDelivery, verify_webhook

_HOMES = {
    "klingflow.errors": (
        "APIStatusError", "AuthenticationError", "BadRequestError", "DownloadError",
        "InsufficientCreditsError", "InvalidRequestError", "PermissionDeniedError",
        "PiAPIConnectionError", "PiAPIError", "PiAPITimeoutError", "RateLimitError", "ServerError",
        "SubmitUncertainError", "TaskFailedError", "TaskNotFoundError", "UnexpectedResponseError",
        "WaitTimeoutError", "WebhookVerificationError"
    ),
    "klingflow.piapi._client": ("AsyncPiAPI", "PiAPI"),
    "klingflow.piapi._retries": ("RetryPolicy",),
    "klingflow.piapi.downloads": ("ProgressCallback",),
    "klingflow.piapi.kling": (
        "AvatarRequest", "CameraControl", "EffectsRequest", "Element", "ExtendVideoRequest",
        "KlingOmniRequest", "KlingRequest", "KlingTurboRequest", "KlingVideoRequest",
        "LipSyncRequest", "MotionControlRequest", "Shot", "SoundRequest", "TaskConfig",
        "TryOnRequest", "WebhookConfig", "parse_task_request"
    ),
    "klingflow.piapi.models": (
        "TERMINAL_STATUSES", "AccountInfo", "ActiveTaskCounts", "Task", "TaskError", "TaskMeta",
        "TaskStatus", "Usage"
    ),
    "klingflow.piapi.pricing": ("PriceTable", "actual_cost", "estimate_cost"),
    "klingflow.piapi.throttle": ("RateLimit",),
    "klingflow.piapi.waiting": ("AsyncWebhookEvents", "TaskEvent", "WaitPolicy", "WebhookEvents"),
    "klingflow.piapi.webhooks": ("WebhookDelivery", "verify_webhook"),
}  # fmt: skip
__getattr__, __dir__ = _lazy_exports(globals(), _HOMES)

__all__ = [
    "TERMINAL_STATUSES",
    "APIStatusError",
    "AccountInfo",
    "ActiveTaskCounts",
    "AsyncPiAPI",
    "AsyncWebhookEvents",
    "AuthenticationError",
    "AvatarRequest",
    "BadRequestError",
    "CameraControl",
    "DownloadError",
    "EffectsRequest",
    "Element",
    "ExtendVideoRequest",
    "InsufficientCreditsError",
    "InvalidRequestError",
    "KlingOmniRequest",
    "KlingRequest",
    "KlingTurboRequest",
    "KlingVideoRequest",
    "LipSyncRequest",
    "MotionControlRequest",
    "PermissionDeniedError",
    "PiAPI",
    "PiAPIConnectionError",
    "PiAPIError",
    "PiAPITimeoutError",
    "PriceTable",
    "ProgressCallback",
    "RateLimit",
    "RateLimitError",
    "RetryPolicy",
    "ServerError",
    "Shot",
    "SoundRequest",
    "SubmitUncertainError",
    "Task",
    "TaskConfig",
    "TaskError",
    "TaskEvent",
    "TaskFailedError",
    "TaskMeta",
    "TaskNotFoundError",
    "TaskStatus",
    "TryOnRequest",
    "UnexpectedResponseError",
    "Usage",
    "WaitPolicy",
    "WaitTimeoutError",
    "WebhookConfig",
    "WebhookDelivery",
    "WebhookEvents",
    "WebhookVerificationError",
    "actual_cost",
    "estimate_cost",
    "parse_task_request",
    "verify_webhook",
]
