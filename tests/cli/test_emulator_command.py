"""`klingflow emulator` as a user starts it, and `klingflow demo` as `make demo` runs it."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from klingflow.cli import app


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_emulator_command_serves_with_flags_and_config_file(tmp_path: Path) -> None:
    """Flags and a YAML config file both shape the emulator the command starts."""
    config = tmp_path / "emulator.yaml"
    config.write_text("concurrency_limit: 2\nvideo_max_height: 72\ntime_scale: 3\n")
    port = free_port()
    command = [sys.executable, "-m", "klingflow", "emulator", "--port", str(port)]
    command += ["--time-scale", "500", "--api-key", "k-one", "--config", str(config)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                settings = httpx.get(f"{url}/_emulator/config").json()
                break
            except httpx.TransportError:
                time.sleep(0.05)
        else:
            raise AssertionError("the emulator did not start")
        assert settings["concurrency_limit"] == 2
        assert settings["time_scale"] == 500  # the flag wins over the file
        assert settings["api_keys"] == ["***"]
        assert httpx.get(f"{url}/account/info", headers={"x-api-key": "nope"}).status_code == 401
        assert httpx.get(f"{url}/account/info", headers={"x-api-key": "k-one"}).status_code == 200
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=10)
    assert b"PiAPI emulator on http://127.0.0.1" in output
    assert b"k-one" not in output


def test_emulator_command_rejects_a_bad_config_file(tmp_path: Path) -> None:
    """An invalid setting is a usage error that names the problem, not a traceback."""
    config = tmp_path / "emulator.yaml"
    config.write_text("time_scale: -1\n")
    result = CliRunner().invoke(app, ["emulator", "--config", str(config)])
    assert result.exit_code == 2
    assert "time_scale" in result.output


def test_demo_runs_the_batch_example_to_five_playable_videos(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo runs the batch workflow on its own emulator and lists the MP4s it made."""
    monkeypatch.delenv("KLINGFLOW_DATABASE_URL", raising=False)
    result = CliRunner().invoke(
        app, ["demo", "--out", str(tmp_path), "--time-scale", "1000"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if ".mp4  (" in line]
    assert len(lines) == 5
    assert all("5.0 s, 640x360, h264" in line for line in lines)
    assert "5 videos, 5 paid submissions" in result.stderr
    assert "estimated cost: $0.75" in result.stdout
    for line in lines:
        assert Path(line.split("  (")[0]).is_file()
