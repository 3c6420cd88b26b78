"""Names the test that opened an asyncio connection nobody closed.

A transport left open is reported by the garbage collector, in whichever test happens to run
then (pytest's unraisable-exception check fails that test): CI once failed
tests/test_architecture.py on "unclosed transport" that way. So every asyncio socket transport
notes the test that opened it (one lookup of `PYTEST_CURRENT_TEST`), and one found unclosed
warns with that test's id beside asyncio's own warning, which is how the next failure named
its source (a service's stop: tests/loopback.py). The cost is an attribute per connection.
"""

from __future__ import annotations

import os
import warnings
from asyncio import selector_events
from typing import Any

_Transport: Any = selector_events._SelectorSocketTransport  # type: ignore[attr-defined]
_opened = _Transport.__init__
_finalize = _Transport.__del__


def _init(self: Any, *args: Any, **kwargs: Any) -> None:
    _opened(self, *args, **kwargs)
    self._klingflow_opened_in = os.environ.get("PYTEST_CURRENT_TEST", "no test")


def _del(self: Any) -> None:
    try:
        if self._sock is not None:  # asyncio warns too, without saying where it came from
            opened_in = getattr(self, "_klingflow_opened_in", "an unknown test")
            message = f"unclosed transport {self!r} was opened in {opened_in}"
            warnings.warn(message, ResourceWarning, stacklevel=1)
    finally:
        _finalize(self)  # closes the socket


def install() -> None:
    """Patch asyncio's socket transports for this process (idempotent)."""
    _Transport.__init__ = _init
    _Transport.__del__ = _del
