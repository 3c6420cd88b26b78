"""Shared fixtures: the emulator is the PiAPI of every test, over real loopback HTTP.

The emulator and its clients come from our own pytest plugin, `klingflow.testing` (the one
our users get): `piapi_emulator`, `piapi_api_key`, `piapi_client`, `async_piapi_client`.
Here they only get the shorter names our tests use.
"""

from __future__ import annotations

from typing import Any, cast

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


BAD_INPUTS = "bad inputs refused"
"""The `user_properties` key under which an adversarial test reports (entry point, count)."""

_bad_inputs: dict[str, int] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Sum the adversarial suite's bad inputs from each report (sent by xdist's workers too)."""
    if report.when == "call":
        for name, value in report.user_properties:
            if name == BAD_INPUTS:
                entry, count = cast(tuple[str, int], value)
                _bad_inputs[entry] = _bad_inputs.get(entry, 0) + count


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _bad_inputs:
        total = sum(_bad_inputs.values())
        parts = ", ".join(f"{entry} {count}" for entry, count in sorted(_bad_inputs.items()))
        terminalreporter.write_line(f"adversarial suite: {total} bad inputs refused ({parts})")
