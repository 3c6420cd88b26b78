"""Who may call the service: loopback by default, a bearer token for anything wider.

`KLINGFLOW_API_TOKEN` guards `/api/*` and `/hooks/{workflow}`; PiAPI's webhook receiver has
its own secret (`KLINGFLOW_WEBHOOK_SECRET`). Tokens are compared in constant time and never
rendered or logged.
"""

from __future__ import annotations

import hmac
import ipaddress
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from klingflow.settings import Settings

__all__ = ["check_bind", "is_loopback", "require_token"]

_bearer = HTTPBearer(auto_error=False, description="KLINGFLOW_API_TOKEN, when one is set.")


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and `localhost`; any other name or address is exposed."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, settings: Settings) -> None:
    """Refuse (ValueError) to listen beyond loopback without `KLINGFLOW_API_TOKEN`."""
    if not is_loopback(host) and settings.api_token is None:
        raise ValueError(
            f"refusing to listen on {host} without a token: set KLINGFLOW_API_TOKEN "
            "(clients then send `Authorization: Bearer <token>`), or keep --host 127.0.0.1"
        )


def require_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """With a token configured, the request must carry it as a bearer token (401 otherwise)."""
    settings: Settings = request.app.state.settings
    if settings.api_token is None:
        return
    expected = settings.api_token.get_secret_value().encode()
    given = b"" if credentials is None else credentials.credentials.encode()
    if not hmac.compare_digest(given, expected):
        raise HTTPException(
            status_code=401,
            detail="missing or wrong bearer token: send `Authorization: Bearer <token>`",
            headers={"WWW-Authenticate": "Bearer"},
        )
