"""The CLI runs in-process with its environment pointed at the test emulator."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from typer.testing import CliRunner, Result

from klingflow.cli import app
from klingflow.emulator import EmulatorServer

Invoke = Callable[..., Result]


@pytest.fixture
def klingflow(emulator: EmulatorServer, api_key: str, monkeypatch: pytest.MonkeyPatch) -> Invoke:
    """Run `klingflow ARGS...` against the emulator; returns click's Result."""
    monkeypatch.setenv("PIAPI_BASE_URL", emulator.url)
    monkeypatch.setenv("PIAPI_API_KEY", api_key)
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        return runner.invoke(app, list(args), catch_exceptions=False)

    return invoke
