"""What a node runs with: the process's services and one execution's `Runtime`.

A node kind's `run` is `async (Runtime, params) -> output`. Every side effect it wants
remembered across a crash goes through `runtime.durable.step(...)`; every pause through
`runtime.durable.sleep`.
At the top level of a run these are DBOS steps and durable sleeps; inside a loop's chunk
they run inline, and the submission journal in the run log keeps them exactly-once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from klingflow.errors import DownloadError
from klingflow.piapi import AsyncPiAPI, AsyncWebhookEvents, WaitPolicy, WebhookConfig
from klingflow.piapi.polling import StatusPoller
from klingflow.workflows.runlog import RunLog

__all__ = ["Durable", "Runtime", "Services"]

T = TypeVar("T")


class Durable(Protocol):
    """How a runner makes progress that survives a crash."""

    async def step(self, name: str, fn: Callable[[], Awaitable[Any]]) -> Any:
        """Run `fn` once; after a crash, return what it returned instead of running it again."""
        ...

    async def sleep(self, seconds: float, *, wake_topic: str | None = None) -> None:
        """Pause; a message on `wake_topic` (a webhook for the task) may end it early."""
        ...


@dataclass
class Services:
    """Process-wide resources shared by every run: one client, one run log."""

    client: AsyncPiAPI
    runlog: RunLog
    wait_policy: WaitPolicy
    events: AsyncWebhookEvents
    chat_base_url: str
    chat_api_key: str | None
    piapi_api_key: str | None = None
    webhook_url: str | None = None
    webhook_secret: str | None = None
    private_hosts: frozenset[str] = frozenset()
    """Hosts (`host` or `host:port`) http.request and download may reach on a private
    network (KLINGFLOW_ALLOW_PRIVATE_HOSTS); see nodes/egress.py."""
    unstoppable: set[asyncio.Task[Any]] = field(default_factory=set)
    """Work that a shutdown waits for instead of cancelling (see `finish_even_if_cancelled`)."""
    poller: StatusPoller | None = None
    """The process's one status poller: every waiting node's looks go through it."""

    async def finish_even_if_cancelled(self, work: Coroutine[Any, Any, T]) -> T:
        """Run `work` to its end even when the run is cancelled (the engine shutting down):
        a create request cut off after it left would leave an uncertain submission where a
        recorded task id belongs."""
        task = asyncio.ensure_future(work)
        self.unstoppable.add(task)
        task.add_done_callback(self.unstoppable.discard)
        return await asyncio.shield(task)

    def chat_key_for(self, base_url: str) -> str | None:
        """The bearer key for a chat endpoint: PiAPI's key goes to PiAPI's exact origin
        (scheme, host and port) only; any other endpoint gets the chat key or none."""
        if self.client.is_piapi_origin(base_url):
            return self.piapi_api_key
        return self.chat_api_key

    @property
    def webhook(self) -> WebhookConfig | None:
        """Where PiAPI should report submissions (None without a public URL); the client adds
        each submission's `?intent_id=` to the endpoint itself."""
        if not self.webhook_url:
            return None
        return WebhookConfig(endpoint=self.webhook_url, secret=self.webhook_secret or "")


@dataclass
class Runtime:
    """One node execution: which run and node, and how to be durable there."""

    run_id: str
    epoch: int
    node_path: str
    output_dir: Path
    services: Services
    durable: Durable

    async def save(
        self,
        url: str,
        filename: str | None = None,
        *,
        task_id: str | None = None,
        check_redirect: Callable[[str], Awaitable[str | None]] | None = None,
    ) -> Path:
        """Download `url` into the run's output folder (atomically: see AsyncPiAPI.download);
        without `filename` the URL's own name is kept.

        A local failure (the folder cannot be made, a name too long, a full disk) is a
        retryable `DownloadError` that keeps the task id, never a crash: the task was paid
        for, so the run pauses on the node and `runs retry` fetches it again, unpaid.
        """
        try:  # the download makes the folder when it is missing (a stat, not a mkdir, a video)
            return await self.services.client.download(
                url, f"{self.output_dir}/", filename=filename, check_redirect=check_redirect
            )
        except OSError as error:
            paid = f" of task {task_id} (paid for; not lost)" if task_id else ""
            raise DownloadError(
                f"the output{paid} could not be saved in {self.output_dir}: "
                f"{error.strerror or type(error).__name__}; fix that, then retry the run "
                "(the file is fetched again, nothing is paid again)",
                url=url,
                retryable=True,
                task_id=task_id,
            ) from None
        except DownloadError as error:
            if task_id and error.task_id is None:
                error.task_id = task_id
            raise
