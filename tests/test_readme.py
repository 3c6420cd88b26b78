"""README.md's examples run as written (against the emulator instead of PiAPI)."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from klingflow.cli import app
from klingflow.emulator import EmulatorServer

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text()


def blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", README, re.DOTALL | re.MULTILINE)


@pytest.fixture
def sandbox(
    emulator: EmulatorServer, api_key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PIAPI_BASE_URL", emulator.url)
    monkeypatch.setenv("PIAPI_API_KEY", api_key)
    monkeypatch.setenv("KLINGFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("KLINGFLOW_DATABASE_URL", raising=False)
    monkeypatch.setenv("KLINGFLOW_POLL_SECONDS", "0.02")
    return tmp_path


def test_readme_commands_run(sandbox: Path) -> None:
    """Every `klingflow` line of the README exits 0 (the emulator line is the fixture)."""
    lines = [
        line.split("  #")[0].strip()
        for block in blocks("sh")
        for line in block.splitlines()
        if line.startswith("klingflow ")
    ]
    assert len(lines) >= 7
    runner = CliRunner()
    for line in lines:
        if line.startswith(("klingflow emulator", "klingflow runs retry", "klingflow serve")):
            # The emulator is already running; nothing is paused to retry; serve runs until
            # stopped (tests/service/test_serve.py starts it as written).
            continue
        result = runner.invoke(app, shlex.split(line)[1:], catch_exceptions=False)
        assert result.exit_code == 0, f"{line}\n{result.output}"
    assert len(list((sandbox / "out").glob("*.mp4"))) == 1


def test_readme_python_example_runs(sandbox: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The library example prices the request and saves the video."""
    [code] = blocks("python")
    exec(compile(code, "README.md", "exec"), {"__name__": "readme"})  # noqa: S102 - our docs
    assert capsys.readouterr().out.strip() == "0.75"
    assert len(list((sandbox / "out").glob("*.mp4"))) == 1
