"""klingflow: Kling videos through PiAPI, reliably and at scale.

```python
import klingflow

with klingflow.PiAPI() as client:  # PIAPI_API_KEY from the environment
    task, path = client.generate(klingflow.KlingVideoRequest(prompt="a red fox"), "videos/")
```

The client lives in `klingflow.piapi` (every name is also here), the local PiAPI emulator in
`klingflow.emulator`, every exception in `klingflow.errors`.
"""

from __future__ import annotations

import typing as _typing

from klingflow._exports import lazy_exports as _lazy_exports

# Loaded on first use (PEP 562), so that importing a small part of the package, such as the
# pytest plugin `klingflow.testing`, does not pay for the client (httpx, pydantic).
if _typing.TYPE_CHECKING:
    from klingflow.errors import (
        InvalidRequestError,
        KlingflowError,
        PiAPIError,
        SubmitUncertainError,
        TaskFailedError,
        WaitTimeoutError,
    )
    from klingflow.piapi import (
        AsyncPiAPI,
        KlingOmniRequest,
        KlingRequest,
        KlingVideoRequest,
        PiAPI,
        Task,
        TaskStatus,
        WaitPolicy,
        estimate_cost,
    )

    __version__: str

_HOMES = {
    "klingflow.errors": (
        "InvalidRequestError", "KlingflowError", "PiAPIError", "SubmitUncertainError",
        "TaskFailedError", "WaitTimeoutError",
    ),
    "klingflow.piapi": (
        "AsyncPiAPI", "KlingOmniRequest", "KlingRequest", "KlingVideoRequest", "PiAPI", "Task",
        "TaskStatus", "WaitPolicy", "estimate_cost",
    ),
}  # fmt: skip


def _version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("klingflow")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - a source tree
        return "0"


__getattr__, __dir__ = _lazy_exports(globals(), _HOMES, {"__version__": _version})

__all__ = [
    "AsyncPiAPI",
    "InvalidRequestError",
    "KlingOmniRequest",
    "KlingRequest",
    "KlingVideoRequest",
    "KlingflowError",
    "PiAPI",
    "PiAPIError",
    "SubmitUncertainError",
    "Task",
    "TaskFailedError",
    "TaskStatus",
    "WaitPolicy",
    "WaitTimeoutError",
    "__version__",
    "estimate_cost",
]
