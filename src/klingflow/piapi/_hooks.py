"""The callbacks a caller can hand the clients, and what each one hears (types only)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from klingflow.errors import PiAPIError
from klingflow.piapi.kling import KlingRequest
from klingflow.piapi.models import Task

__all__ = ["ProgressHook", "RequestInput", "RetryCallback", "SendingHook"]

ProgressHook = Callable[[Task], None]
"""Hears every new version of a task during `wait` (status, progress)."""
SendingHook = Callable[[], object]
"""Called right before a create POST leaves, after the client's limits; see `PiAPI.submit`."""
RetryCallback = Callable[[PiAPIError, float], None]
"""Called before each retry with the error and the pause (s): the CLI says "PiAPI is not
answering" after the first failure instead of retrying in silence."""
RequestInput = KlingRequest | Mapping[str, Any]
"""What `submit` takes: a typed request, or a raw `{model, task_type, input[, config]}` body."""
