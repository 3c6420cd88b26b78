"""The task object PiAPI returns, typed and normalised at the edge.

PiAPI documents statuses capitalised but sends them lowercase, timestamps as Go's zero time
while unset, usage in points (1 USD = 10,000,000) and three shapes of video output. All of
that is smoothed here, once, so nothing downstream has to know.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator

from klingflow.piapi.points import POINTS_PER_USD, points_to_usd, usd_to_points
from klingflow.redaction import MASK

__all__ = [
    "POINTS_PER_USD",
    "TERMINAL_STATUSES",
    "AccountInfo",
    "ActiveTaskCounts",
    "CreditPackInfo",
    "Task",
    "TaskError",
    "TaskMeta",
    "TaskStatus",
    "Usage",
    "points_to_usd",
    "usd_to_points",
]


class TaskStatus(StrEnum):
    """A task's lifecycle state; PiAPI's capitalised variants are folded to these."""

    STAGED = "staged"
    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL_STATUSES = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED})
"""No task leaves these states. `cancelled` is undocumented but treated as terminal."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="allow", populate_by_name=True)


class Usage(_Frozen):
    """What a task costs: `frozen` is reserved at submit, `consume` is charged at the end."""

    type: str = "point"
    frozen: int = 0
    consume: int = 0

    @property
    def cost_usd(self) -> Decimal:
        """The charge in USD: what was consumed, else what is still reserved."""
        return points_to_usd(self.consume or self.frozen)


class TaskError(_Frozen):
    """PiAPI's error block; `code == 0` with empty strings means no error."""

    code: int = 0
    message: str = ""
    raw_message: str = ""
    detail: Any = None

    @property
    def is_error(self) -> bool:
        """Whether PiAPI reported an error at all (it sends an empty one with every task)."""
        return bool(self.code or self.message or self.raw_message)

    def summary(self) -> str:
        """One line for people: PiAPI's message, then Kling's raw text, then the code."""
        parts = [p for p in (self.message, self.raw_message) if p]
        if self.code:
            parts.append(f"code {self.code}")
        return " | ".join(parts)


def _zero_time_is_none(value: Any) -> Any:
    if isinstance(value, str) and value.startswith("0001-01-01"):
        return None
    return value


class TaskMeta(_Frozen):
    """Timestamps (None while unset) and usage."""

    created_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    usage: Usage = Field(default_factory=Usage)
    is_using_private_pool: bool = False

    _unset = field_validator("created_at", "started_at", "ended_at", mode="before")(
        _zero_time_is_none
    )


class Task(_Frozen):
    """A PiAPI task as returned by create, get and webhooks."""

    task_id: str
    model: str = "kling"
    task_type: str = "video_generation"
    status: TaskStatus
    config: dict[str, Any] | None = None
    input: dict[str, Any] = Field(default_factory=dict)
    output: dict[str, Any] | None = None
    meta: TaskMeta = Field(default_factory=TaskMeta)
    detail: Any = None
    logs: list[Any] | None = None
    error: TaskError = Field(default_factory=TaskError)

    @field_validator("status", mode="before")
    @classmethod
    def _fold_case(cls, value: Any) -> Any:
        if isinstance(value, str):
            folded = value.strip().lower()
            return "cancelled" if folded == "canceled" else folded
        return value

    @field_validator("error", mode="before")
    @classmethod
    def _null_error(cls, value: Any) -> Any:
        return {} if value is None else value

    @property
    def is_terminal(self) -> bool:
        """Whether the task is over (completed, failed or cancelled): nothing more changes."""
        return self.status in TERMINAL_STATUSES

    @property
    def video_url(self) -> str | None:
        """The output video, whichever of PiAPI's output shapes carries it.

        Order (as robust clients do): `output.video`, `output.video_url`, then the first
        work's `resource_without_watermark`, then its `resource`.
        """
        output = self.output or {}
        for key in ("video", "video_url"):
            value = output.get(key)
            if isinstance(value, str) and value:
                return value
        works = output.get("works") or []
        if works and isinstance(works[0], dict):
            video = works[0].get("video") or {}
            for key in ("resource_without_watermark", "resource"):
                value = video.get(key)
                if isinstance(value, str) and value:
                    return value
        return None

    @property
    def output_urls(self) -> list[str]:
        """Every file URL in the output (videos, audio, images), `video_url` first."""
        urls = [self.video_url] if self.video_url else []
        output = self.output or {}
        for work in output.get("works") or []:
            if not isinstance(work, dict):
                continue
            for kind in ("video", "audio", "image"):
                item = work.get(kind) or {}
                if not isinstance(item, dict):
                    continue
                for key in ("resource_without_watermark", "resource"):
                    value = item.get(key)
                    if isinstance(value, str) and value:
                        if value not in urls:
                            urls.append(value)
                        break
        return urls

    @property
    def cost_usd(self) -> Decimal:
        """What the task costs or will cost, from `meta.usage`."""
        return self.meta.usage.cost_usd

    def public_dict(self) -> dict[str, Any]:
        """The task as JSON-ready data with the webhook secret removed (for logs and output)."""
        data = self.model_dump(mode="json")
        webhook = (data.get("config") or {}).get("webhook_config")
        if isinstance(webhook, dict) and webhook.get("secret"):
            webhook["secret"] = MASK
        return data


class CreditPackInfo(_Frozen):
    """The credit block of the current `/account/info` shape (points; extras are kept)."""

    available_credits: Decimal | None = None
    used_credits: Decimal | None = None
    frozen_credits: Decimal | None = None
    total_credits: Decimal | None = None


class AccountInfo(_Frozen):
    """The account behind an API key (GET /account/info); unknown fields are kept.

    PiAPI's clients read two shapes: the current `{id, name, plan, type, is_enable,
    credit_pack_info: {available_credits, ...}, equivalent_in_usd}` and the older `{account_name,
    account_id, credits (or remaining_credits), equivalent_in_usd}`. Either parses, and each
    fills the other's names, so `account_name` and `credits` work on both.
    """

    account_name: str = ""
    account_id: str = ""
    credits: Decimal | None = Field(
        default=None, validation_alias=AliasChoices("credits", "remaining_credits")
    )
    equivalent_in_usd: Decimal | None = None
    plan: str = ""
    type: str = ""
    is_enable: bool | None = None
    credit_pack_info: CreditPackInfo | None = None

    @model_validator(mode="before")
    @classmethod
    def _either_shape(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        data = dict(value)
        if data.get("account_id") in (None, "") and data.get("id") not in (None, ""):
            data["account_id"] = data["id"]
        if data.get("account_name") in (None, "") and data.get("name") not in (None, ""):
            data["account_name"] = data["name"]
        pack = data.get("credit_pack_info")
        has_credits = data.get("credits") is not None or data.get("remaining_credits") is not None
        if isinstance(pack, dict) and not has_credits:
            data["credits"] = pack.get("available_credits")
        return data

    @field_validator("account_id", "account_name", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        return "" if value is None else str(value) if isinstance(value, int) else value


class ActiveTaskCounts(_Frozen):
    """Tasks of one provider not yet finished (GET /account/active_tasks); extras are kept."""

    staged_count: int = 0
    pending_count: int = 0
    processing_count: int = 0
    active_tasks: int = 0

    @field_validator("active_tasks", mode="before")
    @classmethod
    def _count_list(cls, value: Any) -> Any:
        # Some PiAPI pages suggest a list of tasks here rather than a number.
        return len(value) if isinstance(value, list) else value
