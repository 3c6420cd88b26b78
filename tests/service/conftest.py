"""The service on uvicorn in a thread on loopback, its engine pointed at the emulator."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from klingflow.emulator import EmulatorServer
from klingflow.piapi import AsyncPiAPI, WaitPolicy
from klingflow.service import create_app
from klingflow.settings import Settings
from klingflow.workflows.engine import Engine
from klingflow.workflows.records import TERMINAL_RUN_STATUSES, RunStatus

from ..databases import copy_sqlite_template, empty_database_wanted
from ..loopback import LoopbackServer, loopback_client
from ..policies import FAST_RETRY, FAST_WAIT

WEBHOOK_SECRET = "kf-hook-secret-5c2e91"  # a test value
API_TOKEN = "kf-api-token-8a71f3"  # a test value
SETTLED = frozenset(
    {s.value for s in RunStatus} - {RunStatus.QUEUED.value, RunStatus.RUNNING.value}
)
FINISHED = frozenset(s.value for s in TERMINAL_RUN_STATUSES)

CLIP = """\
name: clip
inputs:
  prompt: {type: string, required: true}
nodes:
  - id: clip
    type: kling.video
    with: {prompt: "{{ inputs.prompt }}", download: false}
"""


@dataclass
class Service:
    """A running service: its URL and an HTTP client for it (with the token, if any)."""

    url: str
    http: httpx.Client
    stop: Callable[[], None] = lambda: None
    """Stop the service now (a test that restarts it; teardown stops it anyway)."""

    def publish(self, text: str = CLIP) -> dict[str, Any]:
        response = self.http.post("/api/workflows", content=text)
        assert response.status_code in (200, 201), response.text
        result: dict[str, Any] = response.json()
        return result

    def start(self, name: str = "clip", payload: dict[str, Any] | None = None) -> str:
        body = {"prompt": "a red fox"} if payload is None else payload
        response = self.http.post(f"/api/workflows/{name}/runs", json=body)
        assert response.status_code == 201, response.text
        run_id: str = response.json()["run_id"]
        return run_id

    def settle(
        self, run_id: str, *, timeout_seconds: float = 30.0, until: frozenset[str] | None = None
    ) -> dict[str, Any]:
        """GET the run until it is paused or finished (or in `until`); its detail view."""
        statuses = SETTLED if until is None else until
        deadline = time.monotonic() + timeout_seconds
        while True:
            detail: dict[str, Any] = self.http.get(f"/api/runs/{run_id}").json()
            if detail["run"]["status"] in statuses or time.monotonic() > deadline:
                return detail
            time.sleep(0.05)

    def finish(self, run_id: str, *, timeout_seconds: float = 30.0) -> dict[str, Any]:
        """GET the run until it is finished (a paused run may still be woken)."""
        return self.settle(run_id, timeout_seconds=timeout_seconds, until=FINISHED)


StartService = Callable[..., Service]


@pytest.fixture
def start_service(
    emulator: EmulatorServer, tmp_path: Path, api_key: str, request: pytest.FixtureRequest
) -> Iterator[StartService]:
    """Start the service (one at a time: DBOS is a per-process singleton); stopped after.
    Its run log starts as a copy of the schema's template (tests/databases.py) unless the
    test is marked `empty_database` or names its own database."""
    stops: list[Callable[[], None]] = []
    template: Path | None = None
    if not empty_database_wanted(request):
        template = request.getfixturevalue("sqlite_schema")

    def start(
        *,
        wait_policy: WaitPolicy = FAST_WAIT,
        client_options: dict[str, Any] | None = None,
        **overrides: Any,
    ) -> Service:
        server = LoopbackServer()
        url = server.url
        values: dict[str, Any] = {
            "home": tmp_path,
            "database_url": f"sqlite:///{tmp_path / 'klingflow.sqlite'}",
            "public_url": url,
            "webhook_secret": WEBHOOK_SECRET,
        }
        values.update(overrides)
        if template is not None and "database_url" not in overrides:
            copy_sqlite_template(template, tmp_path)
        settings = Settings(**values)

        @asynccontextmanager
        async def engine_factory(settings: Settings) -> AsyncIterator[Engine]:
            client = AsyncPiAPI(
                api_key=api_key,
                base_url=emulator.url,
                retry_policy=FAST_RETRY,
                **(client_options or {}),
            )
            async with client, Engine(settings, client=client, wait_policy=wait_policy) as engine:
                yield engine

        server.start(create_app(settings, engine_factory=engine_factory))
        headers = {}
        if settings.api_token is not None:
            headers["Authorization"] = f"Bearer {settings.api_token.get_secret_value()}"
        http = loopback_client(url, headers=headers, timeout=30)

        def stop() -> None:
            http.close()
            server.stop()

        stops.append(stop)
        return Service(url=url, http=http, stop=stop)

    yield start
    for stop in reversed(stops):
        stop()


@pytest.fixture
def service(start_service: StartService) -> Service:
    """The service with webhooks enabled and no API token."""
    return start_service()


CHROMIUM = Path(os.environ.get("KLINGFLOW_TEST_CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"
CHROMIUM_ARGS = [
    # As root in a sandbox-less container, on a machine with no route out (env notes).
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium driven by Playwright; skipped, with the reason, when absent."""
    if not CHROMIUM.exists():
        pytest.skip(
            f"no Chromium at {CHROMIUM}: `make test` installs Debian's chromium package when "
            "it runs as root with apt-get; or set KLINGFLOW_TEST_CHROMIUM to a Chromium binary"
        )
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh browser context (no cookies) and page; `shoot(page, name)` keeps screenshots.
    The test fails if the page logged an error (a script error, a refused resource)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(20_000)
    opened = context.new_page()
    problems: list[str] = []
    opened.on("pageerror", lambda error: problems.append(str(error)))
    opened.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    yield opened
    context.close()
    refused_login = "the server responded with a status of 401"  # a wrong token, on purpose
    assert [p for p in problems if refused_login not in p] == [], problems


DOCS_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"
DOCS_SHOTS = frozenset(
    {
        "dashboard", "workflows", "workflow", "workflow-csv-preview", "editor-problem", "editor",
        "run-paused", "run-retried", "run-failed-task", "run-uncertain", "run-batch-paused",
        "run-items", "run-item", "run-batch-completed", "phone-run",
    }
)  # fmt: skip
"""The screenshots docs/service.md shows, as `images/ui-<name>.png`."""


def shoot(page: Page, name: str) -> Path:
    """Save a full-page screenshot under test-artifacts/screenshots (kept after the run);
    with KLINGFLOW_DOCS_SCREENSHOTS=1, those the docs show also go to docs/images/."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("KLINGFLOW_DOCS_SCREENSHOTS") == "1" and name in DOCS_SHOTS:
        shutil.copyfile(path, DOCS_IMAGES / f"ui-{name}.png")
    return path


@pytest.fixture
def browser_phone(browser: Browser) -> Iterator[Page]:
    """A page the size of a phone screen (390 x 844, touch)."""
    context = browser.new_context(
        viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True
    )
    context.set_default_timeout(20_000)
    yield context.new_page()
    context.close()
