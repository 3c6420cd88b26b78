"""The adversarial suite: bad input at every entry point, against the real emulator.

Every test here feeds klingflow input a careless user or an attacker would, and checks the
three promises: a specific error (exit code or status, and a message naming the field), no
traceback, zero creates at the emulator, and no secret in any response, log line or stored
row. `Cases` counts the bad inputs, and the count is printed at the end of the run.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from typer.testing import CliRunner, Result

from klingflow.cli import app as cli_app
from klingflow.emulator import EmulatorServer
from klingflow.piapi import AsyncPiAPI, RetryPolicy, WaitPolicy
from klingflow.service import create_app
from klingflow.settings import Settings
from klingflow.workflows.engine import Engine

from ..conftest import BAD_INPUTS
from ..loopback import LoopbackServer, loopback_client

WEBHOOK_SECRET = "kf-adversarial-hook-secret-31c9a0"  # a test value
API_TOKEN = "kf-adversarial-api-token-5be27d90aa41c3f6"  # a test value


@dataclass
class Cases:
    """Counts the bad inputs one test fed, per entry point.

    The counts ride on the test's report (`user_properties`), so the root conftest can sum
    them over the whole run, pytest-xdist workers included, and print the total at the end.
    """

    node: pytest.Item

    def add(self, entry: str, count: int = 1) -> None:
        self.node.user_properties.append((BAD_INPUTS, (entry, count)))


@pytest.fixture
def cases(request: pytest.FixtureRequest) -> Cases:
    return Cases(request.node)


def secrets_of(api_key: str) -> tuple[str, ...]:
    return (api_key, WEBHOOK_SECRET, API_TOKEN)


def assert_no_secret(text: str, secrets: tuple[str, ...]) -> None:
    for secret in secrets:
        assert secret not in text, "a secret leaked"


def dump_sqlite(path: Path) -> str:
    """Every row of every table, as text: where a stored secret would show."""
    rows: list[str] = []
    with sqlite3.connect(path) as db:
        tables = [r[0] for r in db.execute("select name from sqlite_master where type='table'")]
        for table in tables:
            rows += [repr(row) for row in db.execute(f'select * from "{table}"')]  # noqa: S608
    return "\n".join(rows)


CLI = Callable[..., Result]


@pytest.fixture
def klingflow(
    emulator: EmulatorServer, api_key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> CLI:
    """`klingflow ARGS...` in-process, against the emulator, with a fresh home."""
    monkeypatch.setenv("PIAPI_BASE_URL", emulator.url)
    monkeypatch.setenv("PIAPI_API_KEY", api_key)
    monkeypatch.setenv("KLINGFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("KLINGFLOW_DATABASE_URL", raising=False)
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        return runner.invoke(cli_app, list(args), catch_exceptions=True)

    return invoke


@dataclass
class Service:
    url: str
    http: httpx.Client
    database: Path


@pytest.fixture
def service(emulator: EmulatorServer, tmp_path: Path, api_key: str) -> Iterator[Service]:
    """The HTTP service on loopback (token, webhooks on), its engine on the emulator."""
    server = LoopbackServer()
    url = server.url
    database = tmp_path / "klingflow.sqlite"
    settings = Settings(
        home=tmp_path,
        database_url=f"sqlite:///{database}",
        public_url=url,
        webhook_secret=SecretStr(WEBHOOK_SECRET),
        api_token=SecretStr(API_TOKEN),
    )

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def engine_factory(settings: Settings) -> Any:
        client = AsyncPiAPI(
            api_key=api_key,
            base_url=emulator.url,
            retry_policy=RetryPolicy(max_retries=1, initial_delay_seconds=0.01),
        )
        wait = WaitPolicy(initial_interval_seconds=0.02, max_interval_seconds=0.1, jitter=0)
        async with client, Engine(settings, client=client, wait_policy=wait) as engine:
            yield engine

    server.start(create_app(settings, engine_factory=engine_factory))
    http = loopback_client(url, headers={"Authorization": f"Bearer {API_TOKEN}"}, timeout=30)
    try:
        yield Service(url=url, http=http, database=database)
    finally:
        http.close()
        server.stop()
