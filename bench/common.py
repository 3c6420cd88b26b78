"""What every measurement of `bench/run.py` shares: the section it returns, the machine it ran
on, percentiles, RSS, the load average, Postgres databases, worker processes and plots.

Each measurement module (`makespan.py`, `requests.py`, ...) exposes
`measure(quick: bool, options: Options) -> Section`; `run.py` calls them in turn and writes
docs/benchmarks.md and docs/benchmarks.json from their sections. Kept here so that every
module reports the same way, and a figure in the doc always carries its command and targets.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import platform
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psycopg

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
IMAGES = DOCS / "images" / "bench"
DEFAULT_POSTGRES = os.environ.get(
    "KLINGFLOW_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


@dataclass
class Options:
    """Knobs `run.py` passes to every measurement (the scale-down flags of issue 16)."""

    postgres: str | None = DEFAULT_POSTGRES
    inflight: int | None = None
    """Tasks in flight for the RSS figure (default: 2,000 full, 300 quick; issue: 5,000)."""
    batch_videos: int | None = None
    """Largest batch of the growth figure (default: 4,000 full, 400 quick; issue: 100,000)."""


@dataclass
class Target:
    """One figure against its target: `ok` is None when there is nothing to compare."""

    name: str
    value: float | None
    target: str
    ok: bool | None
    note: str = ""


@dataclass
class Section:
    """What one measurement returns: markdown tables, plots, targets and the raw numbers."""

    name: str
    title: str
    command: str
    text: str
    targets: list[Target] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    run: dict[str, Any] = field(default_factory=dict)


def percentile(values: list[float], share: float) -> float | None:
    """The nearest-rank percentile (`share` in 0..1); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(share * len(ordered)) - 1))]


def rss_mb(pid: int | None = None) -> float:
    """Resident set size of a process (this one by default), from /proc, in MB."""
    status = Path(f"/proc/{pid or 'self'}/status").read_text()
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int | str, *, reaped: bool = False) -> float:
    """User + system CPU of a process so far (Linux /proc); `reaped`: with its children's
    that it waited for."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(value) for value in fields[11 : 15 if reaped else 13]) / os.sysconf("SC_CLK_TCK")


def table(header: list[str], rows: list[list[Any]]) -> str:
    """A markdown table; numbers right-aligned."""
    aligns = ["---" if i == 0 else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(aligns) + "|"]
    lines += ["| " + " | ".join("-" if c is None else str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def ratio(value: float | None, limit: float, *, at_most: bool) -> bool | None:
    if value is None:
        return None
    return value <= limit if at_most else value >= limit


class LoadSampler:
    """The 1-minute load average every few seconds while a measurement runs: the machine is
    shared, and a figure means little without how busy it was."""

    def __init__(self, every_seconds: float = 2.0) -> None:
        self.every = every_seconds
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(os.getloadavg()[0])
            self._stop.wait(self.every)

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict[str, float]:
        values = self.samples or [os.getloadavg()[0]]
        return {
            "min": round(min(values), 2),
            "mean": round(sum(values) / len(values), 2),
            "max": round(max(values), 2),
        }


def git_commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(  # noqa: S603 - git, fixed arguments
            ["git", *args],  # noqa: S607 - git from PATH, as a developer runs it
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "src")
    return commit + (" (src modified)" if dirty else "")


def postgres_version(url: str | None) -> str | None:
    if url is None:
        return None
    try:
        with psycopg.connect(url, connect_timeout=3) as connection:
            row = connection.execute("SHOW server_version").fetchone()
            return str(row[0]) if row else None
    except psycopg.Error:
        return None


def machine(postgres: str | None) -> dict[str, Any]:
    """Cores, CPU model, memory, Python, SQLite, Postgres and key library versions."""
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory_gb = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        memory_gb = round(int(Path("/proc/meminfo").read_text().split()[1]) / 1024 / 1024, 1)
    from importlib.metadata import version

    libraries = {}
    for name in ("dbos", "httpx", "sqlalchemy", "uvicorn", "klingflow"):
        with contextlib.suppress(Exception):
            libraries[name] = version(name)
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "memory_gb": memory_gb,
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "sqlite": sqlite3.sqlite_version,
        "postgres": postgres_version(postgres),
        "libraries": libraries,
    }


@contextlib.contextmanager
def fresh_postgres(admin_url: str | None) -> Iterator[str | None]:
    """A new, empty Postgres database on `admin_url`'s server, dropped after (None: SQLite)."""
    if admin_url is None:
        yield None
        return
    name = f"kf_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield admin_url.rsplit("/", 1)[0] + f"/{name}"
        finally:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


T = TypeVar("T")


def side_by_side(calls: Sequence[Callable[[], T]], *, stagger_seconds: float = 0.0) -> list[T]:
    """Run each call (a module-level function, or a `functools.partial` of one) in a fresh
    process of its own, the n-th `stagger_seconds` x n after the first; their results in order.

    For measurements that mostly wait on the emulator's clock: side by side they take the
    longest one's time, not the sum, and each keeps an interpreter of its own, so no GIL or
    event loop is shared that could skew another's latencies. Batches on the same clock end
    their waves at the same moments: staggered, their detections do not queue behind each
    other's."""
    spawn = multiprocessing.get_context("spawn")
    # One call a process: a pool reuses a process that is idle by the time the next call
    # is submitted (a quick first call, on a busy machine), so two would share it in turn.
    with ProcessPoolExecutor(len(calls), mp_context=spawn, max_tasks_per_child=1) as pool:
        futures = [pool.submit(_after, n * stagger_seconds, call) for n, call in enumerate(calls)]
        return [future.result() for future in futures]


def _after(seconds: float, call: Callable[[], T]) -> T:
    time.sleep(seconds)
    return call()


def wait_for(condition: Any, *, timeout_seconds: float, every_seconds: float = 0.05) -> bool:
    """Poll `condition()` until true or the timeout; returns its last answer."""
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(every_seconds)
    return bool(condition())


def plot() -> Any:
    """matplotlib's pyplot on the file-only backend (the `bench` extra installs it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    return pyplot


def bar_chart(
    name: str,
    labels: list[str],
    values: list[float],
    xlabel: str,
    *,
    log: bool = False,
    marks: dict[str, float] | None = None,
    height: float = 3.0,
) -> str:
    """One horizontal bar per contender (the first on top) and dashed reference lines
    (`marks`: label -> x), saved as `name`; returns its path relative to docs/."""
    figure, axes = plot().subplots(figsize=(6, height))
    axes.barh(labels, values)
    if log:
        axes.set_xscale("log")
    for label, x in (marks or {}).items():
        axes.axvline(x, color="green", linestyle="--", linewidth=1, label=label)
    if marks:
        axes.legend(loc="lower right", fontsize=8)
    axes.set_xlabel(xlabel)
    axes.invert_yaxis()
    return save(figure, name)


def save(figure: Any, name: str) -> str:
    """Write a figure under docs/images/bench/; returns its path relative to docs/."""
    IMAGES.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(IMAGES / name, dpi=90)
    plot().close(figure)
    return f"images/bench/{name}"
