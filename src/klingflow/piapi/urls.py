"""The URL rule: which values may name a file for PiAPI (or a workflow node) to fetch.

One rule for the client's Kling inputs and the workflow spec's URL parameters, so that a
value one accepts the other never refuses: an `http://` or `https://` scheme (any case)
followed by a host. Other schemes (`file://`, `ftp://`...) could reach local resources, and
a URL without a host can never be fetched, only paid for.
"""

from __future__ import annotations

import re

__all__ = ["URL_RULE", "check_url", "url_problem"]

URL_RULE = "must be an http(s) URL"
_URL = re.compile(r"^https?://[^\s/]+", re.IGNORECASE)


def url_problem(value: str) -> str | None:
    """Why `value` is not a URL we fetch or send on, or None when it is."""
    return None if _URL.match(value) else URL_RULE


def check_url(value: str | None) -> str | None:
    """A pydantic validator for optional URL fields: `ValueError` naming the rule."""
    if value is not None and (problem := url_problem(value)) is not None:
        raise ValueError(problem)
    return value
