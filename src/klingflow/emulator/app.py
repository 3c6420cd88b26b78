"""PiAPI's task API for Kling over real HTTP, plus the `/_emulator/` control API.

Routes mirror PiAPI (`/api/v1/task`, `/account/*`) and answer in its `{code, data, message}`
envelope. Every API request passes, in order: the key check (401), the injected faults of
phase "before", the per-key rate limit (429 + Retry-After), the handler, then the faults of
phase "after". `/_emulator/stats` counts what clients really did: it is the witness tests
and benchmarks read.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
import re
import shutil
import tempfile
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from klingflow.emulator import media
from klingflow.emulator.config import EmulatorConfig, FaultRule
from klingflow.emulator.faults import REQUEST_FAULTS, FaultBook
from klingflow.emulator.tasks import (
    Clock,
    CreditError,
    EmulatedTask,
    OriginError,
    OutputFile,
    OverConcurrencyError,
    TaskStore,
    Transition,
    format_time,
)
from klingflow.errors import InvalidRequestError
from klingflow.piapi.kling import parse_task_request
from klingflow.piapi.models import TaskStatus

__all__ = ["Emulator", "create_app", "key_id"]

TICK_SECONDS = 0.02
TERMINAL = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED})
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def key_id(api_key: str) -> str:
    """A stable, non-secret name for an API key (stats show this, never the key)."""
    return "key-" + hashlib.sha256(api_key.encode()).hexdigest()[:12]


def envelope(data: Any, *, status: int = 200, message: str = "success") -> JSONResponse:
    return JSONResponse({"code": status, "data": data, "message": message}, status_code=status)


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        {"code": status, "data": None, "message": message}, status_code=status, headers=headers
    )


@dataclass
class Counters:
    creates: int = 0
    create_requests: int = 0
    gets: int = 0
    cancels: int = 0
    rate_limited: int = 0
    webhook_deliveries: int = 0
    webhook_failures: int = 0


@dataclass
class Stats:
    totals: Counters = field(default_factory=Counters)
    keys: dict[str, Counters] = field(default_factory=dict)
    tasks: dict[str, Counters] = field(default_factory=dict)

    def bump(self, name: str, *, key: str | None = None, task_id: str | None = None) -> None:
        targets = [self.totals]
        if key is not None:
            targets.append(self.keys.setdefault(key, Counters()))
        if task_id is not None:
            targets.append(self.tasks.setdefault(task_id, Counters()))
        for counters in targets:
            setattr(counters, name, getattr(counters, name) + 1)


class _CutResponse(Response):
    """Headers promise `body`, then the connection closes after `keep` bytes of it."""

    def __init__(self, body: bytes, *, keep: int, status: int = 200, **headers: str) -> None:
        super().__init__(status_code=status)
        self._payload, self._keep, self._extra = body, keep, headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(k.replace("_", "-").encode(), v.encode()) for k, v in self._extra.items()]
        headers.append((b"content-length", str(len(self._payload)).encode()))
        await send({"type": "http.response.start", "status": self.status_code, "headers": headers})
        await send(
            {"type": "http.response.body", "body": self._payload[: self._keep], "more_body": True}
        )
        # Returning with the body unfinished makes the server drop the connection.


class Emulator:
    """The emulator's state and its FastAPI app; one instance per server."""

    def __init__(self, config: EmulatorConfig, *, files_dir: Path | None = None) -> None:
        self.initial_config = config
        self.files_dir = files_dir or Path(tempfile.mkdtemp(prefix="klingflow-emulator-"))
        self._render_locks: dict[str, asyncio.Lock] = {}
        self._ticker: asyncio.Task[None] | None = None
        self._setup(config)

    def _setup(self, config: EmulatorConfig) -> None:
        from klingflow.emulator.webhooks import WebhookSender

        self.config = config
        self.rng = random.Random(config.seed)
        self.clock = Clock(config.time_scale)
        self.faults = FaultBook(self.rng)
        self.faults.load(config.faults)
        self.stats = Stats()
        self.store = TaskStore(config, self.clock, self.rng, on_transition=self._on_transition)
        self.webhooks = WebhookSender(
            lambda: self.config, self.clock, self.rng, self._on_webhook_attempt
        )
        self._windows: dict[str, deque[float]] = {}

    # -- events -----------------------------------------------------------------------------

    def _on_transition(self, transition: Transition) -> None:
        task = transition.task
        hook = task.config.webhook_config if task.config else None
        if hook is None or not hook.endpoint:
            return
        if transition.status in TERMINAL or self.config.webhook_on_every_status:
            self.webhooks.send(hook.endpoint, hook.secret, task.to_json())

    def _on_webhook_attempt(self, task_id: str, ok: bool) -> None:
        task = self.store.tasks.get(task_id)
        key = task.key_id if task else None
        self.stats.bump("webhook_deliveries", key=key, task_id=task_id)
        if not ok:
            self.stats.bump("webhook_failures", key=key, task_id=task_id)

    # -- the request pipeline ---------------------------------------------------------------

    async def api(
        self, request: Request, counter: str, handler: Callable[[str], Awaitable[Response]]
    ) -> Response:
        api_key = request.headers.get("x-api-key", "")
        key = key_id(api_key) if api_key else None
        self.stats.bump(counter, key=key, task_id=request.path_params.get("task_id"))
        if not api_key or (self.config.api_keys and api_key not in self.config.api_keys):
            return error(401, "Unauthorized: invalid or missing API key (x-api-key header)")
        assert key is not None
        fault = self.faults.take(
            method=request.method, path=request.url.path, actions=REQUEST_FAULTS
        )
        if fault is not None and fault.phase == "before":
            response = await self._apply(fault, None)
            if response is not None:
                return response
        retry_after = self._over_rate_limit(key)
        if retry_after is not None:
            self.stats.bump("rate_limited", key=key)
            return error(429, "rate limit exceeded", {"Retry-After": str(retry_after)})
        response = await handler(key)
        if response.status_code == 429:
            self.stats.bump("rate_limited", key=key)
        if fault is not None and fault.phase == "after":
            return await self._apply(fault, response) or response
        return response

    async def _apply(self, fault: FaultRule, response: Response | None) -> Response | None:
        if fault.action == "slow":
            await asyncio.sleep(fault.delay_seconds)
            return None
        if fault.action == "error":
            return error(fault.status, "internal server error (injected)")
        if fault.action == "rate_limit":
            headers = {}
            if fault.retry_after_seconds is not None:
                headers["Retry-After"] = str(max(0, round(fault.retry_after_seconds)))
            return error(429, "rate limit exceeded (injected)", headers)
        body = bytes(response.body) if response is not None else b'{"code": 200, "data": {}}'
        if fault.action == "malformed":
            return Response(
                body[: max(1, int(len(body) * fault.fraction))], media_type="application/json"
            )
        assert fault.action == "drop"
        return _CutResponse(
            body, keep=int(len(body) * fault.fraction), content_type="application/json"
        )

    def _over_rate_limit(self, key: str) -> int | None:
        """Seconds to wait (for Retry-After) when the key is over its window, else None."""
        limit = self.config.rate_limit
        if limit is None:
            return None
        now = time.monotonic()
        window = self._windows.setdefault(key, deque())
        while window and window[0] <= now - limit.window_seconds:
            window.popleft()
        if len(window) >= limit.requests:
            return max(1, int(window[0] + limit.window_seconds - now + 0.999))
        window.append(now)
        return None

    # -- PiAPI endpoints --------------------------------------------------------------------

    async def create_task(self, request: Request, key: str) -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return error(400, "request body must be JSON")
        if not isinstance(body, dict):
            return error(400, "request body must be a JSON object")
        try:
            task_request, config = parse_task_request(body)
        except InvalidRequestError as invalid:
            return error(400, "; ".join(f"{f}: {rule}" for f, rule in invalid.problems))
        fail = self.faults.take(
            method="POST",
            path=request.url.path,
            actions={"fail_task"},
            task_type=task_request.task_type,
        )
        planned = fail.error if fail is not None else None
        p_fail = self.config.fail_probability
        if planned is None and p_fail and self.rng.random() < p_fail:
            planned = self.config.generation_error
        try:
            task = self.store.create(
                key_id=key,
                request=task_request,
                config=config,
                raw_input=task_request.to_input(),
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
        self.store.advance()
        task = self.store.tasks.get(task_id)
        return task if task is not None and task.key_id == key else None

    async def get_task(self, task_id: str, key: str) -> Response:
        task = self._own_task(task_id, key)
        if task is None:
            return error(404, f"task {task_id} not found")
        return envelope(task.to_json())

    async def cancel_task(self, task_id: str, key: str) -> Response:
        task = self._own_task(task_id, key)
        if task is None:
            return error(404, f"task {task_id} not found")
        if not self.store.cancel(task):
            return error(
                400, f"task {task_id} is {task.status.value}: only pending tasks can be cancelled"
            )
        return envelope(task.to_json())

    async def cancel_tasks(self, request: Request, key: str) -> Response:
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
            and model in ("all", task.model)
            and self.store.cancel(task)
        ]
        return envelope({"cancelled_task_ids": cancelled, "count": len(cancelled)})

    async def account_info(self, key: str) -> Response:
        balance = self.store.balance_usd()
        return envelope(
            {
                "account_name": "klingflow-emulator",
                "account_id": key,
                "credits": None if balance is None else int(balance * 10_000_000),
                "equivalent_in_usd": None if balance is None else float(balance),
                "spent_usd": self.store.spent_points / 10_000_000,
            }
        )

    async def active_tasks(self, key: str) -> Response:
        return envelope({"kling": self.store.counts(key)})

    # -- output files -----------------------------------------------------------------------

    async def file(self, request: Request, name: str) -> Response:
        fault = self.faults.take(
            method=request.method,
            path=request.url.path,
            actions={"error", "slow", "drop", "truncate"},
        )
        if fault is not None and fault.action in ("error", "slow"):
            response = await self._apply(fault, None)
            if response is not None:
                return response
        self.store.advance()
        found = self._find_file(name)
        if found is None:
            return error(404, "file not found (outputs are deleted after the retention period)")
        task, output = found
        assert task.ended_at is not None
        if self.clock.now() > task.ended_at + self.config.retention_seconds:
            (self.files_dir / name).unlink(missing_ok=True)
            return error(404, "file not found (outputs are deleted after the retention period)")
        path = await self._render(name, output)
        media_type = "image/png" if name.endswith(".png") else "video/mp4"
        data = await asyncio.to_thread(path.read_bytes)
        start, end, status = 0, len(data) - 1, 200
        headers = {"accept_ranges": "bytes", "content_type": media_type}
        if match := _RANGE.match(request.headers.get("range", "")):
            first, last = match.groups()
            if first:
                start, end = int(first), int(last) if last else end
            elif last:
                start = max(0, len(data) - int(last))
            if start > end or start >= len(data):
                return Response(status_code=416, headers={"content-range": f"bytes */{len(data)}"})
            end, status = min(end, len(data) - 1), 206
            headers["content_range"] = f"bytes {start}-{end}/{len(data)}"
        body = data[start : end + 1] if request.method == "GET" else b""
        if fault is not None and fault.action in ("truncate", "drop"):
            return _CutResponse(
                body, keep=int(len(body) * fault.fraction), status=status, **headers
            )
        return Response(
            body,
            status_code=status,
            headers={k.replace("_", "-"): v for k, v in headers.items()},
        )

    def _find_file(self, name: str) -> tuple[EmulatedTask, OutputFile] | None:
        task = self.store.tasks.get(name[:36])
        if task is None or task.status != TaskStatus.COMPLETED:
            return None
        for output in task.files:
            if name == output.name or name == output.name.replace(".mp4", ".png"):
                return task, output
        return None

    async def _render(self, name: str, output: OutputFile) -> Path:
        path = self.files_dir / name
        lock = self._render_locks.setdefault(name, asyncio.Lock())
        async with lock:
            if not path.exists():
                await asyncio.to_thread(self._render_sync, path, output)
        return path

    def _render_sync(self, path: Path, output: OutputFile) -> None:
        width, height = media.frame_size(
            output.aspect_ratio, output.resolution, max_height=self.config.video_max_height
        )
        if path.suffix == ".png":
            media.render_cover(path, prompt=output.prompts[0], width=width, height=height)
            return
        shots = [
            media.Shot(prompt, seconds)
            for prompt, seconds in zip(output.prompts, output.shot_seconds, strict=True)
        ]
        media.render_video(
            path,
            shots=shots,
            width=width,
            height=height,
            fps=self.config.video_fps,
            with_audio=output.has_audio,
        )

    # -- control API ------------------------------------------------------------------------

    def public_config(self) -> dict[str, Any]:
        data = self.config.model_dump(mode="json")
        data["api_keys"] = ["***"] * len(self.config.api_keys)  # keys are secrets
        return data

    def configure(self, patch: dict[str, Any]) -> None:
        merged = {**self.config.model_dump(), **patch}
        config = EmulatorConfig.model_validate(merged)
        if config.time_scale != self.clock.time_scale:
            self.clock.set_scale(config.time_scale)
        if "faults" in patch:
            self.faults.load(config.faults)
        self.config = self.store.config = config

    async def reset(self, *, keep_config: bool) -> None:
        await self.webhooks.aclose()
        shutil.rmtree(self.files_dir, ignore_errors=True)
        self.files_dir.mkdir(parents=True, exist_ok=True)
        self._render_locks.clear()
        self._setup(self.config.model_copy(update={"faults": []}) if keep_config
                    else self.initial_config)  # fmt: skip

    def stats_json(self) -> dict[str, Any]:
        self.store.advance()
        return {
            **asdict(self.stats.totals),
            "peak_concurrency": self.store.peak_concurrency,
            "keys": {
                key: {**asdict(c), "peak_concurrency": self.store.peak_by_key.get(key, 0)}
                for key, c in self.stats.keys.items()
            },
            "tasks": {task_id: asdict(c) for task_id, c in self.stats.tasks.items()},
        }

    # -- lifecycle --------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: FastAPI) -> AsyncIterator[None]:
        self.files_dir.mkdir(parents=True, exist_ok=True)
        self._ticker = asyncio.create_task(self._tick())
        try:
            yield
        finally:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            await self.webhooks.aclose()

    async def _tick(self) -> None:
        """Move tasks on (and fire their webhooks) even when nobody is asking."""
        while True:
            self.store.advance()
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
        return await emulator.api(request, "gets", emulator.account_info)

    @app.get("/account/active_tasks")
    async def active(request: Request) -> Response:
        return await emulator.api(request, "gets", emulator.active_tasks)

    @app.api_route("/files/{name}", methods=["GET", "HEAD"])
    async def files(request: Request, name: str) -> Response:
        return await emulator.file(request, name)

    @app.get("/_emulator/config")
    async def get_config() -> dict[str, Any]:
        return emulator.public_config()

    @app.patch("/_emulator/config")
    async def patch_config(request: Request) -> Response:
        try:
            emulator.configure(await request.json())
        except ValueError as invalid:
            return error(400, f"invalid emulator config: {invalid}")
        return JSONResponse(emulator.public_config())

    @app.post("/_emulator/reset")
    async def reset(request: Request) -> dict[str, bool]:
        body = await request.body()
        keep = bool(json.loads(body).get("keep_config")) if body else False
        await emulator.reset(keep_config=keep)
        return {"reset": True}

    @app.get("/_emulator/time")
    async def get_time() -> dict[str, Any]:
        now = emulator.clock.now()
        return {
            "now": format_time(now),
            "epoch_seconds": now,
            "time_scale": emulator.clock.time_scale,
        }

    @app.post("/_emulator/time")
    async def set_time(request: Request) -> dict[str, Any]:
        body = await request.json()
        if "time_scale" in body:
            emulator.configure({"time_scale": float(body["time_scale"])})
        if "advance_seconds" in body:
            emulator.clock.advance(float(body["advance_seconds"]))
            emulator.store.advance()
        return await get_time()

    @app.get("/_emulator/stats")
    async def stats() -> dict[str, Any]:
        return emulator.stats_json()

    @app.get("/_emulator/faults")
    async def faults() -> list[dict[str, object]]:
        return emulator.faults.rules()

    @app.post("/_emulator/faults")
    async def add_faults(request: Request) -> Response:
        body = await request.json()
        try:
            for rule in body if isinstance(body, list) else [body]:
                emulator.faults.add(FaultRule.model_validate(rule))
        except ValueError as invalid:
            return error(400, f"invalid fault rule: {invalid}")
        return JSONResponse(emulator.faults.rules())

    @app.delete("/_emulator/faults")
    async def clear_faults() -> dict[str, bool]:
        emulator.faults.clear()
        return {"cleared": True}

    @app.get("/_emulator/tasks")
    async def tasks() -> dict[str, Any]:
        emulator.store.advance()
        return {"tasks": [task.to_json() for task in emulator.store.tasks.values()]}

    return app
