"""`ai.chat`: one OpenAI-compatible chat completion, as one durable step.

The key comes from settings, never from the file: PiAPI's key goes to PiAPI's own origin
only (see `Services.chat_key_for`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, Self

from pydantic import Field, field_validator, model_validator

from klingflow.piapi.urls import check_url
from klingflow.workflows._strict import Strict, rule
from klingflow.workflows.nodes.base import Node, NodeParams
from klingflow.workflows.nodes.http_request import send

if TYPE_CHECKING:
    from klingflow.workflows.nodes.runtime import Runtime

__all__ = ["AIChatNode", "AIChatParams", "ChatMessage"]


class ChatMessage(Strict):
    """One message of an `ai.chat` conversation."""

    role: Literal["system", "user", "assistant"]
    content: str


class AIChatParams(NodeParams):
    """`ai.chat`: one OpenAI-compatible chat completion (the key comes from settings, never
    from the file). Give `prompt` or `messages`. Output: `{"text", "model", "usage"}`.
    """

    prompt: str | None = None
    messages: list[ChatMessage] | None = Field(default=None, min_length=1)
    model: str = "gpt-4o-mini"
    system: str | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1)
    base_url: str | None = None

    _url = field_validator("base_url")(check_url)

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.prompt is None) == (self.messages is None):
            raise rule("prompt", "give exactly one of prompt and messages")
        return self


class AIChatNode(Node[AIChatParams]):
    """A node whose `with:` block becomes `AIChatParams`."""

    type: Literal["ai.chat"]

    async def run(self, rt: Runtime, params: AIChatParams) -> dict[str, Any]:
        """One chat completion (PiAPI's OpenAI-compatible endpoint unless `base_url` says
        else)."""
        services = rt.services
        messages = [m.model_dump() for m in params.messages or []]
        if params.prompt is not None:
            messages = [{"role": "user", "content": params.prompt}]
        if params.system:
            messages.insert(0, {"role": "system", "content": params.system})
        body: dict[str, Any] = {"model": params.model, "messages": messages}
        if params.temperature is not None:
            body["temperature"] = params.temperature
        if params.max_tokens is not None:
            body["max_tokens"] = params.max_tokens
        base_url = (params.base_url or services.chat_base_url).rstrip("/")

        async def complete() -> dict[str, Any]:
            headers = {}
            if key := services.chat_key_for(base_url):
                headers["authorization"] = f"Bearer {key}"
            response = await send(
                "POST",
                f"{base_url}/v1/chat/completions",
                what="the chat endpoint",
                unreachable="the chat endpoint could not be reached",
                timeout_seconds=120,
                headers=headers,
                json_body=body,
            )
            data = response.json()
            return {
                "text": data["choices"][0]["message"]["content"],
                "model": data.get("model", params.model),
                "usage": data.get("usage"),
            }

        result: dict[str, Any] = await rt.durable.step("ai.chat", complete)
        return result
