"""Item 4 of issue 16: engine overhead on a zero-latency emulator, against a bare httpx script.

    .venv/bin/python bench/run.py --only overhead [--quick] [--no-postgres]

Reuses `engine.py` (emulator in its own process, the same requests on both sides, every
result checked): the bare script first, then one run of N videos through the engine on
SQLite, on Postgres with 1 worker (this process), and on Postgres with 3 workers (this
process plus two engines in subprocesses sharing the database and its queue; their CPU is
counted with this one's). Downloads on. For the full profile and history, `bench/engine.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import engine as eng
import psycopg
from common import (
    Options,
    Section,
    Target,
    bar_chart,
    cpu_seconds,
    fresh_postgres,
    ratio,
    table,
)

CONCURRENCY = 100
CHUNK_SIZE = 50

WORKER = """
import asyncio, sys
sys.path.insert(0, sys.argv[1])
from engine import WAIT_POLICY
from klingflow.settings import Settings
from klingflow.workflows.engine import Engine

async def main() -> None:
    async with Engine(Settings(), wait_policy=WAIT_POLICY, chunk_size=int(sys.argv[3]),
                      executor_id=sys.argv[4]):
        print("ready", flush=True)
        await asyncio.Event().wait()

asyncio.run(main())
"""


@contextlib.contextmanager
def extra_workers(
    count: int,
    database_url: str,
    emulator_url: str,
    folder: Path,
    requests_per_minute: int = 1_000_000,
) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Engines in subprocesses, configured as the bench's own (fast looks; no request limit
    unless given: on Postgres it is held by all workers together)."""
    env = {
        **os.environ,
        "PIAPI_API_KEY": eng.API_KEY,
        "PIAPI_BASE_URL": emulator_url,
        "KLINGFLOW_DATABASE_URL": database_url,
        "KLINGFLOW_CONCURRENCY": str(CONCURRENCY),
        "KLINGFLOW_REQUESTS_PER_MINUTE": str(requests_per_minute),
        "KLINGFLOW_MAX_RUNS": "4",
    }
    processes = []
    try:
        for number in range(count):
            home = folder / f"worker-{number}"
            home.mkdir(parents=True, exist_ok=True)
            log = (folder / f"worker-{number}.log").open("wb")
            processes.append(
                subprocess.Popen(  # noqa: S603 - our own interpreter
                    [
                        sys.executable,
                        "-c",
                        WORKER,
                        str(Path(__file__).parent),
                        emulator_url,
                        str(CHUNK_SIZE),
                        f"bench-worker-{number}",
                    ],
                    env={**env, "KLINGFLOW_HOME": str(home)},
                    stdout=subprocess.PIPE,
                    stderr=log,
                )
            )
        for process in processes:
            assert process.stdout is not None
            if process.stdout.readline().strip() != b"ready":
                raise RuntimeError(f"a worker did not start; see {folder}")
        yield processes
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


def machine_busy() -> tuple[int, int]:
    """(busy, all) CPU ticks of the whole machine so far, every core (Linux /proc/stat)."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = ticks[3] + ticks[4]  # idle, iowait
    return sum(ticks) - idle, sum(ticks)


def engine_phase(
    emulator: eng.EmulatorProcess,
    videos: int,
    folder: Path,
    name: str,
    database_url: str | None = None,
    workers: list[subprocess.Popen[bytes]] | None = None,
) -> eng.Result:
    def others() -> float:
        return sum(cpu_seconds(p.pid) for p in workers or [] if p.poll() is None)

    busy_before, all_before = machine_busy()
    _, first, _ = asyncio.run(
        eng.engine_batches(
            emulator,
            videos,
            concurrency=CONCURRENCY,
            chunk_size=CHUNK_SIZE,
            download=True,
            home=folder / name.replace(" ", "-").replace(",", ""),
            repeat=1,
            profile=None,
            database_url=database_url,
            cpu_of=others,
        )
    )
    busy_after, all_after = machine_busy()
    first.machine_busy = (busy_after - busy_before) / max(1, all_after - all_before)
    first.name = name
    return first


def chunks_per_executor(database_url: str) -> dict[str, int]:
    """How many of the loops' chunks each process ran (DBOS's executor ids): whether the
    work spread over the workers at all."""
    with psycopg.connect(database_url, autocommit=True) as db:
        rows = db.execute(
            "select executor_id, count(*) from dbos.workflow_status"
            " where name = 'klingflow.loop_chunk' group by executor_id order by executor_id"
        ).fetchall()
    return {str(executor): int(count) for executor, count in rows}


def measure(quick: bool, options: Options) -> Section:
    videos = 200 if quick else 1000
    chunks_by_worker: dict[str, int] = {}
    results: list[eng.Result] = []
    with (
        tempfile.TemporaryDirectory(prefix="klingflow-overhead-") as name,
        eng.EmulatorProcess(Path(name)) as emulator,
    ):
        folder = Path(name)
        eng.run_naive(
            emulator,
            eng.WARMUP_VIDEOS,
            concurrency=CONCURRENCY,
            download=True,
            folder=folder / "warmup",
        )
        naive = eng.run_naive(
            emulator, videos, concurrency=CONCURRENCY, download=True, folder=folder / "naive"
        )
        naive.name = "bare httpx script"
        results.append(naive)
        results.append(engine_phase(emulator, videos, folder, "engine, SQLite"))
        if options.postgres:
            with fresh_postgres(options.postgres) as url:
                assert url is not None
                results.append(
                    engine_phase(emulator, videos, folder, "engine, Postgres, 1 worker", url)
                )
            with fresh_postgres(options.postgres) as url:
                assert url is not None
                with extra_workers(2, url, emulator.url, folder) as workers:
                    results.append(
                        engine_phase(
                            emulator, videos, folder, "engine, Postgres, 3 workers", url, workers
                        )
                    )
                chunks_by_worker = chunks_per_executor(url)
    rate = {r.name: r.videos_per_second for r in results}
    bare = rate["bare httpx script"]
    sqlite_share = round(rate["engine, SQLite"] / bare, 2)
    targets = [
        Target(
            "engine SQLite / bare script, videos/s",
            sqlite_share,
            ">= 0.5",
            ratio(sqlite_share, 0.5, at_most=False),
        )
    ]
    scale_out = None
    if "engine, Postgres, 3 workers" in rate:
        scale_out = round(
            rate["engine, Postgres, 3 workers"] / rate["engine, Postgres, 1 worker"], 2
        )
        three = next(r for r in results if r.name == "engine, Postgres, 3 workers")
        # What 2 cores allow at the CPU these processes spent per video (Postgres not
        # counted, so the true ceiling is lower still).
        per_video = (three.cpu_seconds + three.emulator_cpu_seconds) / three.videos
        ceiling = round((os.cpu_count() or 1) / per_video / rate["engine, Postgres, 1 worker"], 2)
        targets.append(
            Target(
                "Postgres 3 workers / 1 worker, videos/s",
                scale_out,
                ">= 2.5",
                ratio(scale_out, 2.5, at_most=False),
            )
        )
        targets.append(
            Target(
                "the most 3 workers / 1 worker can be on this machine's cores",
                ceiling,
                "(the hardware's ceiling)",
                None,
            )
        )
    figure = bar_chart(
        "overhead.png",
        [r.name for r in results],
        [r.videos_per_second for r in results],
        "videos/s (zero-latency emulator, downloads on)",
        marks={"0.5 x bare": 0.5 * bare},
    )
    rows: list[list[Any]] = [
        [
            r.name,
            r.videos,
            round(r.wall_seconds, 2),
            f"**{r.videos_per_second:.1f}**",
            round(r.videos_per_second / bare, 2),
            round(r.cpu_ms_per_video, 2),
            round(1000 * r.emulator_cpu_seconds / r.videos, 2),
            None if r.machine_busy is None else f"{100 * r.machine_busy:.0f} %",
        ]
        for r in results
    ]
    text = (
        f"{videos} videos, {CONCURRENCY} in flight, loop chunks of {CHUNK_SIZE}, downloads on, "
        "emulator with no latency in its own process; the engine's first run in a freshly "
        "launched process (DBOS's first queue scans included). Every engine makes its own "
        "client, as `klingflow run` and `klingflow worker` do: on Postgres its limits are the "
        "leases all workers share, one worker included. CPU counts this process and, "
        "for 3 workers, the two worker processes; the emulator's is apart. On 2 cores, three "
        "engine processes plus the emulator and Postgres share two CPUs: 3 workers cannot reach "
        "2.5x one here, whatever the engine does.\n\n"
        + (
            "**Scale-out on this machine.** The loops' chunks (of the warm-up run too) ran "
            + ", ".join(f"{count} in `{name}`" for name, count in chunks_by_worker.items())
            + ". At the CPU the 3 workers and the emulator spent per video, "
            f"{os.cpu_count()} cores allow at most **{ceiling} x** one worker's rate "
            "(Postgres's own CPU not counted). The last column is how busy the whole "
            "machine's CPU was during each phase (every core, every process: Postgres "
            "included, and whatever else ran; near 100 % the phase was bound by the cores)."
            "\n\n"
            if scale_out is not None
            else ""
        )
        + table(
            [
                "phase",
                "videos",
                "wall s",
                "videos/s",
                "/ bare",
                "CPU ms/video",
                "emulator CPU ms/video",
                "machine CPU busy",
            ],
            rows,
        )
    )
    return Section(
        name="overhead",
        title="4. Engine overhead",
        command="bench/run.py --only overhead",
        text=text,
        targets=targets,
        figures=[figure],
        raw={
            "videos": videos,
            "results": [r.as_dict() for r in results],
            "scale_out": scale_out,
            "chunks_by_worker": chunks_by_worker,
        },
    )
