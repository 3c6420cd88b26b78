"""Login and token hardening (issue #15, point 4): local `next` only, logout revokes,
failures are rate-limited, short tokens are refused beyond loopback, `/docs` runs no CDN code."""

from __future__ import annotations

import re

import httpx
import pytest
from pydantic import SecretStr

from klingflow.service.attempts import MAX_FAILED_ATTEMPTS
from klingflow.service.pages import PAGE_HEADERS
from klingflow.service.security import MIN_TOKEN_CHARS, check_bind
from klingflow.settings import Settings

from ..loopback import loopback_client
from .conftest import API_TOKEN, StartService


def csrf(http: httpx.Client, path: str = "/login") -> str:
    page = http.get(path)
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found is not None, page.text[:200]
    return found.group(1)


def sign_in(http: httpx.Client, token: str = API_TOKEN, next_url: str = "/") -> httpx.Response:
    return http.post("/login", data={"csrf_token": csrf(http), "token": token, "next": next_url})


@pytest.mark.parametrize(
    "next_url", ["//evil.test", "////evil.test", "\\\\evil.test", "/\\evil.test", "///evil.test"]
)
def test_login_next_accepts_only_a_local_path(start_service: StartService, next_url: str) -> None:
    """A `next` another site could hide in a login link sends the user home instead."""
    service = start_service(api_token=API_TOKEN)
    with loopback_client(service.url) as browser:
        response = sign_in(browser, next_url=next_url)
        assert response.status_code == 303
        assert response.headers["location"] == "/"
        page = browser.get(f"/login?next={next_url}")
        assert next_url not in page.text


def test_logout_revokes_the_session_on_the_server(start_service: StartService) -> None:
    """A copy of the cookie taken before logout no longer opens any page."""
    service = start_service(api_token=API_TOKEN)
    with loopback_client(service.url) as browser:
        assert sign_in(browser).status_code == 303
        copied = dict(browser.cookies)
        assert browser.get("/runs").status_code == 200
        assert browser.post("/logout", data={"csrf_token": csrf(browser, "/runs")}).is_redirect
    with loopback_client(service.url, cookies=copied) as thief:
        response = thief.get("/runs")
        assert response.status_code == 303
        assert response.headers["location"].startswith("/login")


def test_wrong_tokens_are_rate_limited_per_client(start_service: StartService) -> None:
    """After the limit of wrong bearer tokens, even the right one gets 429 with Retry-After."""
    service = start_service(api_token=API_TOKEN)
    with loopback_client(service.url) as guesser:
        codes = [
            guesser.get("/api/runs", headers={"Authorization": f"Bearer guess-{n}"}).status_code
            for n in range(MAX_FAILED_ATTEMPTS)
        ]
        assert codes == [401] * MAX_FAILED_ATTEMPTS
        blocked = guesser.get("/api/runs", headers={"Authorization": f"Bearer {API_TOKEN}"})
        assert blocked.status_code == 429
        assert int(blocked.headers["retry-after"]) >= 1
        assert API_TOKEN not in blocked.text


def test_failed_logins_are_rate_limited_per_client(start_service: StartService) -> None:
    """After the limit of failed sign-ins, the login form answers 429, right token or not."""
    service = start_service(api_token=API_TOKEN)
    with loopback_client(service.url) as guesser:
        codes = [
            sign_in(guesser, token=f"guess-{n}").status_code for n in range(MAX_FAILED_ATTEMPTS)
        ]
        assert codes == [401] * MAX_FAILED_ATTEMPTS
        assert sign_in(guesser).status_code == 429


@pytest.mark.parametrize(
    ("host", "token", "refused"),
    [
        ("0.0.0.0", "x" * (MIN_TOKEN_CHARS - 1), True),
        ("192.168.1.5", "short", True),
        ("0.0.0.0", "x" * MIN_TOKEN_CHARS, False),
        ("127.0.0.1", "short", False),
        ("::1", None, False),
        ("0.0.0.0", None, True),
    ],
)
def test_short_tokens_are_refused_beyond_loopback(
    host: str, token: str | None, refused: bool
) -> None:
    """Beyond loopback the token must have at least 32 characters."""
    settings = Settings(api_token=SecretStr(token) if token else None)
    if refused:
        with pytest.raises(ValueError, match="KLINGFLOW_API_TOKEN") as caught:
            check_bind(host, settings)
        assert token is None or token not in str(caught.value)
    else:
        check_bind(host, settings)


def test_docs_page_has_the_pages_csp_and_no_foreign_scripts(start_service: StartService) -> None:
    """/docs lists the API under the same CSP as every page, with no CDN scripts."""
    service = start_service()
    response = service.http.get("/docs")
    assert response.status_code == 200
    assert response.headers["content-security-policy"] == PAGE_HEADERS["Content-Security-Policy"]
    assert "<script" not in response.text
    assert "cdn" not in response.text.lower()
    assert "/api/workflows/{name}/runs" in response.text
    assert service.http.get("/openapi.json").status_code == 200
