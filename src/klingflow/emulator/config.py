"""Everything about the emulator that a test, a demo or a user may want to change.

PiAPI leaves much undocumented (limits, retention, webhook retries, error texts). Each of
those is a setting here with a safe default, and docs/emulator.md names the assumption.
Durations are on the emulated clock unless a name says `real`: `time_scale` 100 turns a
60-second generation into 0.6 s of wall time.
"""

from __future__ import annotations

import hashlib
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from klingflow.piapi.pricing import DEFAULT_PRICES, PriceTable

__all__ = [
    "EmulatorConfig",
    "FaultRule",
    "GenerationError",
    "RateLimit",
    "WebhookFaults",
    "key_id",
]


def key_id(api_key: str) -> str:
    """A stable, non-secret name for an API key (stats show this, never the key)."""
    return "key-" + hashlib.sha256(api_key.encode()).hexdigest()[:12]


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class GenerationError(_Config):
    """The `error` block a failed task shows."""

    code: int = 10000
    message: str = "failed to generate video"
    raw_message: str = "kling: generation failed, please try again"


class FaultRule(_Config):
    """One injected fault: which requests it hits, what happens, how often.

    `phase="before"` fails the request before it has any effect; `phase="after"` lets it
    take effect first (a task is created, then the connection drops), which is how a
    client's double-submission guard is tested.
    """

    action: Literal["error", "slow", "drop", "malformed", "rate_limit", "fail_task", "truncate"]
    method: str | None = None
    path: str | None = Field(default=None, description="path prefix, e.g. /api/v1/task")
    task_type: str | None = Field(default=None, description="fail_task: only this task type")
    phase: Literal["before", "after"] = "before"
    times: int | None = Field(default=1, ge=1, description="matching requests hit; None = all")
    probability: float = Field(default=1.0, ge=0, le=1)
    status: int = Field(default=500, ge=400, le=599)
    delay_seconds: float = Field(default=1.0, ge=0, description="slow: real seconds")
    retry_after_seconds: float | None = 1.0
    fraction: float = Field(default=0.5, ge=0, lt=1, description="truncate/drop: bytes kept")
    error: GenerationError = Field(default_factory=GenerationError)


class RateLimit(_Config):
    """At most `requests` API calls per key within any `window_seconds` of real time."""

    requests: int = Field(ge=1)
    window_seconds: float = Field(default=60.0, gt=0)


class WebhookFaults(_Config):
    """How webhook deliveries misbehave, so receivers can be tested for it."""

    delay_seconds: float = Field(default=0.0, ge=0)
    duplicate_probability: float = Field(default=0.0, ge=0, le=1)
    drop_probability: float = Field(default=0.0, ge=0, le=1)
    reorder: bool = Field(
        default=False,
        description="hold a task's non-terminal deliveries until after its terminal one",
    )


class EmulatorConfig(_Config):
    """The emulator's behaviour. Changeable at run time through PATCH /_emulator/config."""

    api_keys: list[str] = Field(
        default_factory=list, description="accepted keys; empty accepts any non-empty key"
    )
    time_scale: float = Field(default=1.0, gt=0)
    seed: int | None = Field(
        default=None,
        description="None: fresh randomness (unique task ids, as PiAPI's); a number replays",
    )
    strict_inputs: bool = Field(
        default=False,
        description="refuse unknown body, input and config keys (PiAPI ignores them)",
    )
    pending_seconds: float = Field(default=2.0, ge=0, description="pending -> processing")
    processing_seconds: float = Field(default=60.0, ge=0, description="processing -> done")
    concurrency_limit: int | None = Field(default=None, ge=1, description="per key")
    over_concurrency: Literal["stage", "reject"] = "stage"
    rate_limit: RateLimit | None = None
    balance_usd: Decimal | None = Field(
        default=None, ge=0, description="per account; None = unlimited"
    )
    accounts: dict[str, list[str]] = Field(
        default_factory=dict,
        description="account name -> API keys sharing its balance; other keys: one account each",
    )

    def account_of(self, key: str) -> str:
        """The account a key id (`key_id`) spends from: its configured account, else itself."""
        for name, keys in self.accounts.items():
            if any(key_id(api_key) == key for api_key in keys):
                return name
        return key

    fail_probability: float = Field(default=0.0, ge=0, le=1)
    generation_error: GenerationError = Field(default_factory=GenerationError)
    cancelled_status: Literal["failed", "cancelled"] = "failed"
    retention_seconds: float = Field(default=86_400.0, gt=0, description="then outputs 404")
    video_max_height: int | None = Field(default=360, ge=16, description="None = full size")
    video_fps: int = Field(default=8, ge=1, le=60)
    reuse_renders: bool = Field(
        default=False,
        description="benchmarks: one render per output shape, showing a label, not the prompt",
    )
    webhook_on_every_status: bool = False
    webhook_max_attempts: int = Field(default=3, ge=1)
    webhook_retry_seconds: float = Field(default=5.0, ge=0)
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, description="real seconds")
    webhook_faults: WebhookFaults = Field(default_factory=WebhookFaults)
    faults: list[FaultRule] = Field(default_factory=list)
    prices: PriceTable = DEFAULT_PRICES
