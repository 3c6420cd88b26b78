"""Deployment settings from `KLINGFLOW_*` environment variables (the client reads `PIAPI_*`).

Secrets are `SecretStr`, so a settings object can be printed or logged without leaking them.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["KEEP_ALIVE_SECONDS", "STOP_GRACE_SECONDS", "Settings"]

KEEP_ALIVE_SECONDS = 75
"""How long our HTTP servers (`klingflow serve`, the emulator) keep an idle connection open
(nginx's default). uvicorn's own 5 s equals httpx's pool expiry: a request sent on a
connection idle for just under 5 s could meet the server's close. For the emulator that was
a create coming back as an uncertain submission; for `serve`, a PiAPI webhook delivery
failing and sent again."""

STOP_GRACE_SECONDS = 5
"""How long `klingflow serve` lets requests in flight finish when told to stop, before it
cancels them and shuts the engine down. Without a bound, uvicorn waits for every request's
background work: a PiAPI webhook's confirming GET may wait out the client's retries and
request budget, so a stop could hang for minutes. A confirmation cut off is only a hint
lost: the waiting node's own looks find the task's end after the next start."""


class Settings(BaseSettings):
    """Where runs are stored and how hard PiAPI may be pushed."""

    model_config = SettingsConfigDict(env_prefix="KLINGFLOW_", extra="ignore")

    home: Path = Field(
        default_factory=lambda: Path.home() / ".klingflow",
        description="Data folder: the SQLite database and the run outputs.",
    )
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL (postgresql://...); default: SQLite in home."
    )
    database_outage_seconds: float = Field(
        default=60.0,
        ge=0,
        description="How long a lost Postgres connection is tried again before a run "
        "ends crashed (resume it with `klingflow runs retry`).",
    )
    executor_id: str | None = Field(
        default=None,
        description="Stable, unique id of this worker process; default: a free local slot.",
    )
    concurrency: int = Field(default=5, ge=1, description="PiAPI tasks running at once.")
    requests_per_minute: int = Field(default=60, ge=1, description="PiAPI requests per minute.")
    poll_seconds: float = Field(
        default=5.0, gt=0, description="First pause between status checks of a PiAPI task."
    )
    heartbeat_seconds: float = Field(
        default=10.0, gt=0, description="How often each engine writes its heartbeat row."
    )
    takeover_after_seconds: float | None = Field(
        default=None,
        gt=0,
        description="Take over the runs of an executor silent this long (default: never; "
        "see docs/scaling.md).",
    )
    lease_seconds: float = Field(
        default=30.0,
        gt=0,
        description="On Postgres, how long a dead worker's share of the limits stays taken.",
    )
    max_runs: int = Field(default=20, ge=1, description="Runs executing at once.")
    chat_base_url: str | None = Field(
        default=None, description="OpenAI-compatible endpoint for ai.chat; default: PiAPI's."
    )
    chat_api_key: SecretStr | None = Field(
        default=None,
        description="Bearer key for a chat endpoint that is not PiAPI (PiAPI's key never leaves "
        "for another host).",
    )
    public_url: str | None = Field(
        default=None, description="Where PiAPI can reach this service (enables webhooks)."
    )
    webhook_secret: SecretStr | None = Field(
        default=None, description="Secret PiAPI echoes in x-webhook-secret."
    )
    api_token: SecretStr | None = Field(
        default=None,
        description="Bearer token the HTTP service requires on /api and /hooks/{workflow}; "
        "needed to listen on anything but loopback.",
    )

    webhook_window_seconds: float = Field(
        default=24 * 3600.0,
        gt=0,
        description="PiAPI webhook deliveries dated further than this from now (past or "
        "future) are refused as stale, replayed or forged.",
    )
    allow_private_hosts: str = Field(
        default="",
        description="Comma-separated hosts (or host:port) that http.request and download "
        "nodes may reach although they are loopback or private addresses.",
    )

    @property
    def private_hosts(self) -> frozenset[str]:
        """`allow_private_hosts` as a set (lowercase, blanks dropped)."""
        return frozenset(
            h.strip().lower() for h in self.allow_private_hosts.split(",") if h.strip()
        )

    @field_validator("chat_api_key", "webhook_secret", "api_token", "public_url", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        """`KLINGFLOW_API_TOKEN=` means no token, not an empty one that every caller has."""
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        return None if isinstance(text, str) and not text.strip() else value

    @field_validator("public_url")
    @classmethod
    def _without_trailing_slash(cls, value: str | None) -> str | None:
        """PiAPI is sent `<public_url>/hooks/piapi`: a trailing slash would make it `//hooks`."""
        return value.rstrip("/") if value else value

    @property
    def outputs_dir(self) -> Path:
        """Where each run's videos go (`home/runs/<run id>/`), beside the run database."""
        return self.home / "runs"

    def resolved_database_url(self) -> str:
        """The run database: the given URL, else `home/klingflow.sqlite`."""
        if self.database_url:
            return re.sub(r"^postgres(ql)?://", "postgresql+psycopg://", self.database_url)
        return f"sqlite:///{self.home / 'klingflow.sqlite'}"
