"""`klingflow.piapi.urls`: the one URL rule of Kling inputs and workflow parameters."""

from __future__ import annotations

import pytest

from klingflow.errors import InvalidRequestError
from klingflow.piapi import KlingVideoRequest
from klingflow.piapi.urls import URL_RULE, url_problem


@pytest.mark.parametrize(
    "url", ["https://cdn.example/a.png", "HTTP://127.0.0.1:8787/x", "http://[::1]:8000/"]
)
def test_http_urls_with_a_host_pass(url: str) -> None:
    """An http(s) scheme (any case) and a host make a URL we fetch."""
    assert url_problem(url) is None


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://host/a", "https://", "cdn/a.png"])
def test_other_urls_are_refused(url: str) -> None:
    """Other schemes, or no host, are refused with the rule's wording."""
    assert url_problem(url) == URL_RULE


def test_kling_inputs_apply_the_rule() -> None:
    """A URL without a host is refused by a Kling request, nothing sent."""
    with pytest.raises(InvalidRequestError) as caught:
        KlingVideoRequest.from_input({"prompt": "a fox", "image_url": "https://"})
    assert caught.value.problems == [("input.image_url", URL_RULE)]
