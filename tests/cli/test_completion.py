"""Shell completion is on, and the fixed-choice options are choices: in help, in the shell."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from klingflow.cli import app

KLINGFLOW = Path(sys.executable).with_name("klingflow")  # the console script pip installed


def complete(words: str) -> list[str]:
    """What bash completion offers for the last word of `words`."""
    env = {
        **os.environ,
        "_KLINGFLOW_COMPLETE": "complete_bash",
        "COMP_WORDS": words,
        "COMP_CWORD": str(len(words.split(" ")) - 1),
    }
    result = subprocess.run(
        [str(KLINGFLOW)], env=env, capture_output=True, text=True, check=True, timeout=60
    )
    return result.stdout.split()


def test_install_completion_is_offered() -> None:
    """`klingflow --help` offers --install-completion and --show-completion."""
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "120"})
    assert "--install-completion" in result.output
    assert "--show-completion" in result.output


@pytest.mark.parametrize(
    ("words", "offered"),
    [
        ("klingflow video --mode ", ["std", "pro"]),
        ("klingflow video --aspect-ratio ", ["16:9", "9:16", "1:1"]),
        ("klingflow cost --version 2.", ["2.0", "2.1", "2.1-master", "2.5", "2.6"]),
    ],
)
def test_the_shell_completes_modes_ratios_and_versions(words: str, offered: list[str]) -> None:
    """Bash completion offers exactly the values PiAPI accepts."""
    assert complete(words) == offered


def test_choices_are_shown_in_help_and_enforced_before_sending() -> None:
    """`video --help` lists the choices; a value outside them is a usage error (2)."""
    runner = CliRunner()
    words = " ".join(runner.invoke(app, ["video", "--help"], env={"COLUMNS": "200"}).output.split())
    assert "--mode std|pro" in words
    assert "--aspect-ratio 16:9|9:16|1:1" in words
    result = runner.invoke(app, ["video", "a fox", "--mode", "ultra", "--dry-run"])
    assert result.exit_code == 2
