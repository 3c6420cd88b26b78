"""Who may call the service: loopback by default, a bearer token for anything wider.

`KLINGFLOW_API_TOKEN` guards `/api/*` and `/hooks/{workflow}`; PiAPI's webhook receiver has
its own secret (`KLINGFLOW_WEBHOOK_SECRET`). Tokens are compared in constant time and never
rendered or logged. `CrossSiteGuard` refuses what a web page could make a browser do to a
service on loopback, which needs no token.
"""

from __future__ import annotations

import hmac
import ipaddress
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, HTTPException, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Receive, Scope, Send

from klingflow.service.attempts import failed_attempts
from klingflow.settings import Settings

__all__ = ["MIN_TOKEN_CHARS", "CrossSiteGuard", "check_bind", "is_loopback", "require_token"]

_bearer = HTTPBearer(auto_error=False, description="KLINGFLOW_API_TOKEN, when one is set.")


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and `localhost`; any other name or address is exposed."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


MIN_TOKEN_CHARS = 32
"""The shortest `KLINGFLOW_API_TOKEN` accepted beyond loopback (guessing stays hopeless)."""


def check_bind(host: str, settings: Settings) -> None:
    """Refuse (ValueError) to listen beyond loopback without a `KLINGFLOW_API_TOKEN` of at
    least 32 characters."""
    if is_loopback(host):
        return
    if settings.api_token is None:
        raise ValueError(
            f"refusing to listen on {host} without a token: set KLINGFLOW_API_TOKEN "
            "(clients then send `Authorization: Bearer <token>`), or keep --host 127.0.0.1"
        )
    size = len(settings.api_token.get_secret_value())
    if size < MIN_TOKEN_CHARS:
        raise ValueError(
            f"refusing to listen on {host} with a {size}-character KLINGFLOW_API_TOKEN: "
            f"beyond loopback it needs at least {MIN_TOKEN_CHARS} (make one with `python -c "
            "'import secrets; print(secrets.token_urlsafe(32))'`)"
        )


def token_matches(settings: Settings, given: str) -> bool:
    """Whether `given` is the API token (constant time); anything goes without a token."""
    if settings.api_token is None:
        return True
    expected = settings.api_token.get_secret_value().encode()
    return hmac.compare_digest(given.encode(), expected)


def require_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """With a token configured, the request must carry it as a bearer token (401 otherwise;
    429 after too many wrong tokens from one client, see `attempts`)."""
    settings: Settings = request.app.state.settings
    if settings.api_token is None:
        return
    counter, client = failed_attempts(request)
    counter.check(client)
    given = "" if credentials is None else credentials.credentials
    if token_matches(settings, given):
        counter.succeeded(client)
    else:
        counter.failed(client)
        raise HTTPException(
            status_code=401,
            detail="missing or wrong bearer token: send `Authorization: Bearer <token>`",
            headers={"WWW-Authenticate": "Bearer"},
        )


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _refusal(error: str, message: str) -> JSONResponse:
    return JSONResponse({"error": error, "message": message, "details": {}}, status_code=403)


class CrossSiteGuard:
    """Refuse what a web page could make a visitor's browser do to this service.

    - Writes a browser sends for another page: `Sec-Fetch-Site` other than `same-origin`
      (or `none`, typed by the user), or, from browsers without it, an `Origin` that is
      not this host. Other apps and PiAPI send neither header and pass.
    - Without an API token (loopback only), any request whose `Host` is not loopback or
      `KLINGFLOW_PUBLIC_URL`'s host: a DNS-rebinding page cannot reach the service as
      same-origin.

    Forms also carry CSRF tokens; this guard covers the JSON API and body-less posts too.
    """

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.check_host = settings.api_token is None
        self.public_host = urlsplit(settings.public_url or "").hostname

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refusal = self._refusal(scope)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _refusal(self, scope: Scope) -> JSONResponse | None:
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "")
        if self.check_host:
            name = urlsplit(f"//{host}").hostname or ""
            if not (is_loopback(name) or (self.public_host and name == self.public_host)):
                return _refusal(
                    "HostNotAllowed",
                    f"this service answers to loopback names only (not {host!r}); set "
                    "KLINGFLOW_PUBLIC_URL or KLINGFLOW_API_TOKEN to serve another name",
                )
        if scope["method"] in SAFE_METHODS:
            return None
        site = headers.get("sec-fetch-site")
        origin = headers.get("origin")
        if site is not None:
            cross = site not in ("same-origin", "none")
        else:
            cross = origin is not None and urlsplit(origin).netloc != host
        if cross:
            return _refusal("CrossSiteRequest", "requests from other web sites are refused")
        return None
