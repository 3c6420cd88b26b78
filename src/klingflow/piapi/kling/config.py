"""The create-task `config`: the service mode and where PiAPI posts task updates.

Kept apart from the requests because it is the same for every task type, and because the
webhook secret lives here: the repr masks it so it never reaches a log.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import field_validator

from klingflow.piapi.kling.inputs import Strict
from klingflow.piapi.urls import check_url
from klingflow.redaction import MASK

__all__ = ["TaskConfig", "WebhookConfig"]


class WebhookConfig(Strict):
    """Where PiAPI posts task updates; the secret comes back in `x-webhook-secret`."""

    endpoint: str
    secret: str = ""

    _url = field_validator("endpoint")(check_url)

    def __repr__(self) -> str:  # the secret must never reach a log through a repr
        return f"WebhookConfig(endpoint={self.endpoint!r}, secret={MASK if self.secret else ''!r})"


class TaskConfig(Strict):
    """Per-task options: `public` is pay-as-you-go, `private` is host-your-account."""

    service_mode: Literal["public", "private", ""] = "public"
    webhook_config: WebhookConfig | None = None

    @field_validator("webhook_config", mode="before")
    @classmethod
    def _empty_endpoint_is_no_webhook(cls, value: Any) -> Any:
        # PiAPI's own examples send {"endpoint": "", "secret": ""} to mean "no webhook".
        if isinstance(value, Mapping) and not value.get("endpoint"):
            return None
        return value
