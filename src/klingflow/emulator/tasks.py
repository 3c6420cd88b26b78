"""The emulated tasks and their lifecycle, on a clock that can run faster than real time.

A task is `staged` while its key is over its concurrency limit, then `pending`, `processing`
and finally `completed` or `failed`. Transitions are due at known emulated times and are
applied in time order from a heap, so a jump of the clock (time control, a high time scale)
gives exactly the history a patient observer would have seen, slots freed and staged tasks
promoted at the right instants.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import random
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from klingflow.emulator import media
from klingflow.emulator.clock import Clock, format_time
from klingflow.emulator.config import EmulatorConfig, GenerationError
from klingflow.piapi import (
    ExtendVideoRequest,
    KlingOmniRequest,
    KlingRequest,
    KlingTurboRequest,
    KlingVideoRequest,
    LipSyncRequest,
    SoundRequest,
    TaskConfig,
    TryOnRequest,
)
from klingflow.piapi.models import TERMINAL_STATUSES, TaskStatus, Usage, usd_to_points
from klingflow.piapi.pricing import estimate_usage

__all__ = ["EmulatedTask", "OutputFile", "TaskStore", "Transition"]

WATERMARK = "watermark · "
"""What a watermarked file shows before each prompt, so its pixels differ from the clean one."""

EXTEND_SECONDS = 5.0  # what one extend_video adds (Kling extends by about 5 s)
ACTIVE = frozenset({TaskStatus.PENDING, TaskStatus.PROCESSING})


@dataclass(frozen=True)
class OutputFile:
    """A file the task produced, rendered on first download."""

    name: str
    kind: str  # "video" or "image"
    prompts: tuple[str, ...]
    shot_seconds: tuple[float, ...]
    aspect_ratio: str
    resolution: str
    has_audio: bool
    width: int = 0
    height: int = 0
    is_watermarked: bool = False

    @property
    def watermarked_name(self) -> str:
        """The watermarked copy's file name: `<id>.mp4` -> `<id>-wm.mp4`."""
        stem, dot, suffix = self.name.rpartition(".")
        return f"{stem}-wm{dot}{suffix}"


@dataclass
class EmulatedTask:
    """One task as the emulator keeps it: the parsed request plus its lifecycle and billing.

    `planned_error` is decided at submit (an injected `fail_task` or a drawn failure), so
    the task fails when processing ends, as a real generation would, not when it is created.
    """

    task_id: str
    key_id: str
    request: KlingRequest
    config: TaskConfig | None
    raw_input: dict[str, Any]
    base_url: str
    created_at: float
    usage: Usage
    planned_error: GenerationError | None
    status: TaskStatus = TaskStatus.PENDING
    pending_at: float | None = None
    started_at: float | None = None
    ended_at: float | None = None
    error: GenerationError | None = None
    files: tuple[OutputFile, ...] = ()

    @property
    def model(self) -> str:
        """PiAPI's `model` of the task (`kling`, `kling-turbo`...)."""
        return self.request.model

    @property
    def task_type(self) -> str:
        """PiAPI's `task_type` (`video_generation`, `extend_video`...)."""
        return self.request.task_type

    @property
    def is_terminal(self) -> bool:
        """True once the task can no longer change (see `TERMINAL_STATUSES`)."""
        return self.status in TERMINAL_STATUSES

    @property
    def has_video_shape(self) -> bool:
        """Kling 3.0 and omni answer `output.video`; classic versions the `works` list."""
        return isinstance(self.request, KlingOmniRequest) or (
            isinstance(self.request, KlingVideoRequest | KlingTurboRequest)
            and self.request.version.startswith("3.0")
        )

    def to_json(self) -> dict[str, Any]:
        """The task object exactly as PiAPI shapes it."""
        config = (
            self.config.model_dump(mode="json")
            if self.config is not None
            # PiAPI's samples show "public" for a request without `config`.
            else {"service_mode": "public", "webhook_config": {"endpoint": "", "secret": ""}}
        )
        if config.get("webhook_config") is None:
            config["webhook_config"] = {"endpoint": "", "secret": ""}
        error = self.error or GenerationError(code=0, message="", raw_message="")
        return {
            "task_id": self.task_id,
            "model": self.model,
            "task_type": self.task_type,
            "status": self.status.value,
            "config": config,
            "input": dict(sorted(self.raw_input.items())),
            "output": self._output(),
            "meta": {
                "created_at": format_time(self.created_at),
                "started_at": format_time(self.started_at),
                "ended_at": format_time(self.ended_at),
                "usage": self.usage.model_dump(),
                "is_using_private_pool": config.get("service_mode") == "private",
            },
            "detail": None,
            "logs": [],
            "error": {**error.model_dump(), "detail": None},
        }

    def _url(self, name: str) -> str:
        return f"{self.base_url}/files/{name}"

    @property
    def work_type(self) -> str:
        """The `type` of the works shape, in PiAPI's style (`m2v_txt2video_hq`...)."""
        if isinstance(self.request, KlingVideoRequest | KlingTurboRequest):
            source = "img2video" if self.request.image_url else "txt2video"
            return f"m2v_{source}_hq"
        return f"m2v_{self.task_type}"

    def _output(self) -> dict[str, Any] | None:
        done = self.status == TaskStatus.COMPLETED
        if self.has_video_shape:
            return {"video": self._url(self.files[0].name) if done else ""}
        if not done:
            return {"type": "", "status": 0, "works": None}
        kind = self.work_type
        works = []
        for file in self.files:
            width_height = {"height": file.height, "width": file.width}
            # Two URLs serving two different files, as PiAPI gives (clients download both).
            marked, clean = self._url(file.watermarked_name), self._url(file.name)
            if file.kind == "image":
                image = {
                    "resource": marked,
                    "resource_without_watermark": clean,
                    **width_height,
                }
                works.append({"status": 99, "type": kind, "image": image})
                continue
            media = {
                "resource": marked,
                "resource_without_watermark": clean,
                **width_height,
                "duration": int(sum(file.shot_seconds) * 1000),
            }
            works.append(
                {
                    "status": 99,
                    "type": kind,
                    "cover": {
                        "resource": self._url(file.name.replace(".mp4", ".png")),
                        "resource_without_watermark": "",
                        **width_height,
                        "duration": 0,
                    },
                    "audio" if isinstance(self.request, SoundRequest) else "video": media,
                }
            )
        return {"type": kind, "status": 99, "works": works}


@dataclass(frozen=True)
class Transition:
    """A status change, reported the moment it is applied (so `task` shows that state).

    `at` is the emulated time the change happened, which after a jump of the clock can be
    earlier than now; None means now.
    """

    task: EmulatedTask
    status: TaskStatus
    at: float | None = None


class OverConcurrencyError(Exception):
    """The key is at its concurrency limit and the emulator is set to reject."""


class CreditError(Exception):
    """The emulated balance cannot cover the task."""


class OriginError(Exception):
    """An extend/lip-sync/sound task names an origin task that is not a finished video."""


@dataclass
class TaskStore:
    """All tasks of all keys, the per-key queues and the balance."""

    config: EmulatorConfig
    clock: Clock
    rng: random.Random
    on_transition: Callable[[Transition], None] = lambda _t: None
    on_schedule: Callable[[], None] = lambda: None
    """Called when a transition is scheduled (the app's ticker sleeps while none is)."""
    tasks: dict[str, EmulatedTask] = field(default_factory=dict)
    spent_points: dict[str, int] = field(default_factory=dict)  # per account (see `account_of`)
    reserved_points: dict[str, int] = field(default_factory=dict)
    peak_concurrency: int = 0
    peak_by_key: dict[str, int] = field(default_factory=dict)
    _due: list[tuple[float, int, str, TaskStatus]] = field(default_factory=list)
    _seq: itertools.count[int] = field(default_factory=itertools.count)
    _staged: dict[str, deque[str]] = field(default_factory=dict)
    _running: dict[str, int] = field(default_factory=dict)

    # -- creation ---------------------------------------------------------------------------

    def create(
        self,
        *,
        key_id: str,
        request: KlingRequest,
        config: TaskConfig | None,
        raw_input: dict[str, Any],
        base_url: str,
        planned_error: GenerationError | None,
    ) -> EmulatedTask:
        """Create, bill and queue a task: `pending` at once, or `staged` over the limit.

        Raises `CreditError`, `OverConcurrencyError` (only when set to reject) or
        `OriginError`; nothing is created or billed then.
        """
        now = self.clock.now()
        self.advance(now)
        origin = self._origin_of(request, key_id)
        usage = estimate_usage(
            request,
            prices=self.config.prices,
            origin_duration_seconds=self._seconds_of(origin) if origin else None,
        )
        cost = usage.frozen + usage.consume
        left = self.balance_points(key_id)
        if left is not None and cost > left:
            raise CreditError
        running = self._running.get(key_id, 0)
        limit = self.config.concurrency_limit
        # A key with tasks already staged queues behind them even if a slot looks free.
        over = bool(self._staged.get(key_id)) or (limit is not None and running >= limit)
        if over and self.config.over_concurrency == "reject":
            raise OverConcurrencyError
        task = EmulatedTask(
            task_id=str(uuid.UUID(int=self.rng.getrandbits(128), version=4)),
            key_id=key_id,
            request=request,
            config=config,
            raw_input=raw_input,
            base_url=base_url,
            created_at=now,
            usage=usage,
            planned_error=planned_error,
            files=self._plan_files(request, origin),
        )
        self.tasks[task.task_id] = task
        self._book(key_id, reserved=usage.frozen, spent=usage.consume)
        if over:
            task.status = TaskStatus.STAGED
            self._staged.setdefault(key_id, deque()).append(task.task_id)
        else:
            self._start_pending(task, now)
        self.on_transition(Transition(task, task.status, now))
        return task

    def _origin_of(self, request: KlingRequest, key_id: str) -> EmulatedTask | None:
        origin_id = getattr(request, "origin_task_id", None)
        if origin_id is None:
            return None
        origin = self.tasks.get(origin_id)
        if (
            origin is None
            or origin.key_id != key_id
            or origin.status != TaskStatus.COMPLETED
            or not origin.files
            or origin.files[0].kind != "video"
        ):
            raise OriginError(origin_id)
        return origin

    @staticmethod
    def _seconds_of(task: EmulatedTask) -> int:
        return round(sum(task.files[0].shot_seconds))

    def _plan_files(
        self, request: KlingRequest, origin: EmulatedTask | None
    ) -> tuple[OutputFile, ...]:
        aspect = str(getattr(request, "aspect_ratio", "16:9"))
        shots = getattr(request, "multi_shots", None)
        if shots:
            prompts = tuple(shot.prompt for shot in shots)
            seconds = tuple(float(shot.duration) for shot in shots)
        else:
            text = getattr(request, "prompt", None) or getattr(request, "tts_text", None)
            prompts = (text or f"{request.task_type} ({request.model})",)
            seconds = (float(request.duration_seconds),)
        resolution: str = request.resolution
        has_audio = request.has_audio
        if origin is not None:
            source = origin.files[0]
            aspect, resolution = source.aspect_ratio, source.resolution
            if isinstance(request, ExtendVideoRequest):
                prompts = (*source.prompts, request.prompt or "extension")
                seconds = (*source.shot_seconds, EXTEND_SECONDS)
                has_audio = source.has_audio
            elif isinstance(request, LipSyncRequest):
                prompts = (request.tts_text or "lip sync",)
                seconds = (float(sum(source.shot_seconds)),)
        if isinstance(request, TryOnRequest):
            aspect, kind, names = (
                "9:16",
                "image",
                [f"{{id}}-{n}.png" for n in range(request.batch_size)],
            )
        elif isinstance(request, SoundRequest):
            kind, names = "video", [f"{{id}}-{n}.mp4" for n in range(4)]
        else:
            kind, names = "video", ["{id}.mp4"]
        width, height = media.frame_size(
            aspect, resolution, max_height=self.config.video_max_height
        )
        return tuple(
            OutputFile(name, kind, prompts, seconds, aspect, resolution, has_audio, width, height)
            for name in names
        )

    # -- lifecycle --------------------------------------------------------------------------

    def _start_pending(self, task: EmulatedTask, at: float) -> None:
        task.status = TaskStatus.PENDING
        task.pending_at = at
        self._running[task.key_id] = running = self._running.get(task.key_id, 0) + 1
        self.peak_by_key[task.key_id] = max(self.peak_by_key.get(task.key_id, 0), running)
        self.peak_concurrency = max(self.peak_concurrency, sum(self._running.values()))
        self._schedule(at + self.config.pending_seconds, task, TaskStatus.PENDING)

    def _schedule(self, due: float, task: EmulatedTask, from_status: TaskStatus) -> None:
        heapq.heappush(self._due, (due, next(self._seq), task.task_id, from_status))
        self.on_schedule()

    @property
    def idle(self) -> bool:
        """No transition is scheduled: nothing moves until a request schedules one."""
        return not self._due

    def advance(self, now: float | None = None) -> None:
        """Apply every transition due by `now`, in time order."""
        now = self.clock.now() if now is None else now
        while self._due and self._due[0][0] <= now:
            due, _, task_id, from_status = heapq.heappop(self._due)
            task = self.tasks.get(task_id)
            if task is None or task.status != from_status:
                continue  # cancelled or forgotten meanwhile
            if from_status == TaskStatus.PENDING:
                task.status = TaskStatus.PROCESSING
                task.started_at = due
                self._schedule(due + self.config.processing_seconds, task, TaskStatus.PROCESSING)
                self.on_transition(Transition(task, task.status, due))
            else:
                self._finish(task, due)
                # Report the end before the promotions it allows, as they happened.
                self.on_transition(Transition(task, task.status, due))
                self._release(task.key_id, due)

    def _finish(self, task: EmulatedTask, at: float) -> None:
        task.ended_at = at
        self._book(task.key_id, reserved=-task.usage.frozen)
        if task.planned_error is None:
            task.status = TaskStatus.COMPLETED
            task.files = tuple(
                dataclasses.replace(f, name=f.name.replace("{id}", task.task_id))
                for f in task.files
            )
            if task.usage.type == "point":
                task.usage = task.usage.model_copy(update={"consume": task.usage.frozen})
                self._book(task.key_id, spent=task.usage.frozen)
        else:
            task.status = TaskStatus.FAILED
            task.error = task.planned_error
            self._refund_charge(task)

    def _refund_charge(self, task: EmulatedTask) -> None:
        """Give back what a task charged up front (turbo) when it never delivered."""
        self._book(task.key_id, spent=-task.usage.consume)
        task.usage = task.usage.model_copy(update={"consume": 0})

    def _release(self, key_id: str, at: float) -> None:
        self._running[key_id] -= 1
        self.promote(key_id, at)

    def promote(self, key_id: str, at: float) -> None:
        """Move staged tasks of a key to pending while it has free slots, oldest first."""
        staged = self._staged.get(key_id)
        limit = self.config.concurrency_limit
        while staged and (limit is None or self._running.get(key_id, 0) < limit):
            task = self.tasks[staged.popleft()]
            self._start_pending(task, at)
            self.on_transition(Transition(task, task.status, at))

    def promote_all(self) -> None:
        """Promote staged tasks of every key, e.g. after the concurrency limit was raised."""
        now = self.clock.now()
        for key_id in list(self._staged):
            self.promote(key_id, now)

    def cancel(self, task: EmulatedTask) -> bool:
        """Cancel a task that has not started processing; False when it is too late."""
        self.advance()
        if task.status not in (TaskStatus.PENDING, TaskStatus.STAGED):
            return False
        now = self.clock.now()
        was_running = task.status == TaskStatus.PENDING
        if task.status == TaskStatus.STAGED:
            self._staged[task.key_id].remove(task.task_id)
        task.status = TaskStatus(self.config.cancelled_status)
        task.ended_at = now
        task.error = GenerationError(code=10001, message="task cancelled", raw_message="")
        self._book(task.key_id, reserved=-task.usage.frozen)
        self._refund_charge(task)
        self.on_transition(Transition(task, task.status, now))
        if was_running:
            self._release(task.key_id, now)
        return True

    def counts(self, key_id: str) -> dict[str, int]:
        """The key's staged, pending and processing tasks, as `/account/active_tasks` counts."""
        self.advance()
        counts = {status: 0 for status in (TaskStatus.STAGED, *ACTIVE)}
        for task in self.tasks.values():
            if task.key_id == key_id and task.status in counts:
                counts[task.status] += 1
        return {
            "staged_count": counts[TaskStatus.STAGED],
            "pending_count": counts[TaskStatus.PENDING],
            "processing_count": counts[TaskStatus.PROCESSING],
            "active_tasks": sum(counts.values()),
        }

    def _book(self, key_id: str, *, reserved: int = 0, spent: int = 0) -> None:
        account = self.config.account_of(key_id)
        self.reserved_points[account] = self.reserved_points.get(account, 0) + reserved
        self.spent_points[account] = self.spent_points.get(account, 0) + spent

    def balance_points(self, key_id: str) -> int | None:
        """What the key's account can still spend (never below 0), None when unlimited."""
        if self.config.balance_usd is None:
            return None
        account = self.config.account_of(key_id)
        used = self.spent_points.get(account, 0) + self.reserved_points.get(account, 0)
        return max(0, usd_to_points(self.config.balance_usd) - used)
