"""`download`: fetch a URL into the run's output folder, as one durable step."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import field_validator

from klingflow.errors import DownloadError
from klingflow.piapi.urls import check_url
from klingflow.workflows.nodes.base import Node, NodeParams, check_file_name
from klingflow.workflows.nodes.egress import egress_rule, node_egress_refusal

if TYPE_CHECKING:
    from klingflow.workflows.nodes.runtime import Runtime

__all__ = ["DownloadNode", "DownloadParams"]


class DownloadParams(NodeParams):
    """`download`: fetch a URL into the run's output folder. Output: `{"path", "bytes"}`."""

    url: str
    name: str | None = None
    allow_private_network: bool = False
    """Allow loopback, private and link-local hosts (see nodes/egress.py)."""

    _url = field_validator("url")(check_url)
    _name = field_validator("name")(check_file_name)


class DownloadNode(Node[DownloadParams]):
    """A node whose `with:` block becomes `DownloadParams`."""

    type: Literal["download"]

    async def run(self, rt: Runtime, params: DownloadParams) -> dict[str, Any]:
        """Save a URL under the run's output folder; output `{"path", "bytes"}`. A loopback or
        private host is refused (not retried) unless allowed: see `egress`."""
        allow = params.allow_private_network
        if reason := await node_egress_refusal(rt, params.url, allow):
            raise DownloadError(reason, url=params.url, retryable=False)

        async def hop(target: str) -> str | None:  # a redirect is checked like the URL itself
            return await node_egress_refusal(rt, target, allow)

        async def fetch() -> dict[str, Any]:
            async with egress_rule(rt, allow):  # the engine's client connects only to
                path = await rt.save(params.url, params.name, check_redirect=hop)  # checked IPs
            return {"path": str(path), "bytes": path.stat().st_size}

        result: dict[str, Any] = await rt.durable.step("download", fetch)
        return result
