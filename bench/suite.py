"""Issue 16's last paragraph: `make test`'s wall time and its ten slowest tests.

    .venv/bin/python bench/run.py --only suite [--quick]

Runs `make test` in this checkout as a developer's second run does (the venv made, the
pytest cache holding the last run's durations, so the longest tests start first): lint,
typecheck and the whole suite on both databases, with `--durations=10`. Reports the wall
time against the 4-minute target, the CPU of make's processes and of the local Postgres
server (its backends are the postmaster's children, so no child of ours counts them), and
the ten slowest tests. `--quick` runs only tests/piapi, to check this module, and compares
nothing.
"""

from __future__ import annotations

import os
import re
import resource
import shlex
import subprocess
import time
from pathlib import Path

from common import ROOT, Options, Section, Target, cpu_seconds, ratio, table

TARGET_SECONDS = 240.0
SLOWEST = re.compile(r"^([\d.]+)s (setup|call|teardown)\s+(\S+)$")
SUMMARY = re.compile(r"^(\d+) passed.* in ([\d.]+)s")


def postgres_cpu_seconds() -> float:
    """User + system CPU of this machine's postgres processes and the children they reaped."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "comm").read_text().strip() == "postgres":
                total += cpu_seconds(entry.name, reaped=True)
        except OSError:  # gone meanwhile
            continue
    return total


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(quick: bool, options: Options) -> Section:
    flags = "--durations=10" + (" tests/piapi" if quick else "")
    command = ["make", "--no-print-directory", "unit" if quick else "test", f"PYTEST_FLAGS={flags}"]
    environment = dict(os.environ)
    if options.postgres is not None:
        environment["KLINGFLOW_TEST_POSTGRES_URL"] = options.postgres
    cpu, server = children_cpu_seconds(), postgres_cpu_seconds()
    started = time.monotonic()
    done = subprocess.run(  # noqa: S603 - make, fixed arguments
        command, cwd=ROOT, env=environment, capture_output=True, text=True, check=False
    )
    wall = round(time.monotonic() - started, 1)
    cpu, server = children_cpu_seconds() - cpu, postgres_cpu_seconds() - server
    lines = done.stdout.splitlines()
    slowest = [m.groups() for line in lines if (m := SLOWEST.match(line.strip()))][:10]
    summary = next((m.groups() for line in lines if (m := SUMMARY.match(line.strip()))), None)
    if done.returncode != 0 or summary is None:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-15:])
        raise RuntimeError(f"`{shlex.join(command)}` failed (exit {done.returncode}):\n{tail}")
    tests, pytest_seconds = int(summary[0]), float(summary[1])
    text = (
        f"`{shlex.join(command)}`: {tests} tests passed; pytest's own clock {pytest_seconds} s of "
        f"the {wall} s. CPU: make and its children {cpu:.0f} s, the local Postgres server "
        f"{server:.0f} s (other users of that server included), on {os.cpu_count()} cores. "
        "The ten slowest steps (`--durations=10`):\n\n"
        + table(
            ["test", "when", "seconds"],
            [[f"`{name}`", when, float(seconds)] for seconds, when, name in slowest],
        )
    )
    return Section(
        name="suite",
        title="8. The test suite",
        command="bench/run.py --only suite",
        text=text,
        targets=[
            Target(
                "`make test` wall s" + (" (tests/piapi only)" if quick else ""),
                wall,
                f"<= {TARGET_SECONDS:.0f}",
                None if quick else ratio(wall, TARGET_SECONDS, at_most=True),
            )
        ],
        raw={
            "wall_seconds": wall,
            "pytest_seconds": pytest_seconds,
            "tests": tests,
            "cpu_seconds": round(cpu, 1),
            "postgres_cpu_seconds": round(server, 1),
            "slowest": [[name, when, float(s)] for s, when, name in slowest],
        },
    )
