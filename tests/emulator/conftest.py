"""Fixtures of the emulator's contract tests: a keyed HTTP client and a stopped clock."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from klingflow.emulator import EmulatorServer

from ..loopback import loopback_client

PAUSED_TIME_SCALE = 1e-6
"""A clock this slow stands still for a test's lifetime: only `advance` moves tasks on."""


@pytest.fixture
def client(emulator: EmulatorServer, api_key: str) -> Iterator[httpx.Client]:
    """An HTTP client for the emulator that sends the test key."""
    with loopback_client(emulator.url, headers={"x-api-key": api_key}, timeout=30.0) as http:
        yield http


@pytest.fixture
def paused(emulator: EmulatorServer) -> EmulatorServer:
    """The emulator with its clock all but stopped, so tests step time with `advance`."""
    emulator.configure(time_scale=PAUSED_TIME_SCALE)
    return emulator
