"""Every `klingflow` example in docs/client.md's CLI section runs, and its tables are true."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import pytest

from klingflow.cli.exit_codes import EXIT_CODES

from .conftest import Invoke

ROOT = Path(__file__).parents[2]
CLI_DOCS = (ROOT / "docs" / "client.md").read_text().split("\n## CLI\n", 1)[1]
SH_BLOCK = re.compile(r"^```sh\n(.*?)^```$", re.DOTALL | re.MULTILINE)


def test_cli_examples_run_against_the_emulator(
    klingflow: Invoke, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each documented command line exits 0 when run as written."""
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KLINGFLOW_POLL_SECONDS", "0.01")
    submitted = klingflow("video", "a red fox", "--no-wait")
    task_id = json.loads(submitted.stdout)["data"]["task_id"]
    lines = [line for block in SH_BLOCK.findall(CLI_DOCS) for line in block.splitlines()]
    assert len(lines) >= 10
    for line in lines:
        args = shlex.split(line.replace("<task-id>", task_id))
        assert args[0] == "klingflow"
        result = klingflow(*args[1:])
        assert result.exit_code == 0, f"{line}\n{result.output}"
    assert len(list((tmp_path / "videos").glob("*.mp4"))) == 5


def test_exit_code_table_matches_the_code() -> None:
    """The documented exit codes are exactly the ones the CLI uses."""
    for cls, code, meaning in EXIT_CODES:
        row = f"| {code} | {meaning} (`{cls.__name__}`) |" if cls else f"| {code} | {meaning} |"
        assert row in CLI_DOCS
    table = CLI_DOCS.split("### Errors and exit codes", 1)[1]
    documented = {int(code) for code in re.findall(r"^\| (\d+) \|", table, re.MULTILINE)}
    assert documented - {0, 1, 2} == {code for _, code, _ in EXIT_CODES}  # Click's own: 0, 1, 2


def test_missing_key_is_a_usage_error(klingflow: Invoke, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without PIAPI_API_KEY the CLI says how to fix it and exits 2."""
    monkeypatch.delenv("PIAPI_API_KEY")
    result = klingflow("account")
    assert result.exit_code == 2
    assert "PIAPI_API_KEY is not set" in result.stderr
