"""klingflow: Kling videos through PiAPI, reliably and at scale.

```python
import klingflow

with klingflow.PiAPI() as client:  # PIAPI_API_KEY from the environment
    task, path = client.generate(klingflow.KlingVideoRequest(prompt="a red fox"), "videos/")
```

The client lives in `klingflow.piapi` (every name is also here), the local PiAPI emulator in
`klingflow.emulator`, every exception in `klingflow.errors`.
"""

import importlib.metadata as _metadata

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

try:
    __version__ = _metadata.version("klingflow")
except _metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0"

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
