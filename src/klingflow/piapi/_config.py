"""The clients' options that need a rule: where PiAPI is, and how retries and rates are set.

Kept out of `_client.py` so that both clients resolve their options the same way, and so a
bad option is refused at construction, not after a round of retries of a request that can
never be sent.
"""

from __future__ import annotations

import dataclasses
import os

import httpx

from klingflow.piapi import _wire
from klingflow.piapi._retries import DEFAULT_RETRY_POLICY, RetryPolicy
from klingflow.piapi.throttle import RateLimit

__all__ = [
    "BASE_URL_ENV",
    "DEFAULT_MAX_RESUMES",
    "DEFAULT_TIMEOUT_SECONDS",
    "base_url_from",
    "rate_limit_from",
    "retry_policy_from",
]

BASE_URL_ENV = "PIAPI_BASE_URL"
DEFAULT_TIMEOUT_SECONDS = 30.0
DEFAULT_MAX_RESUMES = 5
"""How often a download resumes with Range after an interruption before it gives up."""


def base_url_from(base_url: str | None) -> str:
    """The URL given, else `PIAPI_BASE_URL`, else PiAPI's; without a trailing slash.

    `ValueError` unless it has an http(s) scheme and a host (`127.0.0.1:8787` is a common
    slip that httpx would only refuse at the first request, after its retries)."""
    url = base_url or os.environ.get(BASE_URL_ENV) or _wire.DEFAULT_BASE_URL
    parsed = httpx.URL(url)
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(
            f"the PiAPI base URL {url!r} needs http:// or https:// and a host "
            f"(e.g. http://127.0.0.1:8787); pass base_url= or set {BASE_URL_ENV}"
        )
    return url.rstrip("/")


def retry_policy_from(policy: RetryPolicy | None, max_retries: int | None) -> RetryPolicy:
    """The policy given (else the default), with `max_retries` replaced when given."""
    policy = policy or DEFAULT_RETRY_POLICY
    if max_retries is not None:
        policy = dataclasses.replace(policy, max_retries=max_retries)
    return policy


def rate_limit_from(
    rate_limit: RateLimit | None, requests_per_minute: int | None
) -> RateLimit | None:
    """One rate limit from the two ways to give it; `TypeError` when both are given."""
    if rate_limit is not None and requests_per_minute is not None:
        raise TypeError("pass rate_limit= or requests_per_minute=, not both")
    if requests_per_minute is not None:
        return RateLimit.per_minute(requests_per_minute)
    return rate_limit
