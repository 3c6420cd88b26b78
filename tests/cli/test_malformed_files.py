"""Malformed files give one message and a documented exit code, never a traceback, in every
CLI entry point that reads one (issue #15, point 12)."""

from __future__ import annotations

from pathlib import Path

import pytest

from klingflow.emulator import EmulatorServer

from .conftest import Invoke

EXAMPLES = Path(__file__).parents[2] / "examples"
ALIAS_BOMB = "\n".join(
    ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    + [f"{n}: &{n} [{', '.join(['*' + p] * 9)}]" for p, n in zip("abcdef", "bcdefg", strict=True)]
)
WORKFLOWS = {
    "deep.yaml": b"name: d\nnodes:\n  - id: a\n    type: set\n    with:\n      values: "
    + b"[" * 5000
    + b"]" * 5000,
    "deep.json": b'{"name": "d", "nodes": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    "alias.yaml": (ALIAS_BOMB + "\nname: bomb\nnodes: []\n").encode(),
    "recursive.yaml": b"name: r\nnodes: &n\n  - *n\n",
    "nul.yaml": b"name: n\x00\nnodes: []\n",
    "bigint.yaml": b"name: b\nnodes:\n  - id: a\n    type: set\n    with:\n      values: {x: "
    + b"9" * 5000
    + b"}\n",
    "bigint.json": b'{"name": "b", "nodes": [{"id": "a", "type": "set", "with": {"values": '
    b'{"x": ' + b"9" * 5000 + b"}}}]}",
    "binary.yaml": bytes(range(256)) * 4,
}
DATA = {
    "deep.json": ("[" * 5000 + "]" * 5000).encode(),
    "bigint.jsonl": ('{"prompt": ' + "9" * 5000 + "}\n").encode(),
    "binary.csv": bytes(range(256)),
    "nul.csv": b"prompt\na\x00b\n",
    "alias.yaml": ALIAS_BOMB.encode(),
    "unclosed.csv": b'prompt\n"a red fox\nb\n',
    "bigint.json": b'{"model": "kling", "task_type": "video_generation", "input": {"prompt": "a", '
    b'"duration": ' + b"9" * 5000 + b"}}",
}


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KLINGFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("KLINGFLOW_DATABASE_URL", raising=False)
    return tmp_path / "home"


def one_clear_line(result_output: str, exit_code: int, expected: int) -> None:
    assert exit_code == expected, result_output
    assert "Traceback" not in result_output
    assert result_output.strip(), "an error says something"


@pytest.mark.parametrize("name", list(WORKFLOWS))
@pytest.mark.parametrize("command", ["validate", "publish", "run"])
def test_malformed_workflow_files_exit_15_with_a_message(
    klingflow: Invoke, emulator: EmulatorServer, tmp_path: Path, name: str, command: str
) -> None:
    """validate, publish and run refuse each malformed file with exit 15 and its name."""
    path = tmp_path / name
    path.write_bytes(WORKFLOWS[name])
    result = klingflow(command, str(path))
    one_clear_line(result.output, result.exit_code, 15)
    assert str(path) in result.output
    assert emulator.stats()["creates"] == 0


def data_commands(path: Path) -> list[list[str]]:
    batch, seed = str(EXAMPLES / "batch-from-csv.yaml"), str(EXAMPLES / "seed-action.yaml")
    return [
        ["run", batch, "-i", f"rows=@{path}"],
        ["run", seed, "--rows", str(path)],
        ["run", seed, "--input-file", str(path)],
        ["cost", "--body", str(path)],
    ]


@pytest.mark.parametrize("name", list(DATA))
def test_malformed_data_files_exit_3_with_a_message(
    klingflow: Invoke, emulator: EmulatorServer, tmp_path: Path, name: str
) -> None:
    """-i k=@file, --rows, --input-file and cost --body: exit 3 naming the file, 0 creates."""
    path = tmp_path / name
    path.write_bytes(DATA[name])
    for args in data_commands(path):
        result = klingflow(*args)
        one_clear_line(result.output, result.exit_code, 3)
        assert str(path) in result.output or "input" in result.output, (args, result.output)
    assert emulator.stats()["creates"] == 0
