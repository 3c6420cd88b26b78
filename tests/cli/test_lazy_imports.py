"""Commands load what they use: `klingflow --help` and the run-log readers (`runs show`,
`runs list`) start without FastAPI, uvicorn, PyAV, numpy, Pillow or DBOS, which belong to
`serve`, the emulator and the engine (issue #16: they were 80% of `runs show`'s time); nor
without the client (httpx), the node kinds, jinja2 or croniter, which a reader of the run log
never uses (issue #16 again: a second of start-up before a 0.1 s query)."""

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


READER_FREE = (
    "httpx",
    "jinja2",
    "croniter",
    "klingflow.piapi._client",
    "klingflow.piapi.models",
    "klingflow.workflows.nodes",
    "klingflow.workflows.spec",
    "sqlalchemy.dialects.postgresql",
)
"""What reading a SQLite run log does without: the client and PiAPI's task models (the log
keeps amounts as points, `piapi/points.py`), the node kinds (and the workflow spec that needs
them all), templates, schedules, the Postgres dialect."""
HELP_FREE = ("sqlalchemy", "pydantic", "importlib.metadata", "httpx", "jinja2", "yaml")
"""What listing the commands does without."""
RUN_HELP_FREE = ("dbos", "sqlalchemy", "httpx", "jinja2", "croniter", "yaml")
"""What the options of `run` and `worker` do without (Typer itself loads pydantic to parse
options): the engine is imported when they run."""


def loaded_after(
    *args: str, env: dict[str, str], modules: tuple[str, ...] = HEAVY
) -> tuple[int, list[str]]:
    """Run `klingflow ARGS` in a fresh interpreter; its exit code and which of `modules` it
    had imported by the end."""
    code = (
        "import sys\n"
        f"sys.argv = ['klingflow', *{list(args)!r}]\n"
        "from klingflow.__main__ import main\n"
        "try:\n    main()\nexcept SystemExit as end:\n    status = end.code or 0\n"
        "else:\n    status = 0\n"
        f"print('LOADED', status, sorted(m for m in {modules!r} if m in sys.modules))\n"
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
    _, status, loaded = line.split(" ", 2)
    return int(status), json.loads(loaded.replace("'", '"'))


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    values = {"KLINGFLOW_HOME": str(tmp_path / "home"), "KLINGFLOW_POLL_SECONDS": "0.02"}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("KLINGFLOW_DATABASE_URL", raising=False)
    return values


def test_reading_the_run_log_loads_neither_the_service_nor_the_engine(
    klingflow: Invoke, env: dict[str, str]
) -> None:
    """After a batch run, `runs show` (text, --json, --items) and `runs list` import no
    FastAPI, uvicorn, PyAV, numpy, Pillow or DBOS, and no httpx, node kinds, workflow spec,
    jinja2, croniter or Postgres dialect."""
    assert klingflow("run", str(BATCH), "-i", ROWS).exit_code == 0
    [run] = json.loads(klingflow("runs", "list", "--json").stdout)
    for args in (
        ["runs", "show", run["run_id"]],
        ["runs", "show", run["run_id"], "--json"],
        ["runs", "show", run["run_id"], "--items", "--status", "succeeded"],
        ["runs", "list"],
    ):
        assert loaded_after(*args, env=env, modules=HEAVY + READER_FREE) == (0, []), args


def test_help_loads_neither_the_database_nor_the_models(env: dict[str, str]) -> None:
    """`klingflow --help` lists every command and imports none of their heavy modules: no
    SQLAlchemy, pydantic, package metadata, client, templates or YAML either; `run --help`
    and `worker --help` no engine, database or templates."""
    assert loaded_after("--help", env=env, modules=HEAVY + HELP_FREE) == (0, [])
    for args in (["run", "--help"], ["worker", "--help"]):
        assert loaded_after(*args, env=env, modules=RUN_HELP_FREE) == (0, []), args
