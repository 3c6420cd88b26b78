"""`klingflow serve` as a user starts it: a real process, workflows published at start."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from klingflow.emulator import EmulatorServer, FaultRule

from ..loopback import loopback_client

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SERVE = [sys.executable, "-m", "klingflow", "serve"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _ask(connection: socket.socket) -> bytes:
    """One small request on `connection`, and its whole answer (b"" once it is closed)."""
    connection.sendall(b"GET /api/nothing-here HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = connection.recv(65536)
        if not chunk:
            return answer
        answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    length = next(int(x.split(b":")[1]) for x in lines if x.lower().startswith(b"content-length"))
    while len(body) < length:
        body += connection.recv(65536)
    return answer


def serve_env(tmp_path: Path, emulator: EmulatorServer, api_key: str) -> dict[str, str]:
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("KLINGFLOW_")}
    return {
        **inherited,
        "KLINGFLOW_HOME": str(tmp_path),
        "PIAPI_BASE_URL": emulator.url,
        "PIAPI_API_KEY": api_key,
    }


def _post_once_serving(
    server: subprocess.Popen[str], port: int, path: str, **kwargs: Any
) -> httpx.Response:
    """POST to a `serve` started with its stderr piped, once it says "serving on" and its
    port takes connections (uvicorn binds just after that line)."""
    assert server.stderr is not None
    while "serving on" not in (line := server.stderr.readline()):
        assert line, "serve stopped before serving"
    with loopback_client(f"http://127.0.0.1:{port}", timeout=10) as http:
        while True:
            try:
                return http.post(path, **kwargs)
            except httpx.ConnectError:
                time.sleep(0.1)


def test_serve_publishes_a_folder_and_serves_the_ui(
    tmp_path: Path, emulator: EmulatorServer, api_key: str
) -> None:
    """`serve --workflows examples/` publishes every example; the UI lists them."""
    port = free_port()
    command = [*SERVE, "--port", str(port)]
    log = tmp_path / "serve.log"
    with log.open("wb") as handle:
        server = subprocess.Popen(
            [*command, "--workflows", str(EXAMPLES)],
            env=serve_env(tmp_path, emulator, api_key),
            stdout=handle,
            stderr=subprocess.STDOUT,
        )
    try:
        with loopback_client(f"http://127.0.0.1:{port}", timeout=10) as http:
            deadline = time.monotonic() + 60
            while True:
                assert server.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                try:
                    listed = http.get("/api/workflows")
                    break
                except httpx.ConnectError:
                    time.sleep(0.2)
            names = {w["name"] for w in listed.json()["workflows"]}
            expected = {path.stem for path in EXAMPLES.glob("*.yaml")}
            assert names == expected
            page = http.get("/workflows")
            assert page.status_code == 200
            for name in expected:
                assert f'href="/workflows/{name}"' in page.text
        # A connection idle past uvicorn's own 5 s (httpx's pool expiry, and maybe PiAPI's)
        # still answers: closed at 5 s, a webhook delivery sent on it just then failed.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
            assert _ask(connection).startswith(b"HTTP/1.1 404")
            time.sleep(6)
            assert _ask(connection).startswith(b"HTTP/1.1 404")
    finally:
        server.terminate()
        server.wait(timeout=30)
    output = log.read_text()
    assert "published" in output
    assert api_key not in output


def test_serve_refuses_an_invalid_workflow_before_listening(
    tmp_path: Path, emulator: EmulatorServer, api_key: str
) -> None:
    """A broken file among --workflows: its problems, exit 15, nothing published or served."""
    (tmp_path / "good.yaml").write_text(
        "name: good\nnodes:\n  - {id: a, type: set, with: {values: {x: 1}}}\n"
    )
    (tmp_path / "bad.yaml").write_text("name: bad\nnodes:\n  - {id: a, type: nope}\n")
    result = subprocess.run(
        [*SERVE, "--port", str(free_port()), "--workflows", str(tmp_path)],
        env=serve_env(tmp_path / "home", emulator, api_key),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 15, result.stderr
    assert "bad.yaml:3" in result.stderr
    assert "published" not in result.stdout


def test_serve_logs_each_run_it_starts_and_finishes_as_json(
    tmp_path: Path, emulator: EmulatorServer, api_key: str
) -> None:
    """`serve --log-format json`: a run started over the API is a `started` and a `finished`
    line on stderr, with its id, workflow and spend."""
    port = free_port()
    flow = tmp_path / "clip.yaml"
    flow.write_text(
        "name: clip\nnodes:\n  - {id: clip, type: kling.video, with: {prompt: a fox}}\n"
    )
    env = {**serve_env(tmp_path, emulator, api_key), "KLINGFLOW_POLL_SECONDS": "0.02"}
    with subprocess.Popen(
        [*SERVE, "--port", str(port), "--workflows", str(flow), "--log-format", "json"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ) as server:
        assert server.stderr is not None
        try:
            started = _post_once_serving(server, port, "/api/workflows/clip/runs", json={})
            assert started.status_code == 201, started.text
            run_id = started.json()["run_id"]
            events: list[dict[str, str]] = []
            while len(events) < 2:
                line = server.stderr.readline()
                assert line, f"serve stopped: {events}"
                if line.startswith("{"):
                    events.append(json.loads(line))
        finally:
            server.terminate()
            server.communicate(timeout=30)
    assert [(e["event"], e["run_id"], e["workflow"]) for e in events] == [
        ("started", run_id, "clip"),
        ("finished", run_id, "clip"),
    ]
    assert events[1]["spent_usd"] == "0.50"


def test_serve_stops_within_its_grace_while_a_webhook_is_confirmed(
    tmp_path: Path, emulator: EmulatorServer, api_key: str
) -> None:
    """Told to stop while a PiAPI webhook's confirming GET hangs, `serve` cancels it after
    its grace and exits: uvicorn alone would wait for it (here two minutes, at PiAPI the
    client's retries), and a test's service that hung so once failed a later test."""
    port = free_port()
    secret = "kf-hook-secret-0d4e7b"  # a test value
    env = {**serve_env(tmp_path, emulator, api_key), "KLINGFLOW_WEBHOOK_SECRET": secret}
    emulator.add_fault(
        FaultRule(action="slow", method="GET", path="/api/v1/task", delay_seconds=120)
    )
    with subprocess.Popen(
        [*SERVE, "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ) as server:
        try:
            body = {"timestamp": int(time.time()), "data": {"task_id": "x", "status": "completed"}}
            headers = {"x-webhook-secret": secret}
            answer = _post_once_serving(server, port, "/hooks/piapi", json=body, headers=headers)
            assert answer.json()["outcome"] == "delivered", answer.text
            deadline = time.monotonic() + 10
            while emulator.stats()["gets"] == 0:  # the confirming GET has reached PiAPI
                assert time.monotonic() < deadline, "no confirming GET"
                time.sleep(0.05)
        finally:
            server.terminate()
            try:
                _, log = server.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                raise AssertionError("serve did not stop within 30 s of SIGTERM") from None
    assert server.returncode == -signal.SIGTERM, log  # uvicorn's way: stopped, then re-raised
    assert "timeout graceful shutdown exceeded" in log
    assert "stopped before confirming the webhook for task x" in log
    assert "Traceback" not in log, log  # an ordinary stop, told as one
