"""The web UI's template environment: filters, and the guarantees every page gets.

Every `{{ }}` output is scrubbed of the deployment's known secrets (the PiAPI key, webhook
secret, chat key and API token) and JSON shown on a page also masks the values of
secret-looking keys (`api_key`, `authorization`, ...), so a secret written into a workflow
file or echoed in an error never reaches a browser. Pages carry a strict Content-Security-
Policy: they load nothing but klingflow's own script and stylesheet.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from klingflow.redaction import redact, redact_values
from klingflow.service.sessions import csrf_token, is_signed_in

__all__ = ["PAGE_HEADERS", "Pages", "PagesDep", "flash", "see_other"]

PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data: https: http:; media-src 'self' https: http:; "
        "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
"""Sent with every page: videos may come from PiAPI's CDN, everything else from here."""


def _usd(value: Decimal | None) -> str:
    return "–" if value is None else f"${value:,.2f}"


def _when(moment: float | datetime | None) -> str:
    """A moment (Unix seconds or aware datetime) in UTC, to the second."""
    if moment is None:
        return "–"
    if not isinstance(moment, datetime):
        moment = datetime.fromtimestamp(moment, UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _day(moment: float | None) -> str:
    """A moment's UTC date (2026-12-06), for what changes by the day (a version)."""
    return "–" if moment is None else datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%d")


def _ago(timestamp: float | None) -> str:
    if timestamp is None:
        return "–"
    seconds = max(0.0, time.time() - timestamp)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return f"{int(seconds)} s ago"


def _seconds(value: float | None) -> str:
    if value is None:
        return "–"
    if value < 60:
        return f"{value:.1f} s"
    minutes, seconds = divmod(int(value), 60)
    return f"{minutes} min {seconds:02d} s"


def _pretty(value: Any) -> str:
    """JSON for people, secret-looking keys masked."""
    return json.dumps(redact(value), indent=2, ensure_ascii=False, default=str)


class Pages:
    """Renders the UI's templates; see the module docstring for what every page gets."""

    def __init__(self, secrets: tuple[str, ...]) -> None:
        self.secrets = tuple(s for s in secrets if s)
        self.env = Environment(
            loader=PackageLoader("klingflow.service", "templates"),
            autoescape=select_autoescape(default=True),
            undefined=StrictUndefined,
            finalize=self._scrub,
        )
        self.env.filters.update(
            usd=_usd, when=_when, day=_day, ago=_ago, seconds=_seconds, pretty=_pretty
        )

    def _scrub(self, value: Any) -> Any:
        return redact_values(value, self.secrets) if isinstance(value, str) else value

    def render(
        self,
        request: Request,
        name: str,
        *,
        status_code: int = 200,
        live: bool = False,
        **context: Any,
    ) -> HTMLResponse:
        """A page, or with `live` a fragment a page polls (which leaves the flash alone)."""
        html = self.env.get_template(name).render(
            request=request,
            path=request.url.path,
            csrf_token=csrf_token(request),
            login_enabled=request.app.state.settings.api_token is not None,
            signed_in=is_signed_in(request),
            flash=None if live else request.session.pop("flash", None),
            **context,
        )
        return HTMLResponse(html, status_code=status_code, headers=PAGE_HEADERS)


def _pages(request: Request) -> Pages:
    pages: Pages = request.app.state.pages
    return pages


PagesDep = Annotated[Pages, Depends(_pages)]


def flash(request: Request, text: str, kind: Literal["ok", "error"] = "ok") -> None:
    """A one-line message the next page shows once (after a form's redirect)."""
    request.session["flash"] = {"kind": kind, "text": text}


def see_other(url: str) -> RedirectResponse:
    """The answer to a form: a 303, so a reload never posts twice."""
    return RedirectResponse(url, status_code=303)
