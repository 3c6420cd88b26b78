"""Shared fixtures: the emulator is the PiAPI of every test, over real loopback HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from klingflow.emulator import EmulatorConfig, EmulatorServer

TEST_API_KEY = "kf-test-key-7d1c0a5e9b3f"
"""The key tests use; leak tests search every output for it."""

FAST_CONFIG = EmulatorConfig(
    api_keys=[TEST_API_KEY],
    time_scale=1000.0,  # a 60 s generation takes 60 ms
    video_max_height=72,
    video_fps=4,
)


@pytest.fixture(scope="session")
def emulator_server() -> Iterator[EmulatorServer]:
    """One emulator for the session; `emulator` resets it for each test."""
    with EmulatorServer(FAST_CONFIG) as server:
        yield server


@pytest.fixture
def emulator(emulator_server: EmulatorServer) -> EmulatorServer:
    """The session emulator, reset to FAST_CONFIG with no tasks, stats or faults."""
    emulator_server.reset()
    return emulator_server


@pytest.fixture
def api_key() -> str:
    return TEST_API_KEY
