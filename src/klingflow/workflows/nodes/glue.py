"""The small nodes: `download`, `ai.chat`, `http.request` and `set`.

They glue Kling steps to the rest of the world. Each runs as one durable step, so a node
that finished is not repeated after a crash.
"""

from __future__ import annotations

from typing import Any

import httpx

from klingflow.errors import DownloadError, HTTPNodeError
from klingflow.workflows.nodes import Runtime
from klingflow.workflows.nodes.egress import egress_refusal
from klingflow.workflows.spec import AIChatParams, DownloadParams, HTTPRequestParams, SetParams

__all__ = ["ai_chat", "download", "http_request", "set_values"]


async def _refusal(rt: Runtime, url: str, allow_private_network: bool) -> str | None:
    services = rt.services
    return await egress_refusal(
        url,
        is_piapi_origin=services.client.is_piapi_origin,
        allowed_hosts=services.private_hosts,
        allow_private_network=allow_private_network,
    )


async def download(rt: Runtime, params: DownloadParams) -> dict[str, Any]:
    """Save a URL under the run's output folder; output `{"path", "bytes"}`. A loopback or
    private host is refused (not retried) unless allowed: see `egress`."""
    if reason := await _refusal(rt, params.url, params.allow_private_network):
        raise DownloadError(reason, url=params.url, retryable=False)

    async def hop(target: str) -> str | None:  # a redirect is checked like the URL itself
        return await _refusal(rt, target, params.allow_private_network)

    async def fetch() -> dict[str, Any]:
        path = await rt.save(params.url, params.name, check_redirect=hop)
        return {"path": str(path), "bytes": path.stat().st_size}

    result: dict[str, Any] = await rt.durable.step("download", fetch)
    return result


def _raise_for_status(response: httpx.Response, what: str) -> None:
    if response.is_success:
        return
    status = response.status_code
    raise HTTPNodeError(
        f"{what} answered HTTP {status}: {response.text[:200]}",
        status_code=status,
        retryable=status == 429 or status >= 500,
    )


async def ai_chat(rt: Runtime, params: AIChatParams) -> dict[str, Any]:
    """One chat completion (PiAPI's OpenAI-compatible endpoint unless `base_url` says else)."""
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
        async with httpx.AsyncClient(timeout=120) as http:
            try:
                response = await http.post(
                    f"{base_url}/v1/chat/completions", json=body, headers=headers
                )
            except httpx.TransportError as error:
                raise HTTPNodeError(
                    f"the chat endpoint could not be reached: {type(error).__name__}",
                    status_code=None,
                    retryable=True,
                ) from None
        _raise_for_status(response, "the chat endpoint")
        data = response.json()
        return {
            "text": data["choices"][0]["message"]["content"],
            "model": data.get("model", params.model),
            "usage": data.get("usage"),
        }

    result: dict[str, Any] = await rt.durable.step("ai.chat", complete)
    return result


# Errors no retry can fix: a header value httpx refuses (CRLF), a URL it cannot send to.
_PERMANENT = (httpx.UnsupportedProtocol, httpx.LocalProtocolError, httpx.InvalidURL)


async def http_request(rt: Runtime, params: HTTPRequestParams) -> dict[str, Any]:
    """One HTTP call; 429 and 5xx are retryable, other errors stop the node. A loopback or
    private host is refused unless allowed (see `egress`); redirects are not followed."""
    if reason := await _refusal(rt, params.url, params.allow_private_network):
        raise HTTPNodeError(reason, status_code=None, retryable=False)

    async def call() -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=params.timeout_seconds) as http:
            try:
                response = await http.request(
                    params.method, params.url, headers=params.headers, json=params.json_body
                )
            except _PERMANENT as error:
                raise HTTPNodeError(
                    f"{params.method} {params.url} cannot be sent: {type(error).__name__}",
                    status_code=None,
                    retryable=False,
                ) from None
            except httpx.TransportError as error:
                raise HTTPNodeError(
                    f"{params.method} {params.url} failed: {type(error).__name__}",
                    status_code=None,
                    retryable=True,
                ) from None
        _raise_for_status(response, f"{params.method} {params.url}")
        try:
            payload = response.json()
        except ValueError:
            payload = None
        return {
            "status_code": response.status_code,
            "headers": dict(response.headers),
            "json": payload,
            "text": response.text if payload is None else None,
        }

    result: dict[str, Any] = await rt.durable.step("http.request", call)
    return result


async def set_values(rt: Runtime, params: SetParams) -> dict[str, Any]:
    return params.values
