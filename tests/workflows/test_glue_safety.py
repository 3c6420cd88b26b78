"""The glue nodes (`ai.chat`, `http.request`, `download`) keep secrets and the network safe."""

from __future__ import annotations

from pathlib import Path

import pytest

from klingflow.emulator import EmulatorServer
from klingflow.piapi import PiAPI
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
