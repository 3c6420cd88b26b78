"""Our HTTP clients go through the proxy the environment names (`HTTP_PROXY`, `HTTPS_PROXY`,
`NO_PROXY`), as httpx's do: behind a company's proxy PiAPI is reachable no other way. This
machine's loopback is always reached directly (a proxy elsewhere cannot reach it).

The proxy is a real one on loopback, in front of the emulator as PiAPI's far host: each
request names `http://piapi.test/...`, and the proxy sends it on to the emulator.
"""

from __future__ import annotations

import asyncio
import http.client
import importlib.util
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from typer.testing import CliRunner

from klingflow.cli import app as cli_app
from klingflow.emulator import EmulatorServer
from klingflow.piapi import AsyncPiAPI, PiAPI

from ..loopback import without_proxies

FAR = "http://piapi.test"
"""PiAPI's address in these tests: a name only the proxy knows what to do with."""
FOX = """\
name: fox
nodes:
  - id: video
    type: kling.video
    with: {prompt: "a fox", duration: 5, name: "fox.mp4"}
"""

HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "proxy-authorization", "te"}


class _Forward(BaseHTTPRequestHandler):
    """A forward proxy of plain HTTP: each request's line names the whole URL."""

    server: _Proxy

    def _forward(self) -> None:
        target = urlsplit(self.path)
        self.server.seen.append(f"{self.command} {target.netloc}{target.path}")
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        upstream = http.client.HTTPConnection(self.server.upstream, timeout=10)
        try:
            path = target.path + (f"?{target.query}" if target.query else "")
            upstream.request(self.command, path, body=body, headers=headers)  # Host kept
            answer = upstream.getresponse()
            data = answer.read()
        finally:
            upstream.close()
        self.send_response(answer.status)
        for name, value in answer.getheaders():
            if name.lower() not in HOP_BY_HOP | {"content-length", "transfer-encoding"}:
                self.send_header(name, value)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = _forward

    def log_message(self, format: str, *args: object) -> None:
        pass  # the test reads `seen`


class _Proxy(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream: str) -> None:
        super().__init__(("127.0.0.1", 0), _Forward)
        self.upstream = upstream
        self.seen: list[str] = []
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def proxy(monkeypatch: pytest.MonkeyPatch, emulator: EmulatorServer) -> Iterator[_Proxy]:
    """The proxy, named in the environment for plain HTTP (the emulator's scheme)."""
    without_proxies(monkeypatch)
    with _Proxy(urlsplit(emulator.url).netloc) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        monkeypatch.setenv("HTTP_PROXY", server.url)
        try:
            yield server
        finally:
            server.shutdown()
            thread.join(timeout=5)


def test_the_sync_client_goes_through_the_proxy(proxy: _Proxy, api_key: str) -> None:
    with PiAPI(api_key=api_key, base_url=FAR) as client:
        client.account()
    assert proxy.seen == ["GET piapi.test/account/info"]


def test_the_async_client_goes_through_the_proxy(proxy: _Proxy, api_key: str) -> None:
    async def main() -> None:
        async with AsyncPiAPI(api_key=api_key, base_url=FAR) as client:
            await client.account()

    asyncio.run(main())
    assert proxy.seen == ["GET piapi.test/account/info"]


def test_loopback_is_reached_directly(
    proxy: _Proxy, emulator: EmulatorServer, api_key: str
) -> None:
    async def main() -> None:
        async with AsyncPiAPI(api_key=api_key, base_url=emulator.url) as client:
            await client.account()

    with PiAPI(api_key=api_key, base_url=emulator.url.replace("127.0.0.1", "localhost")) as sync:
        sync.account()
    asyncio.run(main())
    assert proxy.seen == []


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("socks5://user:s3cret@127.0.0.1:1080", "a SOCKS proxy needs `pip install 'httpx[socks]'`"),
        ("ftp://user:s3cret@proxy.test:21", "Unknown scheme for proxy URL"),
        ("http://user:s3cret@proxy.test:notaport", "Invalid port: 'notaport'"),
    ],
    ids=["socks-without-socksio", "unknown-scheme", "bad-port"],
)
def test_a_proxy_httpx_cannot_use_is_named_before_anything_is_paid(
    value: str, problem: str, emulator: EmulatorServer, api_key: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """Both clients refuse it at construction with the variable's name, and `klingflow run`
    says so in one line (exit 2, as any bad setting), its password nowhere."""
    if value.startswith("socks") and importlib.util.find_spec("socksio") is not None:
        pytest.skip("socksio is installed here: httpx can use a SOCKS proxy")
    without_proxies(monkeypatch)
    monkeypatch.setenv("HTTPS_PROXY", value)
    for make in (PiAPI, AsyncPiAPI):
        with pytest.raises(ValueError, match="HTTPS_PROXY") as raised:
            make(api_key=api_key, base_url=FAR)
        assert problem in str(raised.value)
        assert "s3cret" not in str(raised.value)
    for name, setting in {
        "PIAPI_BASE_URL": emulator.url,
        "PIAPI_API_KEY": api_key,
        "KLINGFLOW_HOME": str(tmp_path / "home"),
    }.items():
        monkeypatch.setenv(name, setting)
    monkeypatch.delenv("KLINGFLOW_DATABASE_URL", raising=False)
    flow = tmp_path / "fox.yaml"
    flow.write_text(FOX)
    result = CliRunner().invoke(cli_app, ["run", str(flow)])
    assert result.exit_code == 2, result.output
    assert f"the proxy in HTTPS_PROXY cannot be used: {problem}" in result.output
    assert "Traceback" not in result.output
    assert "s3cret" not in result.output
    assert emulator.stats()["creates"] == 0


def test_a_workflow_run_pays_waits_and_downloads_through_the_proxy(
    proxy: _Proxy, emulator: EmulatorServer, api_key: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """`klingflow run`: the engine's own client, whose direct connections are checked
    (workflows/nodes/egress.py), sends the create, its looks and the download to the proxy."""
    for name, value in {
        "PIAPI_BASE_URL": FAR,
        "PIAPI_API_KEY": api_key,
        "KLINGFLOW_HOME": str(tmp_path / "home"),
        "KLINGFLOW_POLL_SECONDS": "0.05",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("KLINGFLOW_DATABASE_URL", raising=False)
    flow = tmp_path / "fox.yaml"
    flow.write_text(FOX)
    result = CliRunner().invoke(cli_app, ["run", str(flow)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert emulator.stats()["creates"] == 1
    assert "POST piapi.test/api/v1/task" in proxy.seen
    assert any(line.startswith("GET piapi.test/files/") for line in proxy.seen), proxy.seen
    [video] = (tmp_path / "home").rglob("fox.mp4")
    assert video.read_bytes()[4:8] == b"ftyp"
