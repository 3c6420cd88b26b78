"""`http.request`: one HTTP call to the outside world, as one durable step.

The URL comes from the workflow file or a trigger payload, so a loopback or private host is
refused unless allowed (see `egress`), and redirects are not followed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

import httpx
from pydantic import Field, field_validator

from klingflow.errors import HTTPNodeError
from klingflow.piapi._pool import new_client
from klingflow.piapi.urls import check_url
from klingflow.workflows.nodes.base import Node, NodeParams
from klingflow.workflows.nodes.egress import (
    EgressRefusedError,
    check_connections,
    egress_rule,
    node_egress_refusal,
)

if TYPE_CHECKING:
    from klingflow.workflows.nodes.runtime import Runtime

__all__ = ["HTTPRequestNode", "HTTPRequestParams", "node_client", "raise_for_status", "send"]


class HTTPRequestParams(NodeParams):
    """`http.request`: one HTTP call. Output: `{"status_code", "headers", "json", "text"}`."""

    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"] = "GET"
    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    json_body: Any = Field(default=None, alias="json")
    timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    allow_private_network: bool = False
    """Allow loopback, private and link-local hosts (see nodes/egress.py)."""

    _url = field_validator("url")(check_url)

    @field_validator("method", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("headers")
    @classmethod
    def _one_line_headers(cls, value: dict[str, str]) -> dict[str, str]:
        """CR, LF or NUL in a header would split it (header injection): never sendable."""
        for name, text in value.items():
            if any(mark in name or mark in text for mark in ("\r", "\n", "\x00")):
                raise ValueError(f"header {name.strip()!r} contains CR, LF or NUL")
        return value


def raise_for_status(response: httpx.Response, what: str) -> None:
    """An HTTP error answer as `HTTPNodeError`: 429 and 5xx may pass on retry, others not."""
    if response.is_success:
        return
    status = response.status_code
    raise HTTPNodeError(
        f"{what} answered HTTP {status}: {response.text[:200]}",
        status_code=status,
        retryable=status == 429 or status >= 500,
    )


# Errors no retry can fix: a header value httpx refuses (CRLF), a URL it cannot send to.
_PERMANENT = (httpx.UnsupportedProtocol, httpx.LocalProtocolError, httpx.InvalidURL)


def node_client(timeout_seconds: float, *, checked: bool) -> httpx.AsyncClient:
    """A node's client: the process's TLS context, the environment's proxy but for loopback,
    and with `checked` its direct connections following the current `egress_rule`."""
    http = new_client(httpx.AsyncClient, timeout=timeout_seconds)
    if checked:
        check_connections(http)
    return http


async def send(
    method: str,
    url: str,
    *,
    what: str,
    unreachable: str,
    timeout_seconds: float,
    headers: Mapping[str, str],
    json_body: Any,
    permanent: tuple[type[Exception], ...] = (),
    checked: bool = False,
) -> httpx.Response:
    """Send a node's one HTTP request: a transport failure is a retryable `HTTPNodeError`
    (`unreachable: <error class>`), an error answer one from `raise_for_status` naming
    `what`, and an exception in `permanent` (a request that can never be sent) one that is
    not retryable. `checked`: connect only where the current `egress_rule` allows."""
    async with node_client(timeout_seconds, checked=checked) as http:
        try:
            response = await http.request(method, url, headers=headers, json=json_body)
        except permanent as error:
            raise HTTPNodeError(
                f"{what} cannot be sent: {type(error).__name__}",
                status_code=None,
                retryable=False,
            ) from None
        except httpx.TransportError as error:
            raise HTTPNodeError(
                f"{unreachable}: {type(error).__name__}", status_code=None, retryable=True
            ) from None
    raise_for_status(response, what)
    return response


class HTTPRequestNode(Node[HTTPRequestParams]):
    """A node whose `with:` block becomes `HTTPRequestParams`."""

    type: Literal["http.request"]

    async def run(self, rt: Runtime, params: HTTPRequestParams) -> dict[str, Any]:
        """One HTTP call; 429 and 5xx are retryable, other errors stop the node. A loopback or
        private host is refused unless allowed (see `egress`); redirects are not followed."""
        if reason := await node_egress_refusal(rt, params.url, params.allow_private_network):
            raise HTTPNodeError(reason, status_code=None, retryable=False)

        async def call() -> dict[str, Any]:
            try:  # connects only to an address it checked (DNS rebinding: see `egress`)
                async with egress_rule(rt, params.allow_private_network):
                    response = await send(
                        params.method,
                        params.url,
                        what=f"{params.method} {params.url}",
                        unreachable=f"{params.method} {params.url} failed",
                        timeout_seconds=params.timeout_seconds,
                        headers=params.headers,
                        json_body=params.json_body,
                        permanent=_PERMANENT,
                        checked=True,
                    )
            except EgressRefusedError as error:
                raise HTTPNodeError(str(error), status_code=None, retryable=False) from None
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
