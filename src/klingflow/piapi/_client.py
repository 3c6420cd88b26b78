"""`PiAPI` and `AsyncPiAPI`: thin sync and async I/O shells over the sans-I/O core.

Everything that decides (request building, envelope unwrapping, error mapping, retry
decisions, wait pacing, download checks) lives in `_base`, `_wire`, `_retries`, `waiting`
and `downloads`; these classes only move bytes and sleep. The two are kept line-for-line parallel
(httpx's `Client`/`AsyncClient`), and httpx exceptions are caught here and translated by
`_wire.transport_error`.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import httpx

from klingflow.errors import BadRequestError, DownloadError, PiAPIError, TaskNotFoundError
from klingflow.piapi import _wire
from klingflow.piapi._base import BaseClient
from klingflow.piapi._config import DEFAULT_MAX_RESUMES, DEFAULT_TIMEOUT_SECONDS
from klingflow.piapi._gate import DEFAULT_MAX_IN_FLIGHT, AsyncRequestGate, RequestGate
from klingflow.piapi._hooks import ProgressHook, RequestInput, RetryCallback, SendingHook
from klingflow.piapi._pool import new_client
from klingflow.piapi._retries import RetryPolicy
from klingflow.piapi.downloads import (
    Download,
    ProgressCallback,
    next_hop,
    resolve_destination,
    source_of,
)
from klingflow.piapi.kling import TaskConfig, WebhookConfig
from klingflow.piapi.models import AccountInfo, ActiveTaskCounts, Task
from klingflow.piapi.pricing import PriceTable
from klingflow.piapi.throttle import (
    AsyncRequestLimiter,
    AsyncRequestThrottle,
    AsyncTaskLimiter,
    AsyncTaskSlots,
    RateLimit,
    RequestThrottle,
    TaskSlots,
)
from klingflow.piapi.waiting import AsyncWebhookEvents, WaitPolicy, WebhookEvents

if TYPE_CHECKING:
    from klingflow.piapi.polling import StatusPoller

__all__ = ["AsyncPiAPI", "PiAPI"]


class PiAPI(BaseClient):
    """The PiAPI task API for Kling, synchronous and thread-safe.

    Options are keyword-only; the key and URL default to `PIAPI_API_KEY` and
    `PIAPI_BASE_URL` (else https://api.piapi.ai). `max_retries` and `retry_policy` govern
    safe requests (the create POST is retried only when PiAPI provably did not take it), and
    `on_retry(error, delay_seconds)` hears of each retry before its pause;
    `rate_limit` / `requests_per_minute` and `max_concurrent_tasks` throttle this client
    across threads, and at most `max_in_flight_requests` API requests are on the wire at
    once (creates before status looks; downloads are not counted). Use it as a context
    manager, or call `close()`.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        max_retries: int | None = None,
        retry_policy: RetryPolicy | None = None,
        wait_policy: WaitPolicy | None = None,
        rate_limit: RateLimit | None = None,
        requests_per_minute: int | None = None,
        max_concurrent_tasks: int | None = None,
        prices: PriceTable | None = None,
        transport: httpx.BaseTransport | None = None,
        on_retry: RetryCallback | None = None,
        max_in_flight_requests: int = DEFAULT_MAX_IN_FLIGHT,
    ) -> None:
        super().__init__(
            api_key=api_key,
            base_url=base_url,
            timeout_seconds=timeout_seconds,
            max_retries=max_retries,
            retry_policy=retry_policy,
            wait_policy=wait_policy,
            rate_limit=rate_limit,
            requests_per_minute=requests_per_minute,
            prices=prices,
            on_retry=on_retry,
        )
        self._gate = RequestGate(max_in_flight_requests)
        self._throttle = RequestThrottle(self.rate_limit) if self.rate_limit else None
        self._slots: TaskSlots | None = (
            TaskSlots(max_concurrent_tasks) if max_concurrent_tasks else None
        )
        self._http = new_client(
            httpx.Client, transport, **self._client_options(max_in_flight_requests)
        )

    def share_limits(self, *, throttle: RequestThrottle | None, slots: TaskSlots | None) -> None:
        """Count requests and tasks with limiters shared with other clients (one account,
        several clients in this process); `None` keeps this client's own."""
        self._throttle = throttle or self._throttle
        self._slots = slots or self._slots

    # -- lifecycle ----------------------------------------------------------------------------

    @property
    def is_closed(self) -> bool:
        """Whether the connection pool is closed: no request can be sent any more."""
        return self._http.is_closed

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- transport --------------------------------------------------------------------------

    def _send(
        self,
        spec: _wire.RequestSpec,
        *,
        timeout_seconds: float | None,
        max_retries: int | None,
        intent_id: str | None = None,
        on_sending: SendingHook | None = None,
        is_deferrable: bool = False,
    ) -> Any:
        retries = self._retries(max_retries)
        retry_number = 0
        while True:
            cause: httpx.RequestError | None = None
            throttle = self._throttle  # released on the limiter it was taken from
            if throttle is not None:
                throttle.acquire(is_deferrable=is_deferrable)
            try:
                self._gate.acquire(is_deferrable=is_deferrable)
                try:
                    if on_sending is not None:  # past every limit of ours: it goes out now
                        on_sending()
                    response = self._http.request(
                        spec.method,
                        spec.path,
                        json=spec.json,
                        params=spec.params,
                        timeout=self._timeout(timeout_seconds),
                    )
                finally:
                    self._gate.release()
            except httpx.RequestError as exc:
                cause = exc
            finally:
                if throttle is not None:
                    throttle.release()
            try:
                if cause is not None:
                    raise _wire.transport_error(cause, spec, intent_id=intent_id) from cause
                return _wire.unwrap(spec, response, secrets=self._secrets, intent_id=intent_id)
            except PiAPIError as error:
                delay = self._retry_pause(spec, error, retry_number, retries)
                if delay is None:
                    raise
            time.sleep(delay)
            retry_number += 1

    def _reserve_slot(self, slots: TaskSlots) -> None:
        """Block until fewer than `max_concurrent_tasks` of our tasks run, polling them."""
        pauses = self.wait_policy.intervals()
        while not slots.reserve(next(pauses)):
            for task_id in slots.running():  # oldest first: likeliest to be done
                try:
                    if self.get(task_id).is_terminal:
                        break
                except TaskNotFoundError:
                    slots.finish(task_id)  # gone from PiAPI: not running any more
                    break
                except PiAPIError as error:
                    if not self._tolerable(error):
                        raise

    # -- the API ------------------------------------------------------------------------------

    def submit(
        self,
        request: RequestInput,
        *,
        config: TaskConfig | None = None,
        webhook: WebhookConfig | None = None,
        intent_id: str | None = None,
        on_sending: SendingHook | None = None,
        timeout_seconds: float | None = None,
        max_retries: int | None = None,
    ) -> Task:
        """Create a paid task and return it (usually `pending`).

        `request` is a `KlingRequest` or a raw `{model, task_type, input[, config]}` body; it
        is validated first, and a bad one raises `InvalidRequestError` with nothing sent.
        The POST is resent only when PiAPI provably did not take it (connection refused, 429).
        When the outcome is unknown, `SubmitUncertainError` carries `intent_id` (generated
        if not given), which is also added to the webhook endpoint as `?intent_id=`.

        `on_sending` is called at the last moment before each POST goes out, after the
        client's own concurrency and rate limits: a caller that journals "sent" there knows
        that anything not journalled was never sent. If it raises, nothing is sent.
        """
        plan = _wire.plan_submit(request, config=config, webhook=webhook, intent_id=intent_id)
        slots = self._slots  # bound on the limiter the slot was reserved on
        if slots is not None:
            self._reserve_slot(slots)
        task_id: str | None = None
        try:
            data = self._send(
                plan.spec,
                timeout_seconds=timeout_seconds,
                max_retries=max_retries,
                intent_id=plan.intent_id,
                on_sending=on_sending,
            )
            task = _wire.parse_task(data, plan.spec, intent_id=plan.intent_id)
            task_id = task.task_id
        finally:
            if slots is not None:
                slots.bind(task_id)
        return self._observe(task)

    def get(
        self, task_id: str, *, timeout_seconds: float | None = None, max_retries: int | None = None
    ) -> Task:
        """The task as PiAPI sees it now."""
        spec = _wire.get_spec(task_id)
        data = self._send(spec, timeout_seconds=timeout_seconds, max_retries=max_retries)
        return self._observe(_wire.parse_task(data, spec))

    def _look(
        self, task_id: str, *, timeout_seconds: float | None = None, max_retries: int | None = None
    ) -> Task:
        """`get` for a wait: a status look, which lets creates go first under the rate limit."""
        spec = _wire.get_spec(task_id)
        data = self._send(
            spec, timeout_seconds=timeout_seconds, max_retries=max_retries, is_deferrable=True
        )
        return self._observe(_wire.parse_task(data, spec))

    def wait(
        self,
        task_id: str,
        *,
        policy: WaitPolicy | None = None,
        on_progress: ProgressHook | None = None,
        events: WebhookEvents | None = None,
        expected_seconds: float | None = None,
        raise_on_failure: bool = True,
        timeout_seconds: float | None = None,
        max_retries: int | None = None,
    ) -> Task:
        """Wait until the task is terminal and return it.

        Looks are shaped by the expected render time: `expected_seconds` if given, else
        what this client has seen tasks of the same kind take (PiAPI-typical times at
        first), learned from the first look's answer. The first look past the expected time
        comes just after it, later ones back off. With `events`, a webhook delivery for the
        task ends the pause at once (then one GET confirms), and looks are only a safety
        net after twice the expected time: a 10-minute render then costs one GET.

        `on_progress` hears every new version of the task. Raises `TaskFailedError` when the
        task fails or is cancelled (unless `raise_on_failure=False`), and `WaitTimeoutError`
        at the policy's deadline: the task keeps running, so resume the wait; never
        resubmit. Transient errors are ridden out until the deadline. `timeout_seconds` and
        `max_retries` apply to each GET.
        """
        if events is not None and not isinstance(events, WebhookEvents):
            raise TypeError("PiAPI.wait takes WebhookEvents (AsyncWebhookEvents is for AsyncPiAPI)")
        clock = self._wait_clock(
            task_id, policy, has_webhook=events is not None, expected_seconds=expected_seconds
        )
        last_error: PiAPIError | None = None
        is_due = events is None  # with a webhook coming, the first look is the safety net
        while True:
            if is_due:
                clock.asking()
                try:
                    task = self._look(
                        task_id, timeout_seconds=timeout_seconds, max_retries=max_retries
                    )
                except PiAPIError as error:
                    if not self._tolerable(error):
                        raise
                    last_error = error
                else:
                    if done := self._looked(clock, task, on_progress, raise_on_failure):
                        return done
            is_due = True
            pause = clock.next_pause()
            if pause is None:
                raise clock.timeout_error() from last_error
            if events is None:
                time.sleep(pause)
            elif event := events.wait_for(
                task_id, timeout_seconds=pause, after_sequence=clock.last_event
            ):
                clock.last_event = event.sequence

    def cancel(
        self, task_id: str, *, timeout_seconds: float | None = None, max_retries: int | None = None
    ) -> Task:
        """Cancel a task that has not started processing; return the task afterwards.

        A task that already finished (or was cancelled by an earlier, lost attempt) is
        returned as it is; a task that is processing raises `BadRequestError`.
        """
        spec = _wire.cancel_spec(task_id)
        try:
            data = self._send(spec, timeout_seconds=timeout_seconds, max_retries=max_retries)
        except BadRequestError:
            task = self.get(task_id)
            if task.is_terminal:
                return task
            raise
        if isinstance(data, Mapping) and data.get("task_id"):
            return self._observe(_wire.parse_task(data, spec))
        return self.get(task_id)

    def account(
        self, *, timeout_seconds: float | None = None, max_retries: int | None = None
    ) -> AccountInfo:
        """The account behind the key, with its remaining credits (GET /account/info)."""
        spec = _wire.account_spec()
        data = self._send(spec, timeout_seconds=timeout_seconds, max_retries=max_retries)
        return _wire.parse_account(data)

    def active_tasks(
        self, *, timeout_seconds: float | None = None, max_retries: int | None = None
    ) -> dict[str, ActiveTaskCounts]:
        """Unfinished task counts per provider, e.g. `["kling"]` (GET /account/active_tasks)."""
        spec = _wire.active_tasks_spec()
        data = self._send(spec, timeout_seconds=timeout_seconds, max_retries=max_retries)
        return _wire.parse_active_tasks(data)

    def download(
        self,
        task_or_url: Task | str,
        dest: Path | str,
        *,
        filename: str | None = None,
        on_progress: ProgressCallback | None = None,
        sha256: str | None = None,
        timeout_seconds: float | None = None,
        max_resumes: int = DEFAULT_MAX_RESUMES,
        check_redirect: Callable[[str], str | None] | None = None,
    ) -> Path:
        """Save a task's output (or any http(s) URL) to `dest` and return the file's path.

        `dest` is a file, or a folder (existing, or ending in "/") to put the file in. The
        transfer goes to a temporary file that is fsynced and renamed into place; it resumes
        with Range after an interruption (up to `max_resumes` times), and checks length,
        content type and, if given, the SHA-256. Failures raise `DownloadError`.
        `check_redirect` sees each redirect target before it is followed and returns why
        not (a `DownloadError`, not retried) or None.
        """
        url, task_id = source_of(task_or_url)
        target = resolve_destination(url, dest, task_id=task_id, filename=filename)
        timeout = self._timeout(timeout_seconds)
        with Download(
            url, target, sha256=sha256, on_progress=on_progress, max_resumes=max_resumes
        ) as job:
            hops = 0
            while True:
                try:
                    with self._http.stream(
                        "GET",
                        url,
                        headers=job.request_headers(),
                        timeout=timeout,
                        auth=None,  # the API key is for PiAPI, never for file hosts
                        follow_redirects=check_redirect is None,
                    ) as response:
                        if check_redirect is not None and response.is_redirect:
                            url = next_hop(url, response.headers.get("location"), hops)
                            hops += 1
                            if reason := check_redirect(url):
                                raise DownloadError(reason, url=url, retryable=False)
                            continue
                        job.start(response.status_code, response.headers)
                        chunks = (
                            response.iter_raw()  # as stored: no decoder pass (bench/notes.md)
                            if self._reads_raw(job, response)
                            else response.iter_bytes()
                        )
                        for chunk in chunks:
                            job.feed(chunk)
                    if job.end():
                        return job.commit()
                    job.interrupted(EOFError("the body ended early"))
                except (httpx.RequestError, DownloadError) as exc:
                    self._resume_or_raise(job, url, exc)
                time.sleep(self.retry_policy.backoff_seconds(job.resumes - 1))

    def generate(
        self,
        request: RequestInput,
        dest: Path | str,
        *,
        config: TaskConfig | None = None,
        webhook: WebhookConfig | None = None,
        intent_id: str | None = None,
        policy: WaitPolicy | None = None,
        on_progress: ProgressHook | None = None,
        events: WebhookEvents | None = None,
        filename: str | None = None,
        sha256: str | None = None,
    ) -> tuple[Task, Path]:
        """Submit, wait for completion, and download the output: `(task, path)`."""
        task = self.submit(request, config=config, webhook=webhook, intent_id=intent_id)
        done = self.wait(
            task.task_id,
            policy=policy,
            on_progress=on_progress,
            events=events,
            expected_seconds=self._expected_seconds(task, has_webhook=events is not None),
        )
        return done, self.download(done, dest, filename=filename, sha256=sha256)


class AsyncPiAPI(BaseClient):
    """The PiAPI task API for Kling, for asyncio; the same methods as `PiAPI`, awaitable.

    Throttling (`rate_limit`, `max_concurrent_tasks`, `max_in_flight_requests`) is shared by
    every coroutine using this instance: thousands of tasks can be waited on at once while
    only a few dozen requests are on the wire. Use `async with`, or call `aclose()`.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        max_retries: int | None = None,
        retry_policy: RetryPolicy | None = None,
        wait_policy: WaitPolicy | None = None,
        rate_limit: RateLimit | None = None,
        requests_per_minute: int | None = None,
        max_concurrent_tasks: int | None = None,
        prices: PriceTable | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        on_retry: RetryCallback | None = None,
        max_in_flight_requests: int = DEFAULT_MAX_IN_FLIGHT,
    ) -> None:
        super().__init__(
            api_key=api_key,
            base_url=base_url,
            timeout_seconds=timeout_seconds,
            max_retries=max_retries,
            retry_policy=retry_policy,
            wait_policy=wait_policy,
            rate_limit=rate_limit,
            requests_per_minute=requests_per_minute,
            prices=prices,
            on_retry=on_retry,
        )
        self._gate = AsyncRequestGate(max_in_flight_requests)
        self._throttle: AsyncRequestLimiter | None = (
            AsyncRequestThrottle(self.rate_limit) if self.rate_limit else None
        )
        self._slots: AsyncTaskLimiter | None = (
            AsyncTaskSlots(max_concurrent_tasks) if max_concurrent_tasks else None
        )
        self._http = new_client(
            httpx.AsyncClient, transport, **self._client_options(max_in_flight_requests)
        )
        self.poller: StatusPoller | None = None
        """The process's status poller, when one looks after this client's tasks."""

    def share_limits(
        self, *, throttle: AsyncRequestLimiter | None, slots: AsyncTaskLimiter | None
    ) -> None:
        """Count requests and tasks with limiters shared beyond this client (several
        processes on one account); `None` keeps this client's own."""
        self._throttle = throttle or self._throttle
        self._slots = slots or self._slots

    # -- lifecycle ----------------------------------------------------------------------------

    @property
    def is_closed(self) -> bool:
        """Whether the connection pool is closed: no request can be sent any more."""
        return self._http.is_closed

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- transport --------------------------------------------------------------------------

    async def _send(
        self,
        spec: _wire.RequestSpec,
        *,
        timeout_seconds: float | None,
        max_retries: int | None,
        intent_id: str | None = None,
        on_sending: SendingHook | None = None,
        is_deferrable: bool = False,
    ) -> Any:
        retries = self._retries(max_retries)
        retry_number = 0
        while True:
            cause: httpx.RequestError | None = None
            throttle = self._throttle  # released on the limiter it was taken from
            if throttle is not None:
                await throttle.acquire(is_deferrable=is_deferrable)
            try:
                await self._gate.acquire(is_deferrable=is_deferrable)
                try:
                    if on_sending is not None:  # past every limit of ours: it goes out now
                        journalled = on_sending()
                        if inspect.isawaitable(journalled):  # an async hook's write
                            await journalled
                    response = await self._http.request(
                        spec.method,
                        spec.path,
                        json=spec.json,
                        params=spec.params,
                        timeout=self._timeout(timeout_seconds),
                    )
                finally:
                    self._gate.release()
            except httpx.RequestError as exc:
                cause = exc
            finally:
                if throttle is not None:
                    await throttle.release()
            try:
                if cause is not None:
                    raise _wire.transport_error(cause, spec, intent_id=intent_id) from cause
                return _wire.unwrap(spec, response, secrets=self._secrets, intent_id=intent_id)
            except PiAPIError as error:
                delay = self._retry_pause(spec, error, retry_number, retries)
                if delay is None:
                    raise
            await asyncio.sleep(delay)
            retry_number += 1

    def _observe(self, task: Task) -> Task:
        task = super()._observe(task)
        if self.poller is not None:
            self.poller.observe(task)
        return task

    async def _reserve_slot(self, slots: AsyncTaskLimiter) -> None:
        """Wait until fewer than `max_concurrent_tasks` of our tasks run, polling them (or,
        with a `StatusPoller`, letting it look after them: one schedule, no double looks)."""
        if self.poller is not None:
            while not await slots.reserve(self.wait_policy.initial_interval_seconds):
                for task_id in slots.running():
                    self.poller.track(task_id)
            return
        pauses = self.wait_policy.intervals()
        while not await slots.reserve(next(pauses)):
            for task_id in slots.running():  # oldest first: likeliest to be done
                try:
                    if (await self.get(task_id)).is_terminal:
                        break
                except TaskNotFoundError:
                    slots.finish(task_id)  # gone from PiAPI: not running any more
                    break
                except PiAPIError as error:
                    if not self._tolerable(error):
                        raise

    # -- the API ------------------------------------------------------------------------------

    async def submit(
        self,
        request: RequestInput,
        *,
        config: TaskConfig | None = None,
        webhook: WebhookConfig | None = None,
        intent_id: str | None = None,
        on_sending: SendingHook | None = None,
        timeout_seconds: float | None = None,
        max_retries: int | None = None,
    ) -> Task:
        """Create a paid task and return it; see `PiAPI.submit`. `on_sending` may also be a
        coroutine function: it is awaited before the POST goes out."""
        plan = _wire.plan_submit(request, config=config, webhook=webhook, intent_id=intent_id)
        slots = self._slots  # bound on the limiter the slot was reserved on
        if slots is not None:
            await self._reserve_slot(slots)
        task_id: str | None = None
        try:
            data = await self._send(
                plan.spec,
                timeout_seconds=timeout_seconds,
                max_retries=max_retries,
                intent_id=plan.intent_id,
                on_sending=on_sending,
            )
            task = _wire.parse_task(data, plan.spec, intent_id=plan.intent_id)
            task_id = task.task_id
        finally:
            if slots is not None:
                slots.bind(task_id)
        return self._observe(task)

    async def get(
        self, task_id: str, *, timeout_seconds: float | None = None, max_retries: int | None = None
    ) -> Task:
        """The task as PiAPI sees it now."""
        spec = _wire.get_spec(task_id)
        data = await self._send(spec, timeout_seconds=timeout_seconds, max_retries=max_retries)
        return self._observe(_wire.parse_task(data, spec))

    async def _look(
        self, task_id: str, *, timeout_seconds: float | None = None, max_retries: int | None = None
    ) -> Task:
        """`get` for a wait: a status look, which lets creates go first under the rate limit."""
        spec = _wire.get_spec(task_id)
        data = await self._send(
            spec, timeout_seconds=timeout_seconds, max_retries=max_retries, is_deferrable=True
        )
        return self._observe(_wire.parse_task(data, spec))

    async def wait(
        self,
        task_id: str,
        *,
        policy: WaitPolicy | None = None,
        on_progress: ProgressHook | None = None,
        events: AsyncWebhookEvents | None = None,
        expected_seconds: float | None = None,
        raise_on_failure: bool = True,
        timeout_seconds: float | None = None,
        max_retries: int | None = None,
    ) -> Task:
        """Wait until the task is terminal and return it; see `PiAPI.wait`."""
        if events is not None and not isinstance(events, AsyncWebhookEvents):
            raise TypeError("AsyncPiAPI.wait takes AsyncWebhookEvents (WebhookEvents is for PiAPI)")
        clock = self._wait_clock(
            task_id, policy, has_webhook=events is not None, expected_seconds=expected_seconds
        )
        last_error: PiAPIError | None = None
        is_due = events is None  # with a webhook coming, the first look is the safety net
        while True:
            if is_due:
                clock.asking()
                try:
                    task = await self._look(
                        task_id, timeout_seconds=timeout_seconds, max_retries=max_retries
                    )
                except PiAPIError as error:
                    if not self._tolerable(error):
                        raise
                    last_error = error
                else:
                    if done := self._looked(clock, task, on_progress, raise_on_failure):
                        return done
            is_due = True
            pause = clock.next_pause()
            if pause is None:
                raise clock.timeout_error() from last_error
            if events is None:
                await asyncio.sleep(pause)
            elif event := await events.wait_for(
                task_id, timeout_seconds=pause, after_sequence=clock.last_event
            ):
                clock.last_event = event.sequence

    async def cancel(
        self, task_id: str, *, timeout_seconds: float | None = None, max_retries: int | None = None
    ) -> Task:
        """Cancel a task that has not started processing; see `PiAPI.cancel`."""
        spec = _wire.cancel_spec(task_id)
        try:
            data = await self._send(spec, timeout_seconds=timeout_seconds, max_retries=max_retries)
        except BadRequestError:
            task = await self.get(task_id)
            if task.is_terminal:
                return task
            raise
        if isinstance(data, Mapping) and data.get("task_id"):
            return self._observe(_wire.parse_task(data, spec))
        return await self.get(task_id)

    async def account(
        self, *, timeout_seconds: float | None = None, max_retries: int | None = None
    ) -> AccountInfo:
        """The account behind the key, with its remaining credits (GET /account/info)."""
        spec = _wire.account_spec()
        data = await self._send(spec, timeout_seconds=timeout_seconds, max_retries=max_retries)
        return _wire.parse_account(data)

    async def active_tasks(
        self, *, timeout_seconds: float | None = None, max_retries: int | None = None
    ) -> dict[str, ActiveTaskCounts]:
        """Unfinished task counts per provider (GET /account/active_tasks)."""
        spec = _wire.active_tasks_spec()
        data = await self._send(spec, timeout_seconds=timeout_seconds, max_retries=max_retries)
        return _wire.parse_active_tasks(data)

    async def download(
        self,
        task_or_url: Task | str,
        dest: Path | str,
        *,
        filename: str | None = None,
        on_progress: ProgressCallback | None = None,
        sha256: str | None = None,
        timeout_seconds: float | None = None,
        max_resumes: int = DEFAULT_MAX_RESUMES,
        check_redirect: Callable[[str], Awaitable[str | None]] | None = None,
    ) -> Path:
        """Save a task's output (or any http(s) URL) to `dest`; see `PiAPI.download`."""
        url, task_id = source_of(task_or_url)
        target = resolve_destination(url, dest, task_id=task_id, filename=filename)
        timeout = self._timeout(timeout_seconds)
        with Download(
            url, target, sha256=sha256, on_progress=on_progress, max_resumes=max_resumes
        ) as job:
            hops = 0
            while True:
                try:
                    async with self._http.stream(
                        "GET",
                        url,
                        headers=job.request_headers(),
                        timeout=timeout,
                        auth=None,  # the API key is for PiAPI, never for file hosts
                        follow_redirects=check_redirect is None,
                    ) as response:
                        if check_redirect is not None and response.is_redirect:
                            url = next_hop(url, response.headers.get("location"), hops)
                            hops += 1
                            if reason := await check_redirect(url):
                                raise DownloadError(reason, url=url, retryable=False)
                            continue
                        job.start(response.status_code, response.headers)
                        chunks = (
                            response.aiter_raw()  # as stored: no decoder pass (bench/notes.md)
                            if self._reads_raw(job, response)
                            else response.aiter_bytes()
                        )
                        async for chunk in chunks:
                            job.feed(chunk)
                    if job.end():
                        # fsync and rename block for as long as the disk takes: not on the
                        # loop, where every other task (and the web UI) would wait for it.
                        return await asyncio.to_thread(job.commit)
                    job.interrupted(EOFError("the body ended early"))
                except (httpx.RequestError, DownloadError) as exc:
                    self._resume_or_raise(job, url, exc)
                await asyncio.sleep(self.retry_policy.backoff_seconds(job.resumes - 1))

    async def generate(
        self,
        request: RequestInput,
        dest: Path | str,
        *,
        config: TaskConfig | None = None,
        webhook: WebhookConfig | None = None,
        intent_id: str | None = None,
        policy: WaitPolicy | None = None,
        on_progress: ProgressHook | None = None,
        events: AsyncWebhookEvents | None = None,
        filename: str | None = None,
        sha256: str | None = None,
    ) -> tuple[Task, Path]:
        """Submit, wait for completion, and download the output: `(task, path)`."""
        task = await self.submit(request, config=config, webhook=webhook, intent_id=intent_id)
        done = await self.wait(
            task.task_id,
            policy=policy,
            on_progress=on_progress,
            events=events,
            expected_seconds=self._expected_seconds(task, has_webhook=events is not None),
        )
        return done, await self.download(done, dest, filename=filename, sha256=sha256)
