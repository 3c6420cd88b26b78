"""PiAPI's task API for Kling over real HTTP: the request pipeline and PiAPI's routes.

Routes mirror PiAPI (`/api/v1/task`, `/account/*`, `/files/*`) and answer in its
`{code, data, message}` envelope (`responses`); the OpenAI-compatible `/v1/chat/completions`
(see `chat`) answers in OpenAI's shape instead. Every API request passes, in order: the key
check (401), the injected faults of phase "before" (`faults`), the per-key rate limit (429 +
Retry-After, `rate_limits`), the handler, then the faults of phase "after". `stats` counts
what clients really did; `control` serves it and the rest of the `/_emulator/*` control API.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from klingflow.emulator import chat
from klingflow.emulator.accounts import account_json
from klingflow.emulator.clock import Clock
from klingflow.emulator.config import EmulatorConfig, FaultRule, key_id
from klingflow.emulator.control import control_router
from klingflow.emulator.echo import echo_input
from klingflow.emulator.faults import (
    FILE_FAULTS,
    REQUEST_FAULTS,
    TASK_FAULTS,
    FaultBook,
    apply_fault,
)
from klingflow.emulator.files import GONE_MESSAGE, RenderCache, file_response, find_output
from klingflow.emulator.rate_limits import RateWindows
from klingflow.emulator.responses import OPENAI, PIAPI, Dialect, envelope, error
from klingflow.emulator.stats import Stats
from klingflow.emulator.tasks import (
    CreditError,
    EmulatedTask,
    OriginError,
    OverConcurrencyError,
    TaskStore,
    Transition,
)
from klingflow.emulator.webhooks import WebhookSender
from klingflow.errors import InvalidRequestError
from klingflow.piapi import parse_task_request
from klingflow.piapi.models import TERMINAL_STATUSES
from klingflow.redaction import MASK

__all__ = ["Emulator", "create_app", "key_id"]

TICK_SECONDS = 0.02
"""How often (real time) tasks move on when nobody asks, so their webhooks fire on time."""
_MASK = MASK  # keys read back masked; a PATCH of masks keeps the keys
_logger = logging.getLogger(__name__)


class Emulator:
    """The emulator's state and its FastAPI app; one instance per server."""

    def __init__(self, config: EmulatorConfig, *, files_dir: Path | None = None) -> None:
        self.initial_config = config
        self.renders = RenderCache(
            files_dir or Path(tempfile.mkdtemp(prefix="klingflow-emulator-"))
        )
        self._ticker: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._scheduled = asyncio.Event()  # set by the store: wakes an idle ticker (lifespan)
        self._setup(config)

    def _setup(self, config: EmulatorConfig) -> None:
        """Fresh state for `config`: tasks, stats, faults, clock and random streams."""
        self.config = config
        # Separate random streams, so that e.g. a webhook firing between two requests (which
        # depends on wall-clock timing) cannot change the next task id or fault decision,
        # and task ids depend only on the seed and how many tasks came before.
        self.rng = random.Random()  # task ids
        self._chat_ids = random.Random()  # chat completion ids
        self._failures = random.Random()  # fail_probability draws
        self.clock = Clock(config.time_scale)
        self.faults = FaultBook(random.Random())
        self.faults.load(config.faults)
        self.stats = Stats()
        self.store = TaskStore(
            config,
            self.clock,
            self.rng,
            on_transition=self._on_transition,
            on_schedule=lambda: self._scheduled.set(),
        )
        self.webhooks = WebhookSender(
            lambda: self.config, self.clock, random.Random(), self._on_webhook_attempt
        )
        self._reseed(config.seed)
        self._rate_windows = RateWindows()

    def _reseed(self, seed: int | None) -> None:
        """Seed every stream from `seed`, or (None) from the system's randomness.

        Without a seed, task ids differ between runs, restarts and emulators, as PiAPI's
        UUIDs do: a run log that outlives an emulator must never see an id again.
        """
        self.rng.seed(seed)
        for stream, name in (
            (self._failures, "failures"),
            (self._chat_ids, "chat"),
            (self.faults.rng, "faults"),
            (self.webhooks.rng, "webhooks"),
        ):
            stream.seed(None if seed is None else f"{name}:{seed}")

    # -- events -----------------------------------------------------------------------------

    def _on_transition(self, transition: Transition) -> None:
        task = transition.task
        hook = task.config.webhook_config if task.config else None
        if hook is None or not hook.endpoint:
            return
        if transition.status in TERMINAL_STATUSES or self.config.webhook_on_every_status:
            self.webhooks.send(hook.endpoint, hook.secret, task.to_json(), at=transition.at)

    def _on_webhook_attempt(self, task_id: str, ok: bool) -> None:
        task = self.store.tasks.get(task_id)
        key = task.key_id if task else None
        self.stats.bump("webhook_deliveries", key=key, task_id=task_id)
        if not ok:
            self.stats.bump("webhook_failures", key=key, task_id=task_id)

    # -- the request pipeline ---------------------------------------------------------------

    async def api(
        self,
        request: Request,
        counter: str,
        handler: Callable[[str], Awaitable[Response]],
        *,
        dialect: Dialect = PIAPI,
    ) -> Response:
        """Run one API request through the pipeline; `handler(key_id)` makes the answer.

        `counter` names the `Stats` field the request counts in, whether it succeeds or not:
        a refused request was still made, and tests count attempts.
        """
        api_key = dialect.read_key(request)
        key = key_id(api_key) if api_key else None
        self.stats.bump(counter, key=key, task_id=request.path_params.get("task_id"))
        if not api_key or (self.config.api_keys and api_key not in self.config.api_keys):
            return dialect.error(401, dialect.unauthorized, None)
        assert key is not None
        response = await self._respond(request, key, handler, dialect)
        if response.status_code == 429:
            self.stats.bump("rate_limited", key=key)
        return response

    async def _respond(
        self,
        request: Request,
        key: str,
        handler: Callable[[str], Awaitable[Response]],
        dialect: Dialect,
    ) -> Response:
        method, path = request.method, request.url.path
        before = self.faults.take(method=method, path=path, actions=REQUEST_FAULTS, phase="before")
        if before is not None:
            if before.action == "drop":
                # Read the body first: closing on unread bytes makes the kernel send a reset,
                # and the client would see that instead of a cut response, at random.
                await request.body()
            response = await self._fault(before, None, dialect)
            if response is not None:
                return response
        retry_after = self._rate_windows.retry_after(key, self.config.rate_limit)
        if retry_after is not None:
            return dialect.error(429, "rate limit exceeded", {"Retry-After": str(retry_after)})
        # Taken only now, so that a request refused above does not use up an "after" hit.
        after = self.faults.take(method=method, path=path, actions=REQUEST_FAULTS, phase="after")
        response = await handler(key)
        if after is not None:
            return await self._fault(after, response, dialect) or response
        return response

    async def _fault(
        self, fault: FaultRule, response: Response | None, dialect: Dialect
    ) -> Response | None:
        # The current stopping event: a reset replaces it.
        return await apply_fault(fault, response, dialect, stopping=self._stopping)

    # -- PiAPI endpoints --------------------------------------------------------------------

    async def create_task(self, request: Request, key: str) -> Response:
        """Validate as PiAPI does, then create (and bill) a task; its failure, if injected or
        drawn, is planned now so the task fails later, as a real generation would."""
        try:
            body = json.loads(await request.body())
        except ValueError:
            return error(400, "request body must be JSON")
        if not isinstance(body, dict):
            return error(400, "request body must be a JSON object")
        try:
            task_request, config = parse_task_request(body, strict=self.config.strict_inputs)
        except InvalidRequestError as invalid:
            return error(400, "; ".join(f"{f}: {rule}" for f, rule in invalid.problems))
        raw_input: dict[str, Any] = body["input"]
        known = type(task_request).input_names()
        extras = {k: v for k, v in raw_input.items() if k not in known}
        fail = self.faults.take(
            method="POST",
            path=request.url.path,
            actions=TASK_FAULTS,
            task_type=task_request.task_type,
        )
        planned = fail.error if fail is not None else None
        p_fail = self.config.fail_probability
        if planned is None and p_fail and self._failures.random() < p_fail:
            planned = self.config.generation_error
        try:
            task = self.store.create(
                key_id=key,
                request=task_request,
                config=config,
                raw_input=echo_input(task_request, extras),
                base_url=str(request.base_url).rstrip("/"),
                planned_error=planned,
            )
        except CreditError:
            return error(402, "failed to freeze credit: credit not enough")
        except OverConcurrencyError:
            return error(429, "too many concurrent tasks for this API key", {"Retry-After": "5"})
        except OriginError as origin:
            return error(
                400, f"input.origin_task_id: {origin} is not a completed Kling video of this key"
            )
        self.stats.bump("creates", key=key, task_id=task.task_id)
        return envelope(task.to_json())

    def _own_task(self, task_id: str, key: str) -> EmulatedTask | None:
        # Another key's task is "not found", as PiAPI answers, never "forbidden".
        self.store.advance()
        task = self.store.tasks.get(task_id)
        return task if task is not None and task.key_id == key else None

    async def get_task(self, task_id: str, key: str) -> Response:
        """The task as it stands now (transitions due are applied first)."""
        task = self._own_task(task_id, key)
        if task is None:
            return error(404, f"task {task_id} not found")
        return envelope(task.to_json())

    async def cancel_task(self, task_id: str, key: str) -> Response:
        """Cancel one task; PiAPI refuses (400) once it is processing."""
        task = self._own_task(task_id, key)
        if task is None:
            return error(404, f"task {task_id} not found")
        if not self.store.cancel(task):
            return error(
                400, f"task {task_id} is {task.status.value}: only pending tasks can be cancelled"
            )
        return envelope(task.to_json())

    async def cancel_tasks(self, request: Request, key: str) -> Response:
        """Cancel the key's tasks of a model created before a time, as PiAPI's bulk cancel;
        tasks too far along to cancel are skipped, not an error."""
        created_before = request.query_params.get("created_before", "")
        model = request.query_params.get("model", "")
        if not created_before.isdigit():
            return error(400, "created_before: required, a unix timestamp in seconds")
        if model not in ("kling", "kling-turbo", "midjourney", "suno", "luma", "all"):
            return error(400, "model: required, one of kling, midjourney, suno, luma, all")
        self.store.advance()
        cancelled = [
            task.task_id
            for task in list(self.store.tasks.values())
            if task.key_id == key
            and task.created_at < int(created_before)
            and model in ("all", task.model, task.model.split("-")[0])
            and self.store.cancel(task)
        ]
        return envelope({"cancelled_task_ids": cancelled, "count": len(cancelled)})

    async def account_info(self, key: str) -> Response:
        """The key's account and balance (see `accounts.account_json`)."""
        self.store.advance()
        return envelope(account_json(self.store, key))

    async def active_tasks(self, key: str) -> Response:
        """How many of the key's tasks are staged, pending and processing."""
        return envelope({"kling": self.store.counts(key)})

    # -- the OpenAI-compatible chat endpoint ------------------------------------------------

    async def chat_completion(self, request: Request, _key: str) -> Response:
        """A deterministic chat completion (see `chat`); its id comes from its own stream."""
        try:
            chat_request = chat.parse_chat_request(await request.body())
        except chat.ChatRequestError as invalid:
            return chat.openai_error(400, invalid.message, param=invalid.param, code=invalid.code)
        completion_id = f"chatcmpl-{self._chat_ids.getrandbits(96):024x}"
        return JSONResponse(
            chat.completion(
                chat_request, completion_id=completion_id, created=int(self.clock.now())
            )
        )

    # -- output files -----------------------------------------------------------------------

    async def file(self, request: Request, name: str) -> Response:
        """An output file: GET or HEAD, single byte ranges, 404 once retention is over."""
        self.store.advance()
        found = find_output(self.store, name)
        if found is None:
            return error(404, GONE_MESSAGE)
        task, output = found
        assert task.ended_at is not None
        if self.clock.now() > task.ended_at + self.config.retention_seconds:
            self.renders.forget(name)
            return error(404, GONE_MESSAGE)
        fault = self.faults.take(method=request.method, path=request.url.path, actions=FILE_FAULTS)
        if fault is not None and fault.action in ("error", "slow"):
            response = await self._fault(fault, None, PIAPI)
            if response is not None:
                return response
        path = await self.renders.path(name, output, config=self.config)
        data = await asyncio.to_thread(path.read_bytes)
        return file_response(request, name, data, fault)

    # -- state the control API changes ------------------------------------------------------

    def public_config(self) -> dict[str, Any]:
        """The config as the control API shows it: every API key masked."""
        data = self.config.model_dump(mode="json")
        data["api_keys"] = [_MASK] * len(self.config.api_keys)  # keys are secrets
        data["accounts"] = {
            name: [_MASK] * len(keys) for name, keys in self.config.accounts.items()
        }
        return data

    def configure(self, patch: Any) -> None:
        """Apply a partial config (top-level fields replaced whole); raise ValueError if bad.

        A new `seed` restarts the random streams; a raised concurrency limit promotes staged
        tasks at once. `api_keys` made only of the mask GET returns are left unchanged, so
        GET-then-PATCH round trips keep the keys (also those of `accounts`).
        """
        if not isinstance(patch, dict):
            raise ValueError("the config patch must be a JSON object")
        keys = patch.get("api_keys")
        if isinstance(keys, list) and keys and all(k == _MASK for k in keys):
            patch = {k: v for k, v in patch.items() if k != "api_keys"}
        accounts = patch.get("accounts")
        if (
            isinstance(accounts, dict)
            and accounts
            and all(
                isinstance(keys, list) and all(k == _MASK for k in keys)
                for keys in accounts.values()
            )
        ):
            patch = {k: v for k, v in patch.items() if k != "accounts"}
        merged = {**self.config.model_dump(), **patch}
        config = EmulatorConfig.model_validate(merged)
        if config.time_scale != self.clock.time_scale:
            self.clock.set_scale(config.time_scale)
        if "faults" in patch:
            self.faults.load(config.faults)
        self.config = self.store.config = config
        if "seed" in patch:
            self._reseed(config.seed)
        self.store.promote_all()

    async def reset(self, *, keep_config: bool) -> None:
        """Forget everything but (optionally) the config; in-flight webhooks are cancelled,
        and `slow` faults in flight answer 503 at once (so no request of a test that ended
        creates a task in the next one's state)."""
        old_webhooks = self.webhooks
        if self._stopping is not None:
            self._stopping.set()
            self._stopping = asyncio.Event()
        # Swap the state first, with no await in between, so nothing of the old state (a
        # tick, a delivery) can run against the new one.
        self._setup(self.config.model_copy(update={"faults": []}) if keep_config
                    else self.initial_config)  # fmt: skip
        self.renders.clear()
        await old_webhooks.aclose()

    # -- lifecycle --------------------------------------------------------------------------

    def interrupt(self) -> None:
        """End `slow` faults in flight now, with a 503 (callable from any thread).

        The server calls it before stopping, so that a 30 s delay cannot hold its shutdown.
        """
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stopping.set)

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: FastAPI) -> AsyncIterator[None]:
        """Run the lifecycle ticker while the app serves; stop deliveries when it ends."""
        self._loop, self._stopping = asyncio.get_running_loop(), asyncio.Event()
        self._scheduled = asyncio.Event()  # of this loop (a server may be started again)
        self.renders.files_dir.mkdir(parents=True, exist_ok=True)
        self._ticker = asyncio.create_task(self._tick())
        try:
            yield
        finally:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            await self.webhooks.aclose()

    async def _tick(self) -> None:
        """Move tasks on (and fire their webhooks) even when nobody is asking; with no task
        due to move, sleep until one is scheduled (an idle emulator, as a test session's is
        between tests, woke 50 times a second for nothing: 7 ms of CPU a second)."""
        while True:
            try:
                self.store.advance()
            except Exception:  # a bug must not stop the clock for every later task
                _logger.exception("the emulator's lifecycle tick failed")
            if self.store.idle:
                self._scheduled.clear()  # no await since the check: nothing was scheduled
                await self._scheduled.wait()
            else:
                await asyncio.sleep(TICK_SECONDS)


def create_app(config: EmulatorConfig | None = None, *, files_dir: Path | None = None) -> FastAPI:
    """The emulator as an ASGI app (serve it with uvicorn, or use `EmulatorServer`)."""
    emulator = Emulator(config or EmulatorConfig(), files_dir=files_dir)
    app = FastAPI(
        title="klingflow PiAPI emulator",
        description="PiAPI's Kling task API, emulated locally. See docs/emulator.md.",
        lifespan=emulator.lifespan,
    )
    app.state.emulator = emulator

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        # Unknown paths and wrong methods answer in PiAPI's envelope too, or in OpenAI's
        # error shape under the OpenAI-compatible /v1/.
        dialect = OPENAI if request.url.path.startswith("/v1/") else PIAPI
        return dialect.error(exc.status_code, str(exc.detail), exc.headers)

    @app.post("/api/v1/task")
    async def create(request: Request) -> Response:
        return await emulator.api(
            request, "create_requests", lambda key: emulator.create_task(request, key)
        )

    @app.get("/api/v1/task/{task_id}")
    async def get(request: Request, task_id: str) -> Response:
        return await emulator.api(request, "gets", lambda key: emulator.get_task(task_id, key))

    @app.delete("/api/v1/task/{task_id}")
    @app.post("/api/v1/task/{task_id}/cancel")
    async def cancel(request: Request, task_id: str) -> Response:
        return await emulator.api(
            request, "cancels", lambda key: emulator.cancel_task(task_id, key)
        )

    @app.delete("/api/v1/tasks")
    async def cancel_many(request: Request) -> Response:
        return await emulator.api(
            request, "cancels", lambda key: emulator.cancel_tasks(request, key)
        )

    @app.get("/account/info")
    async def account(request: Request) -> Response:
        return await emulator.api(request, "account_requests", emulator.account_info)

    @app.get("/account/active_tasks")
    async def active(request: Request) -> Response:
        return await emulator.api(request, "account_requests", emulator.active_tasks)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await emulator.api(
            request,
            "chat_requests",
            lambda key: emulator.chat_completion(request, key),
            dialect=OPENAI,
        )

    @app.api_route("/files/{name}", methods=["GET", "HEAD"])
    async def files(request: Request, name: str) -> Response:
        return await emulator.file(request, name)

    app.include_router(control_router(emulator))
    return app
