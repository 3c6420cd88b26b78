"""What `PiAPI` and `AsyncPiAPI` share: their configuration and every decision, no I/O.

The two clients differ only in how they wait (threads or asyncio); keeping the rest here
(options, retry pauses, the wait's schedule, download resumes, slot bookkeeping) means a rule
cannot be changed in one client and forgotten in the other, as httpx's `BaseClient` does.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

import httpx
from pydantic import SecretStr

from klingflow.errors import DownloadError, PiAPIError, TaskFailedError, UnexpectedResponseError
from klingflow.piapi import _wire
from klingflow.piapi._auth import KeyAuth, api_key_from, origin_of, user_agent
from klingflow.piapi._config import base_url_from, rate_limit_from, retry_policy_from
from klingflow.piapi._hooks import ProgressHook, RequestInput, RetryCallback
from klingflow.piapi._pool import pool_limits
from klingflow.piapi._retries import RetryPolicy, retry_delay
from klingflow.piapi.downloads import Download
from klingflow.piapi.kling import KlingRequest, parse_task_request
from klingflow.piapi.models import Task, TaskStatus
from klingflow.piapi.pricing import DEFAULT_PRICES, PriceTable
from klingflow.piapi.pricing import estimate_cost as _estimate_cost
from klingflow.piapi.throttle import AsyncTaskLimiter, RateLimit, TaskSlots
from klingflow.piapi.waiting import (
    DEFAULT_WAIT_POLICY,
    TYPICAL_RENDER_SECONDS,
    RenderTimes,
    WaitClock,
    WaitPolicy,
    render_kind,
)

__all__ = ["BaseClient"]

logger = logging.getLogger("klingflow.piapi")


class BaseClient:
    """Configuration and every decision shared by both clients; no I/O."""

    _slots: TaskSlots | AsyncTaskLimiter | None

    def __init__(
        self,
        *,
        api_key: str | None,
        base_url: str | None,
        timeout_seconds: float,
        max_retries: int | None,
        retry_policy: RetryPolicy | None,
        wait_policy: WaitPolicy | None,
        rate_limit: RateLimit | None,
        requests_per_minute: int | None,
        prices: PriceTable | None,
        on_retry: RetryCallback | None = None,
    ) -> None:
        self._api_key = api_key_from(api_key)
        self.base_url = base_url_from(base_url)
        self.on_retry = on_retry
        self.timeout_seconds = timeout_seconds
        self.retry_policy = retry_policy_from(retry_policy, max_retries)
        self.wait_policy = wait_policy or DEFAULT_WAIT_POLICY
        self.rate_limit = rate_limit_from(rate_limit, requests_per_minute)
        self.prices = prices or DEFAULT_PRICES
        self.render_times = RenderTimes()
        """How long each kind of render took here: `wait` shapes its looks after it."""
        self._auth = KeyAuth(self._api_key, httpx.URL(self.base_url))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r})"

    def is_piapi_origin(self, url: str) -> bool:
        """Whether `url` has PiAPI's exact scheme, host and port: the only place its key goes."""
        try:
            return origin_of(url) == origin_of(self.base_url)
        except httpx.InvalidURL:
            return False

    @property
    def api_key(self) -> SecretStr:
        """The key, masked in every repr; `.get_secret_value()` only where it must go on."""
        return self._api_key

    @property
    def _secrets(self) -> tuple[str]:
        return (self._api_key.get_secret_value(),)

    def _timeout(self, timeout_seconds: float | None) -> httpx.Timeout:
        return httpx.Timeout(self.timeout_seconds if timeout_seconds is None else timeout_seconds)

    def _retries(self, max_retries: int | None) -> int:
        return self.retry_policy.max_retries if max_retries is None else max_retries

    def _client_options(self, max_in_flight_requests: int) -> dict[str, Any]:
        """httpx's options (`pool_limits`: the pool's, for the gate's requests at once);
        `new_client` adds the TLS context and the proxy rule."""
        return {
            "base_url": self.base_url,
            "auth": self._auth,
            "timeout": self._timeout(None),
            "headers": {"user-agent": user_agent()},
            "limits": pool_limits(max_in_flight_requests),
        }

    def _retry_pause(
        self, spec: _wire.RequestSpec, error: PiAPIError, retry_number: int, retries: int
    ) -> float | None:
        """Seconds to pause before retrying `spec` after `error`, or None: raise it.

        Logs the retry and tells `on_retry` before the pause starts."""
        delay = retry_delay(
            spec.kind,
            error,
            retry_number=retry_number,
            max_retries=retries,
            policy=self.retry_policy,
        )
        if delay is not None:
            logger.info(
                "retrying %s in %.2f s (retry %d of %d) after %s",
                spec.describe(),
                delay,
                retry_number + 1,
                retries,
                type(error).__name__,
            )
            if self.on_retry is not None:
                self.on_retry(error, delay)
        return delay

    def adopt_tasks(self, task_ids: Iterable[str]) -> None:
        """Count tasks submitted elsewhere (by a process that died, say) toward
        `max_concurrent_tasks` until this client sees them finished: a restart never has
        more tasks running at PiAPI than the limit allows."""
        if self._slots is not None:
            self._slots.adopt(list(task_ids))

    def _observe(self, task: Task) -> Task:
        """Every task the client hears of passes here: a terminal one frees its slot."""
        if self._slots is not None and task.is_terminal:
            self._slots.finish(task.task_id)
        return task

    def estimate_cost(self, request: RequestInput) -> Decimal:
        """The USD price of a request before submitting it (validated first; no I/O)."""
        typed = request if isinstance(request, KlingRequest) else parse_task_request(request)[0]
        return _estimate_cost(typed, prices=self.prices)

    @staticmethod
    def _looked(
        clock: WaitClock, task: Task, on_progress: ProgressHook | None, raise_on_failure: bool
    ) -> Task | None:
        """What one look of `wait` learned: the task when it is over (or `TaskFailedError`),
        None to keep waiting. `on_progress` hears each new version of the task."""
        clock.expect(task)
        clock.looked(task)
        if clock.is_news(task) and on_progress is not None:
            on_progress(task)
        if not task.is_terminal:
            return None
        if raise_on_failure and task.status is not TaskStatus.COMPLETED:
            raise TaskFailedError(task)
        return task

    def _expected_seconds(self, task: Task, *, has_webhook: bool) -> float | None:
        """How long `task` should take to render, for `generate`'s wait: what was learned of
        its kind; else the typical time with a webhook coming (the safety net's first look),
        or None, so that the wait probes until one of its kind has been seen finishing."""
        if not task.input:
            return None
        kind = render_kind(task.input, task_type=task.task_type)
        expected, learned = self.render_times.expected(
            kind, task.input, time_scale=self.wait_policy.time_scale
        )
        return expected if learned or has_webhook else None

    def _wait_clock(
        self,
        task_id: str,
        policy: WaitPolicy | None,
        *,
        has_webhook: bool,
        expected_seconds: float | None,
    ) -> WaitClock:
        """The schedule of one `wait`: with a webhook coming, its first look is the safety
        net after the expected time (typical, if not given); else it looks at once."""
        clock = WaitClock(
            task_id,
            policy or self.wait_policy,
            render_times=self.render_times,
            has_webhook=has_webhook,
        )
        if has_webhook or expected_seconds is not None:
            typical = TYPICAL_RENDER_SECONDS / clock.policy.time_scale
            clock.expect(expected_seconds=expected_seconds or typical)
        return clock

    @staticmethod
    def _resume_or_raise(job: Download, url: str, exc: httpx.RequestError | DownloadError) -> None:
        """Record an interrupted transfer for a resume, or raise when resuming cannot help."""
        if isinstance(exc, httpx.UnsupportedProtocol | httpx.LocalProtocolError):
            # a redirect to file:// (or a request httpx cannot send): never transient
            raise DownloadError(
                f"cannot download {url}: {type(exc).__name__}", url=url, retryable=False
            ) from None
        if isinstance(exc, DownloadError) and not exc.retryable:
            raise exc
        job.interrupted(exc)  # cut mid-body, timeout...: resume

    @staticmethod
    def _reads_raw(job: Download, response: httpx.Response) -> bool:
        """Whether the body can be written as it comes off the wire: not content-encoded,
        and not already read (a transport such as `httpx.MockTransport` hands over bodies
        read in full, which only `iter_bytes` replays)."""
        return not (job.decodes or response.is_stream_consumed)

    @staticmethod
    def _tolerable(error: PiAPIError) -> bool:
        """Errors a long wait rides out (the deadline still bounds it)."""
        return error.retryable or isinstance(error, UnexpectedResponseError)
