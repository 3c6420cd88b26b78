"""A pytest plugin: PiAPI in your tests, as the local emulator, with clients bound to it.

Installed with klingflow (entry point `pytest11`), it gives any test suite these fixtures:

- `piapi_emulator`: the running emulator (an `EmulatorServer`), fresh for each test (no tasks,
  faults or stats, the starting config): `.url`, `.configure(...)`, `.add_fault(...)`,
  `.advance(seconds)`, `.stats()`, `.tasks()`. One server serves the whole session.
- `piapi_client` / `async_piapi_client`: a `PiAPI` / `AsyncPiAPI` with the test key, pointed
  at it, that waits in the emulator's time: at `time_scale` 1000 a 60 s generation, and so
  `client.generate(...)`, takes about 60 ms, not the 2 s of a real first poll.
- `piapi_api_key`, and `piapi_emulator_config` (session scope) to override for another
  config, e.g. `EmulatorConfig(time_scale=100, balance_usd=5)`.

This module imports only pytest at load time; the emulator and the client are imported
inside the fixtures, so a session that does not use them pays nothing. See docs/emulator.md.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from klingflow.emulator import EmulatorConfig, EmulatorServer
    from klingflow.piapi import AsyncPiAPI, PiAPI, WaitPolicy

__all__ = [
    "PIAPI_TEST_KEY",
    "async_piapi_client",
    "emulator_wait_policy",
    "piapi_api_key",
    "piapi_client",
    "piapi_emulator",
    "piapi_emulator_config",
    "piapi_emulator_server",
]

PIAPI_TEST_KEY = "piapi-emulator-test-key"
"""The key the default config accepts (any key when `api_keys` is empty)."""

DEFAULT_TIME_SCALE = 1000.0
"""Emulated seconds per real second in the default config: a 62 s task takes 62 ms."""


def emulator_wait_policy(time_scale: float, policy: WaitPolicy | None = None) -> WaitPolicy:
    """`policy` (default: the client's) with every duration divided by `time_scale`.

    The emulator's tasks take their emulated time divided by `time_scale`; a client that
    waits with this policy polls as often, relative to the task, as it would against PiAPI.
    """
    from klingflow.piapi.waiting import DEFAULT_WAIT_POLICY

    base = policy or DEFAULT_WAIT_POLICY
    cap = base.max_interval_seconds
    return dataclasses.replace(
        base,
        deadline_seconds=base.deadline_seconds / time_scale,
        initial_interval_seconds=base.initial_interval_seconds / time_scale,
        max_interval_seconds=None if cap is None else cap / time_scale,
        time_scale=base.time_scale * time_scale,
    )


@pytest.fixture(scope="session")
def piapi_emulator_config() -> EmulatorConfig:
    """The emulator's config for the session; override this fixture to change it."""
    from klingflow.emulator import EmulatorConfig

    return EmulatorConfig(
        api_keys=[PIAPI_TEST_KEY],
        time_scale=DEFAULT_TIME_SCALE,
        video_max_height=72,  # small, fast renders: tests check files, not pictures
        video_fps=4,
    )


@pytest.fixture(scope="session")
def piapi_emulator_server(piapi_emulator_config: EmulatorConfig) -> Iterator[EmulatorServer]:
    """One emulator on a free loopback port for the session (use `piapi_emulator`)."""
    from klingflow.emulator import EmulatorServer

    with EmulatorServer(piapi_emulator_config) as server:
        yield server


@pytest.fixture
def piapi_emulator(piapi_emulator_server: EmulatorServer) -> EmulatorServer:
    """The session's emulator, reset: no tasks, faults or stats, the starting config."""
    piapi_emulator_server.reset()
    return piapi_emulator_server


@pytest.fixture
def piapi_api_key(piapi_emulator_config: EmulatorConfig) -> str:
    """A key the emulator accepts: the config's first, else the plugin's test key."""
    keys = piapi_emulator_config.api_keys
    return keys[0] if keys else PIAPI_TEST_KEY


@pytest.fixture
def piapi_client(
    piapi_emulator: EmulatorServer, piapi_api_key: str, piapi_emulator_config: EmulatorConfig
) -> Iterator[PiAPI]:
    """A `PiAPI` client of the emulator that waits in the emulator's time; closed after."""
    from klingflow.piapi import PiAPI

    with PiAPI(
        api_key=piapi_api_key,
        base_url=piapi_emulator.url,
        wait_policy=emulator_wait_policy(piapi_emulator_config.time_scale),
    ) as client:
        yield client


@pytest.fixture
def async_piapi_client(
    piapi_emulator: EmulatorServer, piapi_api_key: str, piapi_emulator_config: EmulatorConfig
) -> Iterator[AsyncPiAPI]:
    """An `AsyncPiAPI` client of the emulator, for async tests (pytest-asyncio, anyio...).

    A plain fixture, so it needs no async plugin, and any event loop can use it: it keeps
    no connection open between requests (a socket belongs to the loop that opened it, and
    the test's loop is gone by teardown). It is closed after the test.
    """
    import asyncio

    import httpx

    from klingflow.piapi import AsyncPiAPI
    from klingflow.piapi.tls import default_ssl_context

    client = AsyncPiAPI(
        api_key=piapi_api_key,
        base_url=piapi_emulator.url,
        wait_policy=emulator_wait_policy(piapi_emulator_config.time_scale),
        transport=httpx.AsyncHTTPTransport(
            limits=httpx.Limits(max_keepalive_connections=0), verify=default_ssl_context()
        ),
    )
    yield client
    asyncio.run(client.aclose())
