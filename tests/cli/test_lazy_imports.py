"""Commands load what they use: `klingflow --help` and the run-log readers (`runs show`,
`runs list`) start without FastAPI, uvicorn, PyAV, numpy, Pillow or DBOS, which belong to
`serve`, the emulator and the engine (issue #16: they were 80% of `runs show`'s time)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import Invoke

HEAVY = ("fastapi", "uvicorn", "av", "numpy", "PIL", "dbos")
BATCH = Path(__file__).parents[2] / "examples" / "batch-from-csv.yaml"
ROWS = f"rows=@{BATCH.parent / 'prompts.csv'}"


def loaded_after(*args: str, env: dict[str, str]) -> tuple[int, list[str]]:
    """Run `klingflow ARGS` in a fresh interpreter; its exit code and the heavy modules it
    had imported by the end."""
    code = (
        "import sys\n"
        f"sys.argv = ['klingflow', *{list(args)!r}]\n"
        "from klingflow.__main__ import main\n"
        "try:\n    main()\nexcept SystemExit as end:\n    status = end.code or 0\n"
        "else:\n    status = 0\n"
        f"print('LOADED', status, sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env={**os.environ, **env},
    )
    [line] = [line for line in result.stdout.splitlines() if line.startswith("LOADED")]
    _, status, modules = line.split(" ", 2)
    return int(status), json.loads(modules.replace("'", '"'))


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    values = {"KLINGFLOW_HOME": str(tmp_path / "home"), "KLINGFLOW_POLL_SECONDS": "0.02"}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("KLINGFLOW_DATABASE_URL", raising=False)
    return values


def test_help_loads_no_command_s_dependencies(env: dict[str, str]) -> None:
    """`klingflow --help` lists every command and imports none of their heavy modules."""
    assert loaded_after("--help", env=env) == (0, [])


def test_reading_the_run_log_loads_neither_the_service_nor_the_engine(
    klingflow: Invoke, env: dict[str, str]
) -> None:
    """After a batch run, `runs show` (text, --json, --items) and `runs list` import no
    FastAPI, uvicorn, PyAV, numpy, Pillow or DBOS."""
    assert klingflow("run", str(BATCH), "-i", ROWS).exit_code == 0
    [run] = json.loads(klingflow("runs", "list", "--json").stdout)
    for args in (
        ["runs", "show", run["run_id"]],
        ["runs", "show", run["run_id"], "--json"],
        ["runs", "show", run["run_id"], "--items", "--status", "succeeded"],
        ["runs", "list"],
    ):
        assert loaded_after(*args, env=env) == (0, []), args
