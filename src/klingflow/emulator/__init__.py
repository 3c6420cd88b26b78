"""A local PiAPI (Kling task API) over real HTTP: the test double and the offline backend.

Start it with `klingflow emulator`, or in-process with `EmulatorServer`; see docs/emulator.md.
"""

from klingflow.emulator.app import create_app
from klingflow.emulator.config import (
    EmulatorConfig,
    FaultRule,
    GenerationError,
    RateLimit,
    WebhookFaults,
    key_id,
)
from klingflow.emulator.server import EmulatorServer

__all__ = [
    "EmulatorConfig",
    "EmulatorServer",
    "FaultRule",
    "GenerationError",
    "RateLimit",
    "WebhookFaults",
    "create_app",
    "key_id",
]
