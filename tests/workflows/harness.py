"""Runs workflows on a real Engine (DBOS on SQLite in tmp_path) against the test emulator."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa

from klingflow.emulator import EmulatorServer
from klingflow.piapi import AsyncPiAPI
from klingflow.settings import Settings
from klingflow.workflows import Workflow, load_workflow_text
from klingflow.workflows.database import make_engine
from klingflow.workflows.engine import Engine
from klingflow.workflows.records import RunRecord
from klingflow.workflows.runlog import RunLog
from klingflow.workflows.steering import Command

from ..policies import FAST_RETRY, FAST_WAIT

T = TypeVar("T")


@dataclass
class Harness:
    """An emulator and a data folder; `session` launches an Engine for one block of work."""

    emulator: EmulatorServer
    home: Path
    api_key: str
    database_url: str | None = None
    _engines: list[sa.Engine] = field(default_factory=list)

    def settings(self, **overrides: Any) -> Settings:
        url = self.database_url or f"sqlite:///{self.home / 'klingflow.sqlite'}"
        values: dict[str, Any] = {"home": self.home, "database_url": url, "executor_id": None}
        values.update(overrides)
        return Settings(**values)

    def runlog(self) -> RunLog:
        """The run log of this harness's database, read outside any Engine (closed with it)."""
        engine = make_engine(self.settings().resolved_database_url())
        self._engines.append(engine)
        return RunLog(engine)

    def close(self) -> None:
        """Close the connections `runlog()` opened (Postgres counts them; a leak warns)."""
        for engine in self._engines:
            engine.dispose()

    def session(
        self,
        work: Callable[[Engine], Awaitable[T]],
        *,
        chunk_size: int = 50,
        client_limits: dict[str, Any] | None = None,
        **settings: Any,
    ) -> T:
        async def main() -> T:
            client = AsyncPiAPI(
                api_key=self.api_key,
                base_url=self.emulator.url,
                retry_policy=FAST_RETRY,
                **(client_limits or {}),
            )
            async with (
                client,
                Engine(
                    self.settings(**settings),
                    client=client,
                    wait_policy=FAST_WAIT,
                    chunk_size=chunk_size,
                ) as engine,
            ):
                return await work(engine)

        return asyncio.run(main())

    def run(
        self,
        workflow: Workflow | str,
        payload: dict[str, Any] | None = None,
        *,
        client_limits: dict[str, Any] | None = None,
        **kw: Any,
    ) -> RunRecord:
        """Start one run and wait until it completes or pauses."""
        spec = load_workflow_text(workflow) if isinstance(workflow, str) else workflow

        async def work(engine: Engine) -> RunRecord:
            run = await engine.start_run(spec, payload or {}, **kw)
            [record] = await engine.wait([run.run_id], timeout_seconds=60)
            return record

        return self.session(work, client_limits=client_limits)

    def steer(self, run_id: str, command: Command) -> RunRecord:
        """Send a paused run a command (in a new process-like session) and wait for it."""

        async def work(engine: Engine) -> RunRecord:
            await engine.command(run_id, command)
            [record] = await engine.wait([run_id], timeout_seconds=60)
            return record

        return self.session(work)


def command_env(
    home: Path,
    emulator: EmulatorServer,
    api_key: str,
    *,
    database_url: str | None = None,
    **variables: str,
) -> dict[str, str]:
    """The environment of a `klingflow` subprocess: this process's, pointed at the emulator.

    Polls every 50 ms (the emulator's clock runs x1000). With no `database_url` the run log is
    a SQLite file in `home`, whatever KLINGFLOW_DATABASE_URL the caller's shell has set.
    `variables` adds or overrides settings, e.g. `KLINGFLOW_CONCURRENCY="20"`.
    """
    env = {
        **os.environ,
        "KLINGFLOW_HOME": str(home),
        "PIAPI_BASE_URL": emulator.url,
        "PIAPI_API_KEY": api_key,
        "KLINGFLOW_POLL_SECONDS": "0.05",
    }
    if database_url is None:
        env.pop("KLINGFLOW_DATABASE_URL", None)
    else:
        env["KLINGFLOW_DATABASE_URL"] = database_url
    env.update(variables)
    return env


def video_loop(name: str, *, concurrency: int = 1) -> str:
    """A workflow that makes a 5 s video of each of `inputs.prompts`, saved as `N.mp4`, with
    `concurrency` items at a time: the batch the crash and outage tests interrupt."""
    return f"""
name: {name}
inputs:
  prompts: {{type: array, required: true}}
nodes:
  - id: each
    type: loop
    with: {{items: "{{{{ inputs.prompts }}}}", concurrency: {concurrency}}}
    nodes:
      - id: video
        type: kling.video
        with: {{prompt: "{{{{ item }}}}", duration: 5, name: "{{{{ loop.number }}}}.mp4"}}
"""
