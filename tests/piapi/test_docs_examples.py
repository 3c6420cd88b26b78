"""Every ```python example in docs/client.md runs, in order, against the emulator."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from klingflow.emulator import EmulatorServer

DOC = Path(__file__).parents[2] / "docs" / "client.md"
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.DOTALL | re.MULTILINE)


def test_docs_has_examples_and_a_cli_section() -> None:
    """The reference has runnable examples and leaves its last section to the CLI docs."""
    text = DOC.read_text()
    assert len(BLOCK.findall(text)) >= 10
    assert "\n## CLI\n" in text


def test_client_docs_examples_run(
    emulator: EmulatorServer,
    api_key: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The examples, run as one session with PIAPI_* pointing at the emulator, all succeed."""
    monkeypatch.setenv("PIAPI_API_KEY", api_key)
    monkeypatch.setenv("PIAPI_BASE_URL", emulator.url)
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {"__name__": "docs_client"}
    for number, block in enumerate(BLOCK.findall(DOC.read_text()), start=1):
        code = compile(block, f"docs/client.md example {number}", "exec")
        exec(code, namespace)  # noqa: S102 - running our own documentation is the point
    out = capsys.readouterr().out
    assert "Decimal('0.75')" not in out  # print shows the value, not the repr
    assert "0.75" in out
    assert api_key not in out
    assert len(list((tmp_path / "videos").glob("*.mp4"))) >= 5
    assert emulator.stats()["rate_limited"] == 0
