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
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}


def __getattr__(name: str) -> _typing.Any:
    import importlib

    if name == "__version__":
        import importlib.metadata

        try:
            value: _typing.Any = importlib.metadata.version("klingflow")
        except importlib.metadata.PackageNotFoundError:  # pragma: no cover - a source tree
            value = "0"
    elif name in _HOME_OF:
        value = getattr(importlib.import_module(_HOME_OF[name]), name)
    else:
        raise AttributeError(f"module 'klingflow' has no attribute {name!r}")
    globals()[name] = value  # once loaded, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


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
