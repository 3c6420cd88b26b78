"""The app factory: the Engine (DBOS) and the schedules run in the lifespan; routers, pages,
sessions and error rendering.

The engine runs in the server's own event loop (dbos-notes §1: launched anywhere else, queued
workflows would run on a private loop and break the loop-bound HTTP client).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from http import HTTPStatus
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from starlette.middleware.sessions import SessionMiddleware

from klingflow import errors
from klingflow.service import ui
from klingflow.service.api import APIError, ErrorPublic, runs, tasks, webhooks, workflows
from klingflow.service.apidocs import add_api_docs
from klingflow.service.pages import Pages
from klingflow.service.security import CrossSiteGuard, require_token
from klingflow.service.session_log import SessionLog
from klingflow.service.sessions import (
    SESSION_COOKIE,
    SESSION_MAX_AGE_SECONDS,
    LoginRequired,
    session_key,
)
from klingflow.settings import Settings
from klingflow.workflows.engine import Engine
from klingflow.workflows.registry import WorkflowRegistry
from klingflow.workflows.schedules import Scheduler

__all__ = ["EngineFactory", "create_app", "default_engine", "status_for"]

EngineFactory = Callable[[Settings], AbstractAsyncContextManager[Engine]]
"""Builds the engine the service runs; entering it launches DBOS (`Engine` itself fits)."""

_STATUS: list[tuple[type[errors.KlingflowError], int]] = [
    (errors.WorkflowDefinitionError, 422),
    (errors.InvalidRequestError, 422),  # WorkflowInputError too
    (errors.WebhookVerificationError, 401),
    (errors.TaskNotFoundError, 404),
    (errors.RunNotFoundError, 404),
    (errors.WorkflowNotFoundError, 404),
    (errors.RunStateError, 409),  # e.g. retrying a run that is not paused
    (errors.WorkflowError, 409),
    (errors.PiAPIError, 502),
    (errors.KlingflowError, 500),
]
"""(error class, HTTP status), most specific first."""


def default_engine(settings: Settings) -> Engine:
    """The engine `klingflow serve` runs: PiAPI from `PIAPI_*`, executor id from settings."""
    return Engine(settings, executor_id=settings.executor_id)


def status_for(error: errors.KlingflowError) -> int:
    """The HTTP status `error` is answered with: its most specific row of `_STATUS`."""
    return next(status for cls, status in _STATUS if isinstance(error, cls))


def _details(error: errors.KlingflowError) -> dict[str, Any]:
    if isinstance(error, errors.WorkflowDefinitionError):
        problems = [
            {"message": p.message, "line": p.line, "node_id": p.node_id, "field": p.field}
            for p in error.problems
        ]
        return {"problems": problems}
    if isinstance(error, errors.InvalidRequestError):
        return {"problems": [{"field": f, "message": m} for f, m in error.problems]}
    if isinstance(error, errors.APIStatusError):
        return {"status_code": error.status_code, "code": error.code}
    return {}


def _wants_page(request: Request) -> bool:
    """A browser asking for a page (not the API, a hook or a live fragment's fetch)."""
    return not request.url.path.startswith(("/api/", "/hooks/")) and "text/html" in (
        request.headers.get("accept", "")
    )


def _render(
    request: Request, status: int, body: ErrorPublic, headers: Mapping[str, str] | None = None
) -> Response:
    """The error as JSON, or as a page for a browser (the UI's own routes)."""
    if _wants_page(request) and hasattr(request.app.state, "pages"):
        pages: Pages = request.app.state.pages
        title = HTTPStatus(status).phrase
        return pages.render(
            request, "error.html", status_code=status, title=title, message=body.message
        )
    return JSONResponse(
        body.model_dump(mode="json"), status_code=status, headers=dict(headers or {})
    )


async def _klingflow_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, errors.KlingflowError)
    body = ErrorPublic(error=type(error).__name__, message=str(error), details=_details(error))
    return _render(request, status_for(error), body)


async def _http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    name = error.error if isinstance(error, APIError) else HTTPStatus(error.status_code).phrase
    body = ErrorPublic(error=name.replace(" ", ""), message=str(error.detail))
    return _render(request, error.status_code, body, error.headers)


async def _login_required(request: Request, error: Exception) -> Response:
    assert isinstance(error, LoginRequired)
    return RedirectResponse(error.login_url, status_code=303)


async def _validation_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, RequestValidationError)
    problems = [
        {"field": ".".join(map(str, e["loc"])), "message": e["msg"]} for e in error.errors()
    ]
    body = ErrorPublic(
        error="InvalidRequest", message="the request is malformed", details={"problems": problems}
    )
    return _render(request, 422, body)


def create_app(
    settings: Settings | None = None, *, engine_factory: EngineFactory = default_engine
) -> FastAPI:
    """The klingflow service; the engine starts and stops with the app's lifespan."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with engine_factory(settings) as engine:
            if settings.public_url and settings.webhook_secret:
                engine.receive_webhooks()  # PiAPI reports to /hooks/piapi: poll sparsely
            registry = WorkflowRegistry(engine.runlog.engine)
            app.state.engine = engine
            app.state.registry = registry
            app.state.pages = Pages(engine.runlog.secrets)
            app.state.session_log = SessionLog(engine.runlog.engine)
            async with Scheduler(engine, registry) as scheduler:
                app.state.scheduler = scheduler
                yield

    app = FastAPI(
        title="klingflow",
        summary="Durable Kling video workflows through PiAPI",
        lifespan=lifespan,
        docs_url=None,  # Swagger UI's CDN scripts would break the CSP: see apidocs
        redoc_url=None,
    )
    add_api_docs(app)
    app.state.settings = settings
    app.state.webhooks = webhooks.DeliveryLog()
    guarded = [Depends(require_token)]
    app.include_router(workflows.router, prefix="/api", dependencies=guarded)
    app.include_router(runs.router, prefix="/api", dependencies=guarded)
    app.include_router(tasks.router, prefix="/api", dependencies=guarded)
    app.include_router(webhooks.piapi_router)  # before /hooks/{workflow}: its own secret
    app.include_router(webhooks.trigger_router, dependencies=guarded)
    app.include_router(ui.public_router)
    app.include_router(ui.pages_router)
    app.mount("/static", StaticFiles(directory=ui.STATIC_DIR), name="static")
    app.add_middleware(
        SessionMiddleware,
        secret_key=session_key(settings),
        session_cookie=SESSION_COOKIE,
        max_age=SESSION_MAX_AGE_SECONDS,
        same_site="lax",
        https_only=(settings.public_url or "").startswith("https://"),
    )
    app.add_middleware(CrossSiteGuard, settings=settings)
    app.add_exception_handler(LoginRequired, _login_required)
    app.add_exception_handler(errors.KlingflowError, _klingflow_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    return app
