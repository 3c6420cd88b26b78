"""`/docs`: the API reference as a plain page from the OpenAPI schema, with no scripts.

FastAPI's Swagger UI loads its scripts from a CDN, which the pages' Content-Security-Policy
(`default-src 'self'`) rightly forbids; a page that runs foreign code next to a session
cookie is not worth it. This page lists every operation, with the same CSP as the rest;
`/openapi.json` stays there for tools.
"""

from __future__ import annotations

from html import escape
from typing import Any

from fastapi import FastAPI
from fastapi.responses import HTMLResponse

from klingflow.service.pages import PAGE_HEADERS

__all__ = ["add_api_docs"]

_METHODS = ("get", "post", "put", "patch", "delete")


def _page(schema: dict[str, Any]) -> str:
    rows = []
    for path, operations in schema.get("paths", {}).items():
        for method in _METHODS:
            if (operation := operations.get(method)) is None:
                continue
            summary = operation.get("summary") or ""
            description = (operation.get("description") or "").strip().split("\n\n")[0]
            rows.append(
                f"<tr><td><code>{method.upper()}</code></td><td><code>{escape(path)}</code></td>"
                f"<td>{escape(summary)}<br><small>{escape(description)}</small></td></tr>"
            )
    title = escape(str(schema.get("info", {}).get("title", "API")))
    return (
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{title} API</title>"
        "<link rel=stylesheet href=/static/app.css></head><body><main>"
        f"<h1>{title} API</h1><p>The machine-readable schema is "
        "<a href=/openapi.json>/openapi.json</a>.</p><table><thead><tr><th>method</th>"
        f"<th>path</th><th>what it does</th></tr></thead><tbody>{''.join(rows)}</tbody>"
        "</table></main></body></html>"
    )


def add_api_docs(app: FastAPI) -> None:
    """Serve `/docs` (create the app with `docs_url=None, redoc_url=None`)."""

    @app.get("/docs", include_in_schema=False)
    def api_docs() -> HTMLResponse:
        return HTMLResponse(_page(app.openapi()), headers=PAGE_HEADERS)
