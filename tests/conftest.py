"""Shared fixtures: the emulator is the PiAPI of every test, over real loopback HTTP.

The emulator and its clients come from our own pytest plugin, `klingflow.testing` (the one
our users get): `piapi_emulator`, `piapi_api_key`, `piapi_client`, `async_piapi_client`.
Here they only get the shorter names our tests use.

Also here: the wheel, built once a run for the packaging tests; the order that starts the
longest tests first (for pytest-xdist); the adversarial suite's count of bad inputs; the
test that opened a connection nobody closed, named (tests/leaks.py).
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import pytest

from klingflow.emulator import EmulatorServer

from . import leaks

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="session")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`python -m build`: the sdist and the wheel, as a release makes them; built once a run.

    Under pytest-xdist the packaging tests run on several workers at once (each spends
    minutes in pip), so the first to get here builds into the run's shared temp folder while
    holding a lock, and the others wait for it and reuse the result.
    """
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    out = shared / "dist"
    with (shared / "dist.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not (out / "built").exists():
            subprocess.run(
                [sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
                check=True,
                capture_output=True,
                timeout=600,
            )
            (out / "built").touch()
    return out


@pytest.fixture(scope="session")
def wheel(dist: Path) -> Path:
    """The wheel of `dist`: what `pip install klingflow` gets."""
    [built] = dist.glob("klingflow-*.whl")
    return built


@pytest.fixture(scope="session")
def sqlite_schema(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite run log with the schema and nothing else, made once a worker
    (tests/databases.py): harnesses and services start on a copy of it."""
    from .databases import sqlite_template

    return sqlite_template(tmp_path_factory.mktemp("schema"))


@pytest.fixture
def emulator(piapi_emulator: EmulatorServer) -> EmulatorServer:
    """The plugin's session emulator, reset to its starting config: no tasks, stats or faults."""
    return piapi_emulator


@pytest.fixture
def api_key(piapi_api_key: str) -> str:
    """The key the emulator accepts; leak tests search every output for it."""
    return piapi_api_key


BAD_INPUTS = "bad inputs refused"
"""The `user_properties` key under which an adversarial test reports (entry point, count)."""

_bad_inputs: dict[str, int] = {}
_durations: dict[str, float] = {}
_skipped: set[str] = set()


def pytest_configure(config: pytest.Config) -> None:
    leaks.install()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Sum the adversarial suite's bad inputs from each report (sent by xdist's workers too),
    and each test's duration (for the next run's order)."""
    _durations[report.nodeid] = _durations.get(report.nodeid, 0.0) + report.duration
    if report.skipped:
        _skipped.add(report.nodeid)
    if report.when == "call":
        for name, value in report.user_properties:
            if name == BAD_INPUTS:
                entry, count = cast(tuple[str, int], value)
                _bad_inputs[entry] = _bad_inputs.get(entry, 0) + count


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _bad_inputs:
        total = sum(_bad_inputs.values())
        parts = ", ".join(f"{entry} {count}" for entry, count in sorted(_bad_inputs.items()))
        terminalreporter.write_line(f"adversarial suite: {total} bad inputs refused ({parts})")


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto` starts three workers per core: serially the suite keeps about a third of one
    core busy (the rest is waiting on subprocesses, servers and the emulator's clock), so
    one worker per core would leave the cores idle most of the time. On 2 cores (quiet):
    4 workers 244 s, 6 workers 212 s, 8 workers 221 s (each worker's start-up and the
    contention outgrow the idle time filled)."""
    return 3 * (os.cpu_count() or 1)


DURATIONS = "klingflow/durations"
"""The pytest cache's key for each test's last duration (setup + call + teardown), in s."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Start the longest tests first: by their duration in the last run that ran them (the
    pytest cache, `.pytest_cache`), else by a `timeout` declared longer than the default.

    pytest-xdist hands out tests in collection order, so a crash test or a fresh venv left
    for the end would run alone while the other workers idle. Every worker sorts alike (the
    cache is written only at the end of a run). Sorting is stable: the rest keep their order.
    """
    cache = getattr(config, "cache", None)  # None with `-p no:cacheprovider`
    last: dict[str, float] = cache.get(DURATIONS, {}) if cache is not None else {}

    def expected(item: pytest.Item) -> float:
        if item.nodeid in last:
            return last[item.nodeid]
        marker = item.get_closest_marker("timeout")
        return float(marker.args[0]) if marker is not None and marker.args else 0.0

    items.sort(key=expected, reverse=True)


_FASTAPI_CALLABLE_CACHES = (
    "_is_gen_callable_cached",
    "_is_async_gen_callable_cached",
    "_is_coroutine_callable_cached",
)
"""FastAPI's caches of endpoint callables (`fastapi.dependencies.models`), cleared per test."""


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    """Let the test's web apps go once its fixtures have stopped them.

    FastAPI keeps up to 4,096 endpoint callables per process in three module-level caches
    (`fastapi.dependencies.models`), and ours are closures over their app: a worker kept
    about 60 apps alive, 1.76 million objects after tests/service, 1.3 s for each of the
    garbage collector's full passes during the run and at its end. A served process makes
    one app, so only the tests need this.
    """
    models = sys.modules.get("fastapi.dependencies.models")
    for name in _FASTAPI_CALLABLE_CACHES:
        cached = getattr(models, name, None)
        if cached is not None:
            cached.cache_clear()


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Stop this process's forkserver of `klingflow` commands (tests/workflows/preloaded.py),
    and keep this run's durations for the next run's order (the main process, which sees
    every worker's reports; tests not run or skipped this time keep their last figure)."""
    if "tests.workflows.preloaded" in sys.modules:  # each process stops its own forkserver
        sys.modules["tests.workflows.preloaded"].stop()
    cache = getattr(session.config, "cache", None)
    if cache is None or hasattr(session.config, "workerinput") or not _durations:
        return
    # A skipped test keeps its last figure: a run without Postgres once left every Postgres
    # test at 0 s, so the next run started them all together at its end, past the server's
    # 100 connections ("too many clients").
    ran = {nodeid: took for nodeid, took in _durations.items() if nodeid not in _skipped}
    cache.set(DURATIONS, {**cache.get(DURATIONS, {}), **ran})
