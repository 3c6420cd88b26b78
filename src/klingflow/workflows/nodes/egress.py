"""Where a workflow's `http.request` and `download` nodes may connect (SSRF guard).

A workflow file, or a template filled from a trigger payload, chooses these URLs, so by
default they may not reach this machine or its network: loopback, private (RFC 1918, ULA),
link-local (cloud metadata at 169.254.169.254), multicast, reserved and unspecified
addresses are refused, after resolving the host name. PiAPI's own origin (scheme, host and
port of the client's base URL: the emulator's, in tests and the demo) stays allowed, so its
file URLs download, but never its `/_emulator/*` control API. A node opts out with
`allow_private_network: true`; a deployment lists hosts in `KLINGFLOW_ALLOW_PRIVATE_HOSTS`.

Checking a name, then letting httpx resolve it again to connect, would let a DNS server
answer a public address to the check and a private one to the connection (DNS rebinding).
So the connection itself is checked: `check_connections` (on http.request's client, and
the engine's, for downloads) resolves the host once when it opens a connection, refuses any
private answer, and connects to the address it checked; TLS and the `Host` header still use
the name. Through a proxy the environment names (`HTTPS_PROXY`...) the proxy resolves and
connects, so only the name is checked: the deployment chose that proxy. The rule a
connection follows is the node's (`egress_rule`, a context variable set around the
request); connections opened outside a node (PiAPI's own calls) are free.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import AsyncIterator, Callable, Collection, Iterable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpcore
import httpx

from klingflow.errors import DownloadError
from klingflow.piapi import AsyncPiAPI

if TYPE_CHECKING:
    from klingflow.workflows.nodes.runtime import Runtime

__all__ = [
    "EMULATOR_CONTROL_PREFIX",
    "EgressRefusedError",
    "EgressRule",
    "check_connections",
    "egress_refusal",
    "egress_rule",
    "node_egress_refusal",
]

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


# -- the connection itself: resolved once, checked, connected to the checked address -----


class EgressRefusedError(DownloadError):
    """A connection refused because its host resolved to a private address (not retried:
    a `DownloadError` so a download stops at once; `http.request` turns it into its own)."""

    def __init__(self, message: str, *, url: str = "") -> None:
        super().__init__(message, url=url, retryable=False)


@dataclass(frozen=True)
class EgressRule:
    """What a node's connections may reach: the hosts allowed on a private network
    (`host` or `host:port`), PiAPI's own `host:port` among them."""

    allowed_hosts: frozenset[str] = frozenset()


_rule: ContextVar[EgressRule | None] = ContextVar("klingflow_egress_rule", default=None)


@asynccontextmanager
async def egress_rule(rt: Runtime, allow_private_network: bool) -> AsyncIterator[None]:
    """Make the node's connections in this block follow its egress rule (none to follow
    with `allow_private_network`)."""
    if allow_private_network:
        token = _rule.set(None)
    else:
        base = httpx.URL(rt.services.client.base_url)
        piapi = f"{base.host}:{base.port or (443 if base.scheme == 'https' else 80)}"
        token = _rule.set(EgressRule(frozenset(rt.services.private_hosts) | {piapi}))
    try:
        yield
    finally:
        _rule.reset(token)


class _CheckedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's own backend, but a connection opened under an `EgressRule` goes to an
    address resolved and checked here, once."""

    def __init__(self, inner: httpcore.AsyncNetworkBackend) -> None:
        self.inner = inner

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        rule = _rule.get()
        if rule is not None and not {host, f"{host}:{port}"} & rule.allowed_hosts:
            host = await _checked_address(host, port)
        return await self.inner.connect_tcp(host, port, timeout, local_address, socket_options)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        return await self.inner.connect_unix_socket(path, timeout, socket_options)

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


async def _checked_address(host: str, port: int) -> str:
    """The first address `host` resolves to, when every one it resolves to is public."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as error:
        raise httpcore.ConnectError(f"{host} cannot be resolved: {error}") from None
    addresses = [str(info[4][0]) for info in infos]
    for address in addresses:
        if (reason := _kind(address)) is not None:
            raise EgressRefusedError(
                f"refusing to connect to {host}: it resolved to {reason} when connecting; set "
                "allow_private_network: true on the node, or list the host in "
                "KLINGFLOW_ALLOW_PRIVATE_HOSTS"
            )
    if not addresses:
        raise httpcore.ConnectError(f"{host} resolved to no address")
    return addresses[0]


def check_connections(client: AsyncPiAPI | httpx.AsyncClient) -> None:
    """Make the direct connections of `client` (made without a transport of its own) follow
    the current `egress_rule`. A proxy the environment names connects for us, so there only
    the name is checked (`egress_refusal`, before the request)."""
    http = client._http if isinstance(client, AsyncPiAPI) else client
    transport = http._transport
    if not isinstance(transport, httpx.AsyncHTTPTransport):
        raise TypeError(f"cannot check the connections of a {type(transport).__name__}")
    # httpx has no public way to give its pool a network backend (httpcore has one): the
    # client's pool is given ours around its own.
    pool = transport._pool
    pool._network_backend = _CheckedBackend(pool._network_backend)
