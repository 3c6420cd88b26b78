"""Who may use the web UI: a login when a token is configured, and a CSRF token on every form.

The UI keeps a signed session cookie (Starlette's `SessionMiddleware`). Its signing key is
derived from `KLINGFLOW_API_TOKEN`, so changing the token signs everybody out; without a
token (loopback only, no login) the key is random per process. Forms carry the session's
CSRF token even on loopback, because any web page a user visits can post to 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from urllib.parse import quote

from fastapi import HTTPException, Request
from starlette.datastructures import FormData

from klingflow.service.security import token_matches
from klingflow.service.session_log import SessionLog
from klingflow.settings import Settings

__all__ = [
    "SESSION_COOKIE",
    "SESSION_MAX_AGE_SECONDS",
    "LoginRequired",
    "check_csrf",
    "csrf_token",
    "is_signed_in",
    "read_form",
    "require_login",
    "session_key",
    "sign_in",
    "sign_out",
]

SESSION_COOKIE = "klingflow_session"
SESSION_MAX_AGE_SECONDS = 7 * 24 * 3600
"""How long a login lasts, counted from the sign-in however busy the session has been."""


class LoginRequired(Exception):
    """Raised by `require_login`; the app answers with a redirect to the login page."""

    def __init__(self, next_url: str) -> None:
        super().__init__(next_url)
        self.login_url = f"/login?next={quote(next_url, safe='/')}"


def session_key(settings: Settings) -> str:
    """The cookie signing key: derived from the API token, else random for this process."""
    if settings.api_token is None:
        return secrets.token_urlsafe(32)
    token = settings.api_token.get_secret_value().encode()
    return hmac.new(token, b"klingflow ui session", hashlib.sha256).hexdigest()


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def is_signed_in(request: Request) -> bool:
    """True when no API token is set, or this browser signed in and its session is still valid."""
    if _settings(request).api_token is None:
        return True
    # Counted here, not by the cookie's own max-age: the cookie is re-signed on every
    # response, so a tab that keeps polling would otherwise stay signed in for ever.
    since = request.session.get("signed_in_at")
    sid = request.session.get("sid")
    if isinstance(sid, str) and _log(request).is_revoked(sid):
        return False  # signed out: the cookie may live on in a copy, the session does not
    return isinstance(since, int | float) and 0 <= time.time() - since < SESSION_MAX_AGE_SECONDS


def _log(request: Request) -> SessionLog:
    """Where signed-out sessions are kept: the run log's database, shared by every `serve`
    process on it and kept across restarts (a cookie is signed, not stored)."""
    log: SessionLog = request.app.state.session_log
    return log


def require_login(request: Request) -> None:
    """A dependency for UI pages: without a session, go to the login page (and come back)."""
    if not is_signed_in(request):
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise LoginRequired(path)


def sign_in(request: Request, given: str) -> bool:
    """Start a session when `given` is the API token (a fresh CSRF token too)."""
    if not token_matches(_settings(request), given):
        return False
    request.session.clear()
    request.session["signed_in_at"] = time.time()
    request.session["sid"] = secrets.token_urlsafe(16)
    return True


def sign_out(request: Request) -> None:
    """End the session here and now: its id is revoked, so a copy of the cookie is dead."""
    sid, since = request.session.get("sid"), request.session.get("signed_in_at")
    if isinstance(sid, str):
        signed_in_at = since if isinstance(since, int | float) else time.time()
        _log(request).revoke(sid, expires_at=signed_in_at + SESSION_MAX_AGE_SECONDS)
    request.session.clear()


def csrf_token(request: Request) -> str:
    """The session's CSRF token, made on first use; forms send it back as `csrf_token`."""
    token = request.session.get("csrf")
    if isinstance(token, str):
        return token
    fresh = secrets.token_urlsafe(32)
    request.session["csrf"] = fresh
    return fresh


def check_csrf(request: Request, form: FormData) -> None:
    """403 unless the form carries this session's CSRF token."""
    expected = request.session.get("csrf")
    given = form.get("csrf_token")
    if not (
        isinstance(expected, str)
        and isinstance(given, str)
        and hmac.compare_digest(given.encode(), expected.encode())
    ):
        raise HTTPException(
            status_code=403,
            detail="this form has expired or did not come from klingflow: reload the page",
        )


async def read_form(request: Request) -> FormData:
    """The posted form, once its CSRF token is checked."""
    form = await request.form()
    check_csrf(request, form)
    return form
