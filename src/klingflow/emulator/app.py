"""PiAPI's task API for Kling over real HTTP, plus the `/_emulator/` control API.

Routes mirror PiAPI (`/api/v1/task`, `/account/*`) and answer in its `{code, data, message}`
envelope; the OpenAI-compatible `/v1/chat/completions` (see `chat`) answers in OpenAI's
shape instead. Every API request passes, in order: the key check (401), the injected faults
of phase "before", the per-key rate limit (429 + Retry-After), the handler, then the faults
of phase "after". `/_emulator/stats` counts what clients really did: it is the witness tests
and benchmarks read.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import random
import re
import shutil
import tempfile
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.types import Receive, Scope, Send

from klingflow.emulator import chat, media
from klingflow.emulator.config import EmulatorConfig, FaultRule, key_id
from klingflow.emulator.echo import echo_input
from klingflow.emulator.faults import REQUEST_FAULTS, FaultBook
from klingflow.emulator.tasks import (
    WATERMARK,
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
from klingflow.piapi.models import TaskStatus, points_to_usd, usd_to_points
from klingflow.redaction import MASK

__all__ = ["Emulator", "create_app", "key_id"]

TICK_SECONDS = 0.02
TERMINAL = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED})
STOPPING_MESSAGE = "service unavailable (the emulator was reset or is stopping)"
GONE_MESSAGE = "file not found (outputs are deleted after the retention period)"
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_MASK = MASK  # keys read back masked; a PATCH of masks keeps the keys
ACCOUNT_NAME = "klingflow-emulator"
REUSED_LABEL = "emulated video"
"""What shared renders (`reuse_renders`) show in place of a prompt."""
_logger = logging.getLogger(__name__)


def envelope(data: Any, *, status: int = 200, message: str = "success") -> JSONResponse:
    return JSONResponse({"code": status, "data": data, "message": message}, status_code=status)


def error(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        {"code": status, "data": None, "message": message}, status_code=status, headers=headers
    )


ErrorRenderer = Callable[[int, str, Mapping[str, str] | None], Response]


@dataclass(frozen=True)
class Dialect:
    """How a family of API routes takes its key and words its errors."""

    read_key: Callable[[Request], str]
    error: ErrorRenderer
    unauthorized: str


PIAPI = Dialect(
    read_key=lambda request: request.headers.get("x-api-key", ""),
    error=error,
    unauthorized="Unauthorized: invalid or missing API key (x-api-key header)",
)
OPENAI = Dialect(
    read_key=chat.bearer_key,
    error=chat.openai_error,
    unauthorized=chat.UNAUTHORIZED,
)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.lower()
    except ValueError:  # a code HTTP does not name, e.g. 599
        return "server error"


class _UnsatisfiableRangeError(Exception):
    """The Range header asks for bytes the file does not have (answer 416)."""


def _byte_range(header: str, size: int) -> tuple[int, int] | None:
    """First and last byte a single-range `Range` header asks for; None for the whole file.

    Headers we do not serve (other units, several ranges, `bytes=-`) are ignored, as RFC
    9110 allows; ranges that are invalid or past the end raise `_UnsatisfiableRangeError`.
    """
    match = _RANGE.match(header.strip())
    if match is None or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if first:
        start = int(first)
        end = int(last) if last else size - 1
        if start >= size or end < start:
            raise _UnsatisfiableRangeError
        return start, min(end, size - 1)
    suffix = int(last)  # "bytes=-N": the last N bytes
    if suffix == 0 or size == 0:
        raise _UnsatisfiableRangeError
    return max(0, size - suffix), size - 1


@dataclass
class Counters:
    creates: int = 0
    create_requests: int = 0
    gets: int = 0
    cancels: int = 0
    account_requests: int = 0
    chat_requests: int = 0
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

    def __init__(
        self, body: bytes, *, keep: int, status: int = 200, headers: dict[str, str]
    ) -> None:
        super().__init__(status_code=status)
        self._payload, self._keep = body, keep
        self._extra = {k: v for k, v in headers.items() if k.lower() != "content-length"}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(k.encode(), v.encode()) for k, v in self._extra.items()]
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
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._setup(config)

    def _setup(self, config: EmulatorConfig) -> None:
        from klingflow.emulator.webhooks import WebhookSender

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
        self.store = TaskStore(config, self.clock, self.rng, on_transition=self._on_transition)
        self.webhooks = WebhookSender(
            lambda: self.config, self.clock, random.Random(), self._on_webhook_attempt
        )
        self._reseed(config.seed)
        self._windows: dict[str, deque[float]] = {}

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
        if transition.status in TERMINAL or self.config.webhook_on_every_status:
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
            response = await self._apply(before, None, dialect)
            if response is not None:
                return response
        retry_after = self._over_rate_limit(key)
        if retry_after is not None:
            return dialect.error(429, "rate limit exceeded", {"Retry-After": str(retry_after)})
        # Taken only now, so that a request refused above does not use up an "after" hit.
        after = self.faults.take(method=method, path=path, actions=REQUEST_FAULTS, phase="after")
        response = await handler(key)
        if after is not None:
            return await self._apply(after, response, dialect) or response
        return response

    async def _apply(
        self, fault: FaultRule, response: Response | None, dialect: Dialect
    ) -> Response | None:
        if fault.action == "slow":
            stopping = self._stopping  # the current one: a reset replaces it
            if stopping is None:  # served without our lifespan: nothing to cut it
                await asyncio.sleep(fault.delay_seconds)
                return None
            try:
                await asyncio.wait_for(stopping.wait(), timeout=fault.delay_seconds)
            except TimeoutError:
                return None
            return dialect.error(503, STOPPING_MESSAGE, None)
        if fault.action == "error":
            return dialect.error(fault.status, f"{_phrase(fault.status)} (injected)", None)
        if fault.action == "rate_limit":
            headers = {}
            if fault.retry_after_seconds is not None:
                headers["Retry-After"] = str(max(0, round(fault.retry_after_seconds)))
            return dialect.error(429, "rate limit exceeded (injected)", headers)
        if response is None:
            # Before the handler nothing was done, so the cut answer is an error of the
            # rule's status: a gateway that answers 2xx has taken the request.
            response = dialect.error(fault.status, f"{_phrase(fault.status)} (injected)", None)
        body, status = bytes(response.body), response.status_code
        if fault.action == "malformed":
            return Response(
                body[: max(1, int(len(body) * fault.fraction))],
                status_code=status,
                media_type="application/json",
            )
        assert fault.action == "drop"
        return _CutResponse(
            body,
            keep=int(len(body) * fault.fraction),
            status=status,
            headers={"content-type": "application/json"},
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
            task_request, config = parse_task_request(body, strict=self.config.strict_inputs)
        except InvalidRequestError as invalid:
            return error(400, "; ".join(f"{f}: {rule}" for f, rule in invalid.problems))
        raw_input: dict[str, Any] = body["input"]
        known = type(task_request).input_names()
        extras = {k: v for k, v in raw_input.items() if k not in known}
        fail = self.faults.take(
            method="POST",
            path=request.url.path,
            actions={"fail_task"},
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
            and model in ("all", task.model, task.model.split("-")[0])
            and self.store.cancel(task)
        ]
        return envelope({"cancelled_task_ids": cancelled, "count": len(cancelled)})

    async def account_info(self, key: str) -> Response:
        """Both shapes PiAPI clients read: the current one and the older flat one.

        Each key is its own account unless `accounts` groups keys under one name. Credits
        are points (1 USD = 10,000,000), as `usage`; `null` where the emulator has no
        balance (`balance_usd: None`, unlimited).
        """
        self.store.advance()
        account = self.config.account_of(key)
        left = self.store.balance_points(key)
        spent = self.store.spent_points.get(account, 0)
        frozen = self.store.reserved_points.get(account, 0)
        name = account if account != key else ACCOUNT_NAME
        total = None if self.config.balance_usd is None else usd_to_points(self.config.balance_usd)
        usd = None if left is None else float(points_to_usd(left))
        return envelope(
            {
                "id": account,
                "name": name,
                "plan": "payg",
                "type": "user",
                "is_enable": True,
                "credit_pack_info": {
                    "available_credits": left,
                    "used_credits": spent,
                    "frozen_credits": frozen,
                    "total_credits": total,
                },
                "equivalent_in_usd": usd,
                # The older flat shape, still read by some clients.
                "account_name": name,
                "account_id": account,
                "credits": left,
                "spent_usd": float(points_to_usd(spent)),
            }
        )

    async def active_tasks(self, key: str) -> Response:
        return envelope({"kling": self.store.counts(key)})

    # -- the OpenAI-compatible chat endpoint ------------------------------------------------

    async def chat_completion(self, request: Request, _key: str) -> Response:
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
        found = self._find_file(name)
        if found is None:
            return error(404, GONE_MESSAGE)
        task, output = found
        assert task.ended_at is not None
        if self.clock.now() > task.ended_at + self.config.retention_seconds:
            (self.files_dir / name).unlink(missing_ok=True)
            return error(404, GONE_MESSAGE)
        fault = self.faults.take(
            method=request.method,
            path=request.url.path,
            actions={"error", "slow", "drop", "truncate"},
        )
        if fault is not None and fault.action in ("error", "slow"):
            response = await self._apply(fault, None, PIAPI)
            if response is not None:
                return response
        path = await self._render(name, output)
        data = await asyncio.to_thread(path.read_bytes)
        size = len(data)
        status, start, end = 200, 0, size - 1
        headers = {
            "accept-ranges": "bytes",
            "content-type": "image/png" if name.endswith(".png") else "video/mp4",
            "etag": f'"{hashlib.sha256(data).hexdigest()[:16]}"',
        }
        try:
            wanted = _byte_range(request.headers.get("range", ""), size)
        except _UnsatisfiableRangeError:
            return Response(status_code=416, headers={"content-range": f"bytes */{size}"})
        if wanted is not None:
            (start, end), status = wanted, 206
            headers["content-range"] = f"bytes {start}-{end}/{size}"
        body = data[start : end + 1]
        if request.method == "HEAD":
            # The length of what a GET would send; the server sends no body for HEAD.
            headers["content-length"] = str(len(body))
            return Response(b"", status_code=status, headers=headers)
        if fault is not None and fault.action in ("truncate", "drop"):
            return _CutResponse(
                body, keep=int(len(body) * fault.fraction), status=status, headers=headers
            )
        return Response(body, status_code=status, headers=headers)

    def _find_file(self, name: str) -> tuple[EmulatedTask, OutputFile] | None:
        task = self.store.tasks.get(name[:36])
        if task is None or task.status != TaskStatus.COMPLETED:
            return None
        for output in task.files:
            if name == output.name or name == output.name.replace(".mp4", ".png"):
                return task, output
            if name == output.watermarked_name:
                return task, dataclasses.replace(output, is_watermarked=True)
        return None

    async def _render(self, name: str, output: OutputFile) -> Path:
        if self.config.reuse_renders:
            name, output = self._shared_render(name, output)
        path = self.files_dir / name
        lock = self._render_locks.setdefault(name, asyncio.Lock())
        async with lock:
            if not path.exists():
                await asyncio.to_thread(self._render_sync, path, output)
        return path

    def _shared_render(self, name: str, output: OutputFile) -> tuple[str, OutputFile]:
        """The file name and label-only output that every file of this shape shares.

        The shape is what the pixels and samples depend on once prompts are not drawn:
        shot durations (and so their number), frame size, fps and audio; covers only
        depend on the frame size.
        """
        suffix = Path(name).suffix
        shape: tuple[object, ...] = (suffix, output.width, output.height, output.is_watermarked)
        if suffix == ".mp4":
            shape += (output.shot_seconds, self.config.video_fps, output.has_audio)
        digest = hashlib.sha256(repr(shape).encode()).hexdigest()[:16]
        labels = (REUSED_LABEL,) * len(output.prompts)
        return f"shared-{digest}{suffix}", dataclasses.replace(output, prompts=labels)

    def _render_sync(self, path: Path, output: OutputFile) -> None:
        # The size planned at submit, which the task's `works` already report.
        width, height = output.width, output.height
        if output.is_watermarked:
            output = dataclasses.replace(
                output, prompts=tuple(WATERMARK + p for p in output.prompts)
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
        shutil.rmtree(self.files_dir, ignore_errors=True)
        self.files_dir.mkdir(parents=True, exist_ok=True)
        self._render_locks.clear()
        await old_webhooks.aclose()

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

    def interrupt(self) -> None:
        """End `slow` faults in flight now, with a 503 (callable from any thread).

        The server calls it before stopping, so that a 30 s delay cannot hold its shutdown.
        """
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stopping.set)

    @contextlib.asynccontextmanager
    async def lifespan(self, _app: FastAPI) -> AsyncIterator[None]:
        self._loop, self._stopping = asyncio.get_running_loop(), asyncio.Event()
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
            try:
                self.store.advance()
            except Exception:  # a bug must not stop the clock for every later task
                _logger.exception("the emulator's lifecycle tick failed")
            await asyncio.sleep(TICK_SECONDS)


async def _json_object(request: Request) -> dict[str, Any] | None:
    """The request's JSON object body ({} when empty), or None when it is not one."""
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


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
    async def reset(request: Request) -> Response:
        body = await _json_object(request)
        if body is None:
            return error(400, 'the reset body must be a JSON object such as {"keep_config": true}')
        await emulator.reset(keep_config=bool(body.get("keep_config")))
        return JSONResponse({"reset": True})

    @app.get("/_emulator/time")
    async def get_time() -> dict[str, Any]:
        now = emulator.clock.now()
        return {
            "now": format_time(now),
            "epoch_seconds": now,
            "time_scale": emulator.clock.time_scale,
        }

    @app.post("/_emulator/time")
    async def set_time(request: Request) -> Response:
        body = await _json_object(request)
        if body is None:
            return error(400, "the time body must be a JSON object")
        scale, step = body.get("time_scale"), body.get("advance_seconds", 0)
        if not isinstance(step, int | float) or isinstance(step, bool) or step < 0:
            return error(400, "advance_seconds: must be a number >= 0 (the clock never goes back)")
        if scale is not None:
            try:
                emulator.configure({"time_scale": scale})
            except ValueError as invalid:
                return error(400, f"time_scale: {invalid}")
        if step:
            emulator.clock.advance(float(step))
            emulator.store.advance()
        return JSONResponse(await get_time())

    @app.get("/_emulator/stats")
    async def stats() -> dict[str, Any]:
        return emulator.stats_json()

    @app.get("/_emulator/faults")
    async def faults() -> list[dict[str, object]]:
        return emulator.faults.rules()

    @app.post("/_emulator/faults")
    async def add_faults(request: Request) -> Response:
        try:
            body = await request.json()
            items = body if isinstance(body, list) else [body]
            rules = [FaultRule.model_validate(item) for item in items]
        except ValueError as invalid:
            return error(400, f"invalid fault rule: {invalid}")
        for rule in rules:  # all or nothing
            emulator.faults.add(rule)
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
