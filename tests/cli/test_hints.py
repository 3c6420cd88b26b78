"""Hints where users trip: YAML's 16:9, a table without @, items counted from 1, a busy port."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from klingflow.cli.exit_codes import PORT_IN_USE_EXIT_CODE
from klingflow.errors import InvalidRequestError, LoopItemsFailedError
from klingflow.piapi import KlingVideoRequest

from .conftest import Invoke

EXAMPLES = Path(__file__).parents[2] / "examples"


def test_an_unquoted_16_9_in_yaml_is_named_as_such(klingflow: Invoke, tmp_path: Path) -> None:
    """YAML turns `aspect_ratio: 16:9` into 969: `validate` says so and how to fix it."""
    flow = tmp_path / "flow.yaml"
    flow.write_text(
        "name: ratio\nnodes:\n  - id: clip\n    type: kling.video\n"
        "    with: {prompt: a fox, aspect_ratio: 16:9}\n"
    )
    result = klingflow("validate", str(flow))
    assert result.exit_code == 15
    assert 'got 969, which is how YAML reads an unquoted 16:9: quote it ("16:9")' in result.stderr


def test_the_client_names_the_yaml_ratio_too() -> None:
    """9:16 read as 556 by YAML is explained by the request model itself."""
    with pytest.raises(InvalidRequestError, match="unquoted 9:16"):
        KlingVideoRequest.from_input({"prompt": "a fox", "aspect_ratio": 556})


def test_a_table_given_without_at_gets_a_did_you_mean(
    klingflow: Invoke, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`-i rows=prompts.csv` hints `rows=@prompts.csv`, since the text alone is not rows."""
    monkeypatch.chdir(EXAMPLES)
    result = klingflow("run", "batch-from-csv.yaml", "-i", "rows=prompts.csv", "--dry-run")
    assert "did you mean rows=@prompts.csv (its rows)?" in result.stderr
    assert result.exit_code == 3  # the text is not an array: refused before anything ran


def test_failed_loop_items_are_counted_from_one_as_in_file_names() -> None:
    """The third item (index 2, file `3-...mp4`) is "item 3 of 5" in the message."""
    error = LoopItemsFailedError(
        "each",
        failed={2: {"node_path": "each[2].video", "message": "task failed"}},
        total=5,
        partial_output=[],
    )
    assert "first, item 3 of 5 at each[2].video: task failed" in str(error)


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


def test_serve_on_a_busy_port_says_so_and_publishes_nothing(
    klingflow: Invoke, busy_port: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exit 21 with `port P is in use`, before any banner and before publishing."""
    monkeypatch.setenv("KLINGFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("KLINGFLOW_DATABASE_URL", raising=False)
    result = klingflow("serve", "--port", str(busy_port), "--workflows", str(EXAMPLES))
    assert result.exit_code == PORT_IN_USE_EXIT_CODE
    assert result.stderr.strip() == (
        f"error: port {busy_port} is in use on 127.0.0.1: stop what listens there, "
        "or choose another --port"
    )
    assert result.stdout == ""  # no "published" lines
    assert not (tmp_path / "home").exists()  # no run database was even created


def test_the_emulator_on_a_busy_port_says_so_before_its_banner(
    klingflow: Invoke, busy_port: int
) -> None:
    """`klingflow emulator --port P` exits 21 and prints no banner."""
    result = klingflow("emulator", "--port", str(busy_port))
    assert result.exit_code == PORT_IN_USE_EXIT_CODE
    assert f"port {busy_port} is in use" in result.stderr
    assert "PiAPI emulator on" not in result.stdout
