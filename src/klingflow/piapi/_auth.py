"""Who we are to PiAPI: the `x-api-key` header, only for PiAPI's own origin, and the user agent.

Kept apart from the clients (as httpx keeps `_auth.py`) because the one rule here is a
security rule: the key goes to the scheme, host and port of the base URL and nowhere else,
not to the file hosts that outputs are downloaded from, not over `http://` to PiAPI's host.
"""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Generator

import httpx
from pydantic import SecretStr

from klingflow.piapi import _wire

__all__ = ["API_KEY_ENV", "KeyAuth", "api_key_from", "origin_of", "user_agent"]

API_KEY_ENV = "PIAPI_API_KEY"


def api_key_from(api_key: str | None) -> SecretStr:
    """The key given, else `PIAPI_API_KEY`, masked; `ValueError` when there is none."""
    key = api_key if api_key is not None else os.environ.get(API_KEY_ENV, "")
    if not key.strip():
        raise ValueError(f"no PiAPI key: pass api_key= or set {API_KEY_ENV}")
    return SecretStr(key.strip())


def user_agent() -> str:
    """`klingflow/<version>`: lets PiAPI (and the emulator's logs) tell our requests apart."""
    try:
        version = importlib.metadata.version("klingflow")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - source checkout
        version = "0"
    return f"klingflow/{version}"


def origin_of(url: str | httpx.URL) -> tuple[str, str, int | None]:
    """Scheme, host and port (None for the scheme's default): what must match before PiAPI's
    key goes along. `http://` on PiAPI's host, or another port there, is another origin."""
    parsed = httpx.URL(url) if isinstance(url, str) else url
    return (parsed.scheme, parsed.host, parsed.port)


class KeyAuth(httpx.Auth):
    """Adds `x-api-key`, only to requests for PiAPI's own origin (never to file hosts)."""

    def __init__(self, api_key: SecretStr, base_url: httpx.URL) -> None:
        self._api_key = api_key
        self._origin = origin_of(base_url)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """Send `request` once, with the key only when it goes to PiAPI's origin."""
        if origin_of(request.url) == self._origin:
            request.headers[_wire.API_KEY_HEADER] = self._api_key.get_secret_value()
        yield request

    def __repr__(self) -> str:
        return "KeyAuth(api_key=SecretStr('**********'))"
