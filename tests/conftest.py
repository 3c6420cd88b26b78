"""Shared fixtures: the emulator is the PiAPI of every test, over real loopback HTTP.

The emulator and its clients come from our own pytest plugin, `klingflow.testing` (the one
our users get): `piapi_emulator`, `piapi_api_key`, `piapi_client`, `async_piapi_client`.
Here they only get the shorter names our tests use.
"""

from __future__ import annotations

import pytest

from klingflow.emulator import EmulatorServer


@pytest.fixture
def emulator(piapi_emulator: EmulatorServer) -> EmulatorServer:
    """The plugin's session emulator, reset to its starting config: no tasks, stats or faults."""
    return piapi_emulator


@pytest.fixture
def api_key(piapi_api_key: str) -> str:
    """The key the emulator accepts; leak tests search every output for it."""
    return piapi_api_key
