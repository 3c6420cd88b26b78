"""`RunQueue`: queues runs through a `DBOSClient`, for workers to execute."""

from __future__ import annotations

import asyncio
import os
from typing import Any, Self

import sqlalchemy as sa
from dbos import DBOS, DBOSClient, DBOSPortableJSONSerializer, EnqueueOptions
from pydantic import SecretStr

from klingflow.settings import Settings
from klingflow.workflows.database import make_engine
from klingflow.workflows.engine._durable import (
    APPLICATION_NAME,
    ENGINE_VERSION,
    PIAPI_QUEUE,
    RUNS_QUEUE,
)
from klingflow.workflows.runlog import RunLog
from klingflow.workflows.starting import RunStarter, known_secrets

__all__ = ["RunQueue", "create_queues", "queue_options"]


def queue_options(settings: Settings) -> dict[str, dict[str, Any]]:
    """The engine's DBOS queues (name: `register_queue` options).

    No limit on runs: a paused run is a workflow waiting in `recv`, and the queue would
    count it until it ends (20 paused runs froze every later run); the limit is the
    engine's run slots, held only while a run executes. Chunks of loop items go through
    the PiAPI queue, at the account's concurrency and request rate."""
    return {
        RUNS_QUEUE: {"global_concurrency": None, "polling_interval_sec": 0.2},
        PIAPI_QUEUE: {
            "global_concurrency": settings.concurrency,
            "limiter": {"limit": settings.requests_per_minute, "period": 60},
            "polling_interval_sec": 0.2,
        },
    }


def create_queues(url: str, engine: sa.Engine, queues: dict[str, dict[str, Any]]) -> None:
    """Write `queues` (name: `register_queue` options) to DBOS's database before `launch`.

    DBOS's queue manager gives each queue already in the database a worker thread at
    launch, but notices one registered after launch only at its next rescan, up to 1 s
    later (shared/dbos-notes.md, "Queue start"): the first run on a new database waited
    that second before its first node. Registering again after launch is harmless.
    """
    DBOS.migrate(url)
    client = DBOSClient(
        system_database_engine=engine,
        serializer=DBOSPortableJSONSerializer(),
        application_name=APPLICATION_NAME,
    )
    try:
        for name, options in queues.items():
            client.register_queue(name, **options)
    finally:
        client.destroy()


class RunQueue(RunStarter):
    """Queues runs without executing any: `klingflow run --detach`.

    An `Engine` executes whatever DBOS hands it, so a short-lived one would take queued
    runs and abandon them when it exits (under its own executor id, which no worker
    recovers). This writes the run and enqueues its workflow through a `DBOSClient`: only
    workers and `serve` execute. Use `async with RunQueue(settings) as queue:`.
    """

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.runlog: RunLog
        self._client: DBOSClient | None = None

    async def __aenter__(self) -> Self:
        url = self.settings.resolved_database_url()
        self.settings.home.mkdir(parents=True, exist_ok=True)
        engine = make_engine(url, outage_seconds=self.settings.database_outage_seconds)
        api_key = os.environ.get("PIAPI_API_KEY")
        secret = SecretStr(api_key) if api_key else None
        self.runlog = RunLog(engine, secrets=known_secrets(self.settings, secret))
        self.sealing_key = secret
        # The client never creates DBOS's tables; a first `--detach` on a new database must.
        await asyncio.to_thread(DBOS.migrate, url)
        self._client = DBOSClient(
            system_database_engine=engine,
            serializer=DBOSPortableJSONSerializer(),
            application_name=APPLICATION_NAME,
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._client is not None:
            self._client.destroy()
        self.runlog.engine.dispose()

    async def _enqueue(self, run_id: str, *, is_new: bool) -> None:
        """Only queued, for workers to execute. Enqueueing a known run's id again attaches
        to it (DBOS's default), so a lost enqueue is repaired and nothing repeats."""
        assert self._client is not None, "use `async with RunQueue(...)`"
        options: EnqueueOptions = {
            "queue_name": RUNS_QUEUE,
            "workflow_name": "klingflow.run",
            "workflow_id": run_id,
            "app_version": ENGINE_VERSION,
        }
        await self._client.enqueue_async(options, run_id)
