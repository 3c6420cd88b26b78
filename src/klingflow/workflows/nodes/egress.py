"""Where a workflow's `http.request` and `download` nodes may connect (SSRF guard).

A workflow file, or a template filled from a trigger payload, chooses these URLs, so by
default they may not reach this machine or its network: loopback, private (RFC 1918, ULA),
link-local (cloud metadata at 169.254.169.254), multicast, reserved and unspecified
addresses are refused, after resolving the host name. PiAPI's own origin (scheme, host and
port of the client's base URL: the emulator's, in tests and the demo) stays allowed, so its
file URLs download, but never its `/_emulator/*` control API. A node opts out with
`allow_private_network: true`; a deployment lists hosts in `KLINGFLOW_ALLOW_PRIVATE_HOSTS`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from klingflow.workflows.nodes.runtime import Runtime

__all__ = ["EMULATOR_CONTROL_PREFIX", "egress_refusal", "node_egress_refusal"]

EMULATOR_CONTROL_PREFIX = "/_emulator"
"""The emulator's admin API: faults, clock and keys; never a workflow's business."""


def _kind(address: str) -> str | None:
    """Why `address` is off limits, or None for a public address."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    checks = (
        (ip.is_loopback, "a loopback address"),
        (ip.is_link_local, "a link-local address"),
        (ip.is_private, "a private address"),
        (ip.is_multicast, "a multicast address"),
        (ip.is_unspecified, "an unspecified address"),
        (ip.is_reserved, "a reserved address"),
    )
    return next((reason for hit, reason in checks if hit), None)


async def egress_refusal(
    url: str,
    *,
    is_piapi_origin: Callable[[str], bool],
    allowed_hosts: Collection[str] = (),
    allow_private_network: bool = False,
) -> str | None:
    """Why a node may not connect to `url` (one sentence, with how to allow it), or None."""
    parsed = httpx.URL(url)
    host = parsed.host
    if not host:
        return f"{url} has no host"
    if allow_private_network:
        return None
    if is_piapi_origin(url):
        if parsed.path.startswith(EMULATOR_CONTROL_PREFIX):
            return (
                f"{url} is the emulator's control API, which workflows may not call "
                "(set allow_private_network: true on the node to allow it)"
            )
        return None
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    if host in allowed_hosts or f"{host}:{port}" in allowed_hosts:
        return None
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return None  # unresolvable: the request itself fails and says so
    for info in infos:
        if (reason := _kind(str(info[4][0]))) is not None:
            return (
                f"refusing {url}: {host} is {reason}; set allow_private_network: true on "
                "the node, or list the host in KLINGFLOW_ALLOW_PRIVATE_HOSTS"
            )
    return None


async def node_egress_refusal(rt: Runtime, url: str, allow_private_network: bool) -> str | None:
    """`egress_refusal` for a node of this run: PiAPI's origin and the deployment's allowed
    hosts come from the run's services."""
    services = rt.services
    return await egress_refusal(
        url,
        is_piapi_origin=services.client.is_piapi_origin,
        allowed_hosts=services.private_hosts,
        allow_private_network=allow_private_network,
    )
