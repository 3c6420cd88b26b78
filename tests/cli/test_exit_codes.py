"""Usage mistakes are usage errors (2), and a bad or unreachable PiAPI is said at once."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from klingflow.emulator import EmulatorServer

from .conftest import Invoke


def test_video_without_prompt_shot_or_image_is_a_usage_error(
    klingflow: Invoke, emulator: EmulatorServer
) -> None:
    """`klingflow video` alone exits 2 and says what is missing; nothing is sent."""
    result = klingflow("video")
    assert result.exit_code == 2
    words = " ".join(re.sub(r"[│╭╮╰╯─]", " ", result.output).split())  # unwrap the box
    assert "describe the video, or give --shot or --image" in words
    assert emulator.stats()["create_requests"] == 0


def test_validate_a_missing_file_says_it_does_not_exist(klingflow: Invoke, tmp_path: Path) -> None:
    """`validate missing.yaml` names the file and says it does not exist (one line)."""
    result = klingflow("validate", str(tmp_path / "missing.yaml"))
    assert result.exit_code == 15
    assert (
        result.stderr.strip()
        == f"{tmp_path / 'missing.yaml'}: cannot read: the file does not exist"
    )


def test_a_base_url_without_scheme_is_refused_before_any_request(
    klingflow: Invoke, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PIAPI_BASE_URL=127.0.0.1:8787 is a usage error naming the variable, with no retries."""
    monkeypatch.setenv("PIAPI_BASE_URL", "127.0.0.1:8787")
    result = klingflow("task", "get", "a-task")
    assert result.exit_code == 2
    assert "needs http:// or https://" in result.stderr
    assert "PIAPI_BASE_URL" in result.stderr
    assert "retrying" not in result.stderr


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_an_unreachable_host_is_said_after_the_first_failure(api_key: str) -> None:
    """The first refused connection prints a warning while the retries still go on."""
    url = f"http://127.0.0.1:{closed_port()}"
    env = {**os.environ, "PIAPI_BASE_URL": url, "PIAPI_API_KEY": api_key}
    with subprocess.Popen(
        [sys.executable, "-m", "klingflow", "task", "get", "a-task"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=env,
    ) as process:
        assert process.stderr is not None
        first = process.stderr.readline()
        still_retrying = process.poll() is None
        process.terminate()
        process.communicate(timeout=30)
    assert first.startswith(f"warning: PiAPI at {url} is not answering")
    assert "Connection refused" in first
    assert still_retrying


def test_runs_retry_without_a_run_id_is_a_usage_error(klingflow: Invoke) -> None:
    """`runs retry` with neither RUN_ID nor --all-paused exits 2, naming what is missing."""
    result = klingflow("runs", "retry")
    assert result.exit_code == 2
    assert "give a run id, or --all-paused" in " ".join(
        re.sub(r"[│╭╮╰╯─]", " ", result.output).split()
    )
