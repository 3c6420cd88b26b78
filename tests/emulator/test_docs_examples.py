"""Every ```python example in docs/emulator.md runs, in order, as one session."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from klingflow.emulator import EmulatorConfig

DOC = Path(__file__).parents[2] / "docs" / "emulator.md"
BLOCK = re.compile(r"^```(python|yaml)\n(.*?)^```$", re.DOTALL | re.MULTILINE)


def test_emulator_docs_examples_run(capsys: pytest.CaptureFixture[str]) -> None:
    """The Python examples start their own emulator, use it, and print what they promise."""
    namespace: dict[str, Any] = {"__name__": "docs_emulator"}
    blocks = [code for kind, code in BLOCK.findall(DOC.read_text()) if kind == "python"]
    assert len(blocks) >= 3
    for number, block in enumerate(blocks, start=1):
        code = compile(block, f"docs/emulator.md example {number}", "exec")
        exec(code, namespace)  # noqa: S102 - running our own documentation is the point
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("pending {'type': 'point', 'frozen': 5000000")
    assert re.match(r"completed http://127\.0\.0\.1:\d+/files/[0-9a-f-]{36}\.mp4$", lines[1])
    assert lines[2:] == [
        "A cinematic shot of lighthouse at dusk, soft light, slow camera push-in",
        "the connection dropped after the task was accepted",
        "2 2",
        "['pending', 'staged']",
        "0.0",
        "failed to freeze credit: credit not enough",
    ]


def test_yaml_config_example_is_a_valid_config() -> None:
    """The config file shown in the docs loads with EmulatorConfig.model_validate."""
    [text] = [code for kind, code in BLOCK.findall(DOC.read_text()) if kind == "yaml"]
    config = EmulatorConfig.model_validate(yaml.safe_load(text))
    assert config.api_keys == ["dev-key"]
    assert config.faults[0].status == 503


def test_every_config_field_is_documented() -> None:
    """Each field of EmulatorConfig, FaultRule, RateLimit and WebhookFaults has a table row."""
    from klingflow.emulator import FaultRule, GenerationError, RateLimit, WebhookFaults

    text = DOC.read_text()
    for model in (EmulatorConfig, FaultRule, RateLimit, WebhookFaults, GenerationError):
        for name in model.model_fields:
            assert f"| `{name}` |" in text, f"{model.__name__}.{name} is not documented"
