"""`klingflow` commands forked from a process that has already imported the engine.

A fresh `python -m klingflow worker` spends about 1.5 s of CPU importing DBOS, SQLAlchemy,
typer, rich... before its first step, and the crash and scale-out tests start dozens of
workers and CLI commands: most of their CPU went to those imports. Here each command is
forked from a multiprocessing forkserver (one per pytest worker) that imported all that
once, and runs the same `klingflow.__main__.main()` with its own argv, environment and
output files: a separate process the test can SIGKILL, SIGSTOP or terminate, whose exit
code is its own. The scale-out tests' scripts of several engines or clients at once run
the same way (`start(..., script=...)`, as `python -c` would). Only the interpreter's
start-up is skipped; `python -m klingflow` as a user runs it stays tested by
tests/cli/test_run_logs.py, tests/workflows/test_disk_full.py, test_outage_cli.py and the
`serve --no-execute` test of test_scaleout.py.
"""

from __future__ import annotations

import atexit
import multiprocessing
import multiprocessing.forkserver
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

# What a worker, `run` and `runs retry` import: the forkserver imports this module first.
import dbos._sys_db_postgres
import dbos._sys_db_sqlite
import psycopg
import sqlalchemy.dialects.postgresql.psycopg
import sqlalchemy.dialects.sqlite.pysqlite

import klingflow.__main__
import klingflow.cli
import klingflow.cli._progress
import klingflow.cli._run_inputs
import klingflow.workflows.engine
import klingflow.workflows.registry
import klingflow.workflows.schedules
import klingflow.workflows.validation

_PRELOADED = (
    dbos._sys_db_postgres,
    dbos._sys_db_sqlite,
    klingflow.__main__,
    klingflow.cli,
    klingflow.cli._progress,
    klingflow.cli._run_inputs,
    klingflow.workflows.engine,
    klingflow.workflows.registry,
    klingflow.workflows.schedules,
    klingflow.workflows.validation,
    psycopg,
    sqlalchemy.dialects.postgresql.psycopg,
    sqlalchemy.dialects.sqlite.pysqlite,
)

_context = multiprocessing.get_context("forkserver")
_context.set_forkserver_preload([__name__])

Output = Path | int | None
"""Where a stream goes: a file (appended to), `subprocess.DEVNULL`, `subprocess.STDOUT`
(stderr only: with stdout), or None (this process's own)."""


def _redirect(fd: int, output: Output) -> None:
    if output is None:
        return
    if output == subprocess.STDOUT:
        os.dup2(1, fd)
        return
    target = os.devnull if output == subprocess.DEVNULL else str(output)
    opened = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(opened, fd)
    os.close(opened)


def _command(
    args: Sequence[str],
    env: Mapping[str, str],
    stdout: Output,
    stderr: Output,
    script: str | None = None,
) -> None:
    """In the forked process: what `python -m klingflow ARGS` would do from `main()` on, or
    with a `script`, what `python -c SCRIPT ARGS` would do."""
    os.environ.clear()
    os.environ.update(env)
    _redirect(1, stdout)
    _redirect(2, stderr)
    # As a fresh interpreter opens them: stdout buffered to a file, stderr line by line.
    sys.stdin = open(os.devnull, encoding="utf-8")  # noqa: SIM115
    sys.stdout = open(1, "w", encoding="utf-8", closefd=False)  # noqa: SIM115
    sys.stderr = open(  # noqa: SIM115
        2, "w", encoding="utf-8", errors="backslashreplace", buffering=1, closefd=False
    )
    sys.argv = ["klingflow", *args]  # as the console script names itself
    try:
        if script is None:
            klingflow.__main__.main()
        else:
            sys.argv = ["-c", *args]  # as `python -c` names itself
            exec(compile(script, "<string>", "exec"), {"__name__": "__main__"})  # noqa: S102
    finally:  # multiprocessing ends the process with os._exit: shut down as Python would
        threading._shutdown()  # type: ignore[attr-defined]
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()


class Command:
    """A forked `klingflow ARGS` process (or, given a `script`, `python -c SCRIPT ARGS`), with
    the part of `subprocess.Popen` the tests use."""

    def __init__(
        self,
        args: Sequence[str],
        env: Mapping[str, str],
        *,
        stdout: Output = None,
        stderr: Output = None,
        script: str | None = None,
    ) -> None:
        self.args = list(args)
        for output in (stdout, stderr):  # opened here first, as Popen opens them
            if isinstance(output, Path):
                output.touch()
        self._process: BaseProcess = _context.Process(
            target=_command, args=(self.args, dict(env), stdout, stderr, script), daemon=False
        )
        self._process.start()
        assert self._process.pid is not None
        self.pid: int = self._process.pid

    @property
    def returncode(self) -> int | None:
        return self._process.exitcode

    def poll(self) -> int | None:
        return self._process.exitcode

    def wait(self, timeout: float | None = None) -> int:
        self._process.join(timeout)
        if self._process.exitcode is None:
            raise subprocess.TimeoutExpired(["klingflow", *self.args], timeout or 0)
        return self._process.exitcode

    def send_signal(self, number: int) -> None:
        if self._process.exitcode is None:
            os.kill(self.pid, number)

    def terminate(self) -> None:
        """SIGTERM, then SIGCONT, as a shell's `kill` does: a process a test stopped (SIGSTOP)
        acts on it too, where it would otherwise wait, stopped, for ever."""
        self.send_signal(signal.SIGTERM)
        self.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def run(
    args: Sequence[str],
    env: Mapping[str, str],
    output: Path,
    *,
    timeout: float = 60,
    check: bool = False,
) -> subprocess.CompletedProcess[str]:
    """`subprocess.run(["klingflow", *args], capture_output=True, text=True)`, forked: the
    streams are captured in `output`.out and `output`.err (files, read back at the end)."""
    command = start(args, env, output)
    return finish(command, output, timeout=timeout, check=check)


def start(
    args: Sequence[str], env: Mapping[str, str], output: Path, *, script: str | None = None
) -> Command:
    """Start what `run` runs (or `python -c SCRIPT ARGS`) without waiting for it: `finish`
    waits, so that several can run at once."""
    out, err = output.with_suffix(".out"), output.with_suffix(".err")
    for path in (out, err):
        path.unlink(missing_ok=True)
    return Command(args, env, stdout=out, stderr=err, script=script)


def finish(
    command: Command, output: Path, *, timeout: float = 60, check: bool = False
) -> subprocess.CompletedProcess[str]:
    """Wait for a command of `start` and read back its streams, as `run` does."""
    args = command.args
    out, err = output.with_suffix(".out"), output.with_suffix(".err")
    try:
        code = command.wait(timeout)
    except subprocess.TimeoutExpired as error:
        command.kill()
        command.wait(30)
        error.stderr = err.read_bytes() if err.exists() else b""
        raise
    result = subprocess.CompletedProcess(
        ["klingflow", *args],
        code,
        out.read_text() if out.exists() else "",
        err.read_text() if err.exists() else "",
    )
    if check:
        result.check_returncode()
    return result


def stop() -> None:
    """Stop this process's forkserver, if one started, and reap it: its CPU (and its
    commands') is then counted with this process's children, as a subprocess's would be.
    Killed, not asked to exit: it has nothing to save, and exiting as Python does (the
    modules of the whole engine torn down) took it 0.4 s at the end of every worker."""
    for child in multiprocessing.active_children():  # a failed test's, left running
        child.kill()
        child.join(10)
    server: Any = multiprocessing.forkserver._forkserver
    if server._forkserver_pid is not None:
        os.kill(server._forkserver_pid, signal.SIGKILL)
        server._stop()  # reaps it, and removes its socket
