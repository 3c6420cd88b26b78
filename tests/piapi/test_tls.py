"""Every HTTPS client of ours shares one TLS context (piapi/tls.py): making one loads the CA
bundle (about 30 ms of CPU), which an `http.request` node used to pay on every request."""

from __future__ import annotations

import ssl

import certifi
import httpx
import pytest

from klingflow.emulator import EmulatorServer
from klingflow.piapi import AsyncPiAPI, PiAPI
from klingflow.piapi.tls import default_ssl_context
from klingflow.workflows.nodes.http_request import node_client


def _context_of(transport: object) -> ssl.SSLContext:
    """The context an httpx transport's connection pool opens its TLS connections with."""
    assert isinstance(transport, httpx.HTTPTransport | httpx.AsyncHTTPTransport)
    context = transport._pool._ssl_context
    assert context is not None
    return context


def test_clients_and_http_request_transports_share_one_verifying_context() -> None:
    shared = default_ssl_context()
    assert shared.verify_mode == ssl.CERT_REQUIRED
    assert shared.check_hostname
    with PiAPI(api_key="k") as sync_client:
        assert _context_of(sync_client._http._transport) is shared
    async_client = AsyncPiAPI(api_key="k")
    assert _context_of(async_client._http._transport) is shared
    for checked in (True, False):  # http.request's and ai.chat's
        assert _context_of(node_client(30, checked=checked)._transport) is shared


def test_the_emulators_control_client_shares_it_too() -> None:
    """Each emulator start made a context for its plain-HTTP control client: in a test suite
    that starts emulators (ours, or a user's with the pytest plugin), 25 ms of CPU each."""
    with EmulatorServer() as server:
        assert server._control is not None
        assert _context_of(server._control._transport) is default_ssl_context()


def test_a_changed_ssl_cert_file_gets_a_context_of_its_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SSL_CERT_FILE, as httpx reads it, still chooses the CAs when set after a first client."""
    before = default_ssl_context()
    monkeypatch.setenv("SSL_CERT_FILE", certifi.where())
    assert default_ssl_context() is not before
    assert default_ssl_context() is default_ssl_context()
