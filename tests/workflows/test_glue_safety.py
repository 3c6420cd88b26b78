"""The glue nodes (`ai.chat`, `http.request`, `download`) keep secrets and the network safe."""

from __future__ import annotations

from pathlib import Path

import pytest

from klingflow.emulator import EmulatorServer
from klingflow.piapi import PiAPI
from klingflow.workflows.engine import Command
from klingflow.workflows.runlog import RunStatus

from .harness import Harness
from .recorder import recorder


@pytest.fixture
def harness(emulator: EmulatorServer, tmp_path: Path, api_key: str) -> Harness:
    return Harness(emulator=emulator, home=tmp_path, api_key=api_key)


def chat_workflow(base_url: str) -> str:
    return f"""
name: chat-elsewhere
nodes:
  - id: write
    type: ai.chat
    with:
      prompt: hello
      base_url: "{base_url}"
"""


def test_piapi_key_never_goes_to_another_port_on_piapi_host(harness: Harness, api_key: str) -> None:
    """A chat endpoint on PiAPI's host but another port gets no PiAPI key."""
    with recorder() as other:
        run = harness.run(chat_workflow(other.url))
    assert run.status == RunStatus.COMPLETED, run.message
    [seen] = other.requests
    assert seen.path == "/v1/chat/completions"
    assert api_key not in str(seen.headers)
    assert "authorization" not in seen.headers


@pytest.mark.parametrize(
    ("url", "same"),
    [
        ("http://127.0.0.1:8000/v1", True),
        ("http://127.0.0.1:8000", True),
        ("http://127.0.0.1:8001", False),
        ("https://127.0.0.1:8000", False),
        ("http://localhost:8000", False),
        ("not a url at all", False),
    ],
)
def test_piapi_origin_is_scheme_host_and_port(url: str, same: bool) -> None:
    """Only PiAPI's exact scheme, host and port count as PiAPI."""
    with PiAPI(api_key="k", base_url="http://127.0.0.1:8000") as client:
        assert client.is_piapi_origin(url) is same


VIDEO = """
name: one-video
nodes:
  - id: clip
    type: kling.video
    with: {prompt: a red fox, duration: 5}
"""


def test_a_download_failing_after_payment_pauses_and_retry_fetches_without_paying(
    harness: Harness, emulator: EmulatorServer, tmp_path: Path
) -> None:
    """An output folder that cannot be made pauses the paid node (task id kept); retry saves."""
    blocker = tmp_path / "runs"
    blocker.write_text("a file where the runs folder belongs")
    run = harness.run(VIDEO)
    assert run.status == RunStatus.PAUSED, run.message
    assert run.paused_node == "clip"
    assert "paid for; not lost" in (run.message or "")
    [task] = emulator.tasks()
    assert task["task_id"] in (run.message or "")
    blocker.unlink()
    done = harness.steer(run.run_id, Command(action="retry"))
    assert done.status == RunStatus.COMPLETED, done.message
    assert Path(done.outputs.get("path") or next(Path(done.output_dir).glob("*.mp4"))).exists()
    assert emulator.stats()["creates"] == 1
