"""Engine overhead: N videos through one `loop` on a zero-latency emulator, next to naive httpx.

    .venv/bin/python bench/engine.py [--videos 1000] [--concurrency 100] [--chunk-size 50]
                                     [--download/--no-download] [--repeat 3] [--json]
                                     [--profile FILE] [--keep]

The emulator runs in a separate process (`python -m klingflow emulator`) with no latency,
no limits, tiny frames and shared renders, so what is left is the client side's cost. This
process then does, in order:

1. a warm-up of the emulator (a few naive videos; renders the one shared MP4);
2. **naive**, `--repeat` times: an httpx.AsyncClient script making the same requests (POST
   create, GET until completed, GET the file) for N videos, C at a time, nothing durable;
3. **engine**: `klingflow.workflows.engine.Engine` on SQLite in a temporary home, with the
   client it makes itself (as `klingflow run` has), launched, then one run of a workflow with
   a single `loop` over N items (concurrency C) whose body is one `kling.video` node (the
   first run: it includes DBOS's first queue scans), then `--repeat` more identical runs in
   the same process (the state a long-lived worker is in).

Repeated phases are reported by their median run (by wall time), as this machine is shared.

For each it measures wall time, this process's CPU time (every thread; the emulator's CPU is
its own and reported apart) and the emulator's request counters, and checks the work: N
creates exactly, every output completed (and downloaded). Numbers and how to read them are in
docs/benchmarks.md. Timing targets live here, never in test asserts.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import json
import os
import pstats
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Self
from unittest import mock

import httpx
import sqlalchemy as sa
import typer
import yaml

from klingflow.emulator import EmulatorConfig
from klingflow.piapi import WaitPolicy
from klingflow.settings import Settings
from klingflow.workflows import Workflow, load_workflow_text
from klingflow.workflows.engine import Engine
from klingflow.workflows.records import RunStatus

API_KEY = "bench-key"
WARMUP_VIDEOS = 20
FIRST_LOOK_SECONDS = 0.01
"""The first pause between status looks, engine and naive alike (zero latency: rarely used)."""
WAIT_POLICY = WaitPolicy(initial_interval_seconds=FIRST_LOOK_SECONDS, max_interval_seconds=0.05)
EMULATOR_SETTINGS: dict[str, Any] = {
    "api_keys": [API_KEY],
    "time_scale": 1000.0,
    "pending_seconds": 0,
    "processing_seconds": 0,  # with pending 0: completed by the first GET after the create
    "concurrency_limit": None,
    "rate_limit": None,
    "video_max_height": 16,
    "video_fps": 1,
    "reuse_renders": True,  # one render for every task (dropped when the emulator lacks it)
}
INPUT = {"duration": 5, "aspect_ratio": "16:9", "mode": "std", "version": "3.0"}
"""The request fields besides the prompt: the engine's node and the naive body send these."""
TERMINAL = frozenset({"completed", "failed", "cancelled"})
SETTLE_SECONDS = 0.5
WAIT_POLL_SECONDS = 0.1
"""How often the bench asks the run log whether a run is done (each look reads the run row)."""


def prompts(count: int, tag: str) -> list[str]:
    return [f"bench {tag} video {number}" for number in range(count)]


def workflow(
    *, concurrency: int, download: bool, outputs: dict[str, str] | None = None
) -> Workflow:
    """One loop over `inputs.prompts`, one `kling.video` per item: the batch users write;
    its `outputs` are every item's output unless given."""
    spec = {
        "name": "bench-engine",
        "inputs": {"prompts": {"type": "array", "required": True}},
        "nodes": [
            {
                "id": "each",
                "type": "loop",
                "with": {"items": "{{ inputs.prompts }}", "concurrency": concurrency},
                "nodes": [
                    {
                        "id": "video",
                        "type": "kling.video",
                        "with": {"prompt": "{{ item }}", **INPUT, "download": download},
                    }
                ],
            }
        ],
        "outputs": outputs or {"videos": "{{ nodes.each.output }}"},
    }
    return load_workflow_text(yaml.safe_dump(spec, sort_keys=False))


# -- the emulator, in its own process ---------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class EmulatorProcess:
    """`python -m klingflow emulator` on a free loopback port, with its CPU time readable."""

    def __init__(self, folder: Path, overrides: dict[str, Any] | None = None) -> None:
        wanted = {**EMULATOR_SETTINGS, **(overrides or {})}
        settings = {k: v for k, v in wanted.items() if k in EmulatorConfig.model_fields}
        self.has_shared_renders = "reuse_renders" in settings
        self.config_path = folder / "emulator.yaml"
        self.config_path.write_text(yaml.safe_dump(settings), encoding="utf-8")
        self.log_path = folder / "emulator.log"
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None
        self._control = httpx.Client(base_url=self.url, timeout=10.0)

    def __enter__(self) -> Self:
        command = [sys.executable, "-m", "klingflow", "emulator"]
        command += ["--port", str(self.port), "--config", str(self.config_path)]
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                command, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 30
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"the emulator exited: {self.log_path.read_text()}")
            with contextlib.suppress(httpx.TransportError):
                if self._control.get("/_emulator/stats").status_code == 200:
                    return self
            if time.monotonic() > deadline:
                raise RuntimeError(f"the emulator did not start on {self.url}")
            time.sleep(0.05)

    def __exit__(self, *exc_info: object) -> None:
        self._control.close()
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def stats(self) -> dict[str, Any]:
        response = self._control.get("/_emulator/stats")
        response.raise_for_status()
        stats: dict[str, Any] = response.json()
        return stats

    def cpu_seconds(self) -> float:
        """User + system CPU of the emulator process so far (Linux /proc)."""
        assert self._process is not None
        fields = Path(f"/proc/{self._process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
        return ticks / os.sysconf("SC_CLK_TCK")


# -- measuring ---------------------------------------------------------------------------------


@dataclass
class Result:
    """One measured phase; rates are derived from the totals."""

    name: str
    videos: int
    wall_seconds: float
    cpu_seconds: float
    emulator_cpu_seconds: float
    creates: int
    gets: int
    db_bytes_per_video: float | None = None
    commits: int | None = None
    """Database COMMITs in this process (run log and DBOS, one engine) during the phase."""
    machine_busy: float | None = None
    """The share of the whole machine's CPU (every core, every process) busy during the
    phase, when measured (bench/overhead.py)."""

    @property
    def videos_per_second(self) -> float:
        return self.videos / self.wall_seconds

    @property
    def cpu_ms_per_video(self) -> float:
        return 1000 * self.cpu_seconds / self.videos

    @property
    def cpu_share(self) -> float:
        """CPU seconds per wall second: 1.0 is one core kept busy."""
        return self.cpu_seconds / self.wall_seconds

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.__dict__,
            "videos_per_second": round(self.videos_per_second, 1),
            "cpu_ms_per_video": round(self.cpu_ms_per_video, 2),
            "emulator_cpu_ms_per_video": round(1000 * self.emulator_cpu_seconds / self.videos, 2),
            "cpu_share": round(self.cpu_share, 2),
        }

    def plus(self, other: Result, name: str) -> Result:
        """This phase followed by `other` (videos are `other`'s: a launch makes none)."""
        return Result(
            name=name,
            videos=other.videos,
            wall_seconds=self.wall_seconds + other.wall_seconds,
            cpu_seconds=self.cpu_seconds + other.cpu_seconds,
            emulator_cpu_seconds=self.emulator_cpu_seconds + other.emulator_cpu_seconds,
            creates=other.creates,
            gets=other.gets,
            db_bytes_per_video=other.db_bytes_per_video,
            commits=other.commits,
        )


def median(results: list[Result], name: str) -> Result:
    """The run of median wall time (the lower one of an even count), renamed."""
    ordered = sorted(results, key=lambda result: result.wall_seconds)
    chosen = ordered[(len(ordered) - 1) // 2]
    return Result(**{**chosen.__dict__, "name": name})


class Meter:
    """Wall clock, this process's CPU and the emulator's CPU and counters, from now."""

    def __init__(
        self, emulator: EmulatorProcess, cpu_of: Callable[[], float] | None = None
    ) -> None:
        self.emulator = emulator
        self.cpu_of = cpu_of or (lambda: 0.0)
        """Other processes' CPU seconds (workers) counted with this one's."""
        self.stats = emulator.stats()
        self.emulator_cpu = emulator.cpu_seconds()
        self.cpu = time.process_time() + self.cpu_of()
        self.wall = time.perf_counter()

    def result(self, name: str, videos: int) -> Result:
        wall = time.perf_counter() - self.wall
        cpu = time.process_time() + self.cpu_of() - self.cpu
        stats = self.emulator.stats()
        return Result(
            name=name,
            videos=videos,
            wall_seconds=wall,
            cpu_seconds=cpu,
            emulator_cpu_seconds=self.emulator.cpu_seconds() - self.emulator_cpu,
            creates=stats["creates"] - self.stats["creates"],
            gets=stats["gets"] - self.stats["gets"],
        )


def check(result: Result, *, stats_before: dict[str, Any], stats_after: dict[str, Any]) -> None:
    """Exactly N creates (and create requests): nothing lost, nothing paid twice."""
    requests = stats_after["create_requests"] - stats_before["create_requests"]
    if result.creates != result.videos or requests != result.videos:
        raise RuntimeError(
            f"{result.name}: {result.creates} creates from {requests} create requests for "
            f"{result.videos} videos"
        )


# -- naive httpx ---------------------------------------------------------------------------------


async def naive_batch(
    url: str, items: list[str], *, concurrency: int, download: bool, folder: Path
) -> None:
    """The same requests with plain httpx: no run log, no retries, nothing durable."""
    folder.mkdir(parents=True, exist_ok=True)
    slots = asyncio.Semaphore(concurrency)
    headers = {"x-api-key": API_KEY}

    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30.0) as http:

        async def data(response: httpx.Response) -> dict[str, Any]:
            response.raise_for_status()
            body: dict[str, Any] = response.json()["data"]
            return body

        async def one(prompt: str) -> None:
            async with slots:
                body = {"model": "kling", "task_type": "video_generation"}
                task = await data(
                    await http.post(
                        "/api/v1/task", json={**body, "input": {"prompt": prompt, **INPUT}}
                    )
                )
                pause = FIRST_LOOK_SECONDS
                while True:
                    task = await data(await http.get(f"/api/v1/task/{task['task_id']}"))
                    if task["status"] in TERMINAL:
                        break
                    await asyncio.sleep(pause)
                    pause = min(0.05, pause * 1.5)
                if task["status"] != "completed":
                    raise RuntimeError(f"task {task['task_id']} is {task['status']}")
                if download:
                    path = folder / f"{task['task_id']}.mp4"
                    async with http.stream("GET", task["output"]["video"]) as response:
                        response.raise_for_status()
                        with path.open("wb") as file:
                            async for chunk in response.aiter_bytes():
                                file.write(chunk)

        await asyncio.gather(*(one(prompt) for prompt in items))


def run_naive(
    emulator: EmulatorProcess, videos: int, *, concurrency: int, download: bool, folder: Path
) -> Result:
    before = emulator.stats()
    meter = Meter(emulator)
    asyncio.run(
        naive_batch(
            emulator.url,
            prompts(videos, "naive"),
            concurrency=concurrency,
            download=download,
            folder=folder,
        )
    )
    result = meter.result("naive httpx", videos)
    check(result, stats_before=before, stats_after=emulator.stats())
    if download and len(list(folder.iterdir())) != videos:
        raise RuntimeError(f"naive: {len(list(folder.iterdir()))} files for {videos} videos")
    return result


# -- the engine ----------------------------------------------------------------------------------


async def engine_run(
    engine: Engine,
    spec: Workflow,
    emulator: EmulatorProcess,
    *,
    videos: int,
    tag: str,
    download: bool,
    cpu_of: Callable[[], float] | None = None,
    commits: list[int] | None = None,
) -> Result:
    """Start one run of the loop and wait for it; checks every item's output."""
    before = emulator.stats()
    meter = Meter(emulator, cpu_of)
    commits_before = commits[0] if commits else 0
    run = await engine.start_run(spec, {"prompts": prompts(videos, tag)})
    [record] = await engine.wait([run.run_id], poll_seconds=WAIT_POLL_SECONDS)
    result = meter.result(f"engine {tag}", videos)
    if commits:
        result.commits = commits[0] - commits_before
    if record.status != RunStatus.COMPLETED:
        raise RuntimeError(f"run {record.run_id} is {record.status}: {record.message}")
    outputs = record.outputs["videos"]
    done = [item for item in outputs if item and item["video"]["status"] == "completed"]
    if len(outputs) != videos or len(done) != videos:
        raise RuntimeError(f"run {record.run_id}: {len(done)} of {videos} videos completed")
    if download and not all(Path(item["video"]["path"]).is_file() for item in done):
        raise RuntimeError(f"run {record.run_id}: some downloads are missing")
    check(result, stats_before=before, stats_after=emulator.stats())
    return result


def db_size(url: str) -> int:
    """The SQLite file's size once its write-ahead log is folded in."""
    path = url.removeprefix("sqlite:///")
    with contextlib.closing(sqlite3.connect(path)) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return sum(
        Path(path + suffix).stat().st_size
        for suffix in ("", "-wal", "-shm")
        if Path(path + suffix).exists()
    )


def users_engine(settings: Settings, emulator: EmulatorProcess, **options: Any) -> Engine:
    """The engine with its own client, made as `klingflow run`, `worker` and `serve` make
    it: its transport checks where downloads connect, and on Postgres its limits are leases
    shared with the other workers (the bench passed a client of its own until session 16,
    which measured neither)."""
    with mock.patch.dict(os.environ, {"PIAPI_API_KEY": API_KEY, "PIAPI_BASE_URL": emulator.url}):
        return Engine(settings, **options)


async def engine_batches(
    emulator: EmulatorProcess,
    videos: int,
    *,
    concurrency: int,
    chunk_size: int,
    download: bool,
    home: Path,
    repeat: int,
    profile: cProfile.Profile | None,
    database_url: str | None = None,
    cpu_of: Callable[[], float] | None = None,
) -> tuple[Result, Result, list[Result]]:
    """Launch, a first run, `repeat` later runs: (launch, first, later), DB size in each.

    `database_url` (Postgres) replaces the temporary SQLite file (no DB size then); `cpu_of`
    adds other processes' CPU seconds (workers sharing the database) to this one's."""
    settings = Settings(
        home=home,
        database_url=database_url,
        executor_id=None,
        concurrency=concurrency,  # the PiAPI queue's chunk workflows at once
        requests_per_minute=1_000_000,  # no limiter on the queue or the client
        max_runs=4,
    )
    spec = workflow(concurrency=concurrency, download=download)
    engine = users_engine(settings, emulator, wait_policy=WAIT_POLICY, chunk_size=chunk_size)
    if profile is not None:
        profile.enable()
    meter = Meter(emulator, cpu_of)
    async with engine:
        launch = meter.result("engine launch", 0)
        commits = [0]

        def count(_connection: Any) -> None:
            commits[0] += 1

        sa.event.listen(engine.runlog.engine, "commit", count)
        first = await engine_run(
            engine, spec, emulator, videos=videos, tag="0", download=download, cpu_of=cpu_of,
            commits=commits,
        )  # fmt: skip
        later = [
            await engine_run(
                engine,
                spec,
                emulator,
                videos=videos,
                tag=str(n),
                download=download,
                cpu_of=cpu_of,
                commits=commits,
            )
            for n in range(1, repeat + 1)
        ]
        # The run log says "completed" a moment before DBOS stores the run workflow's output;
        # closing at once makes DBOS log an error for that last write (not measured).
        await asyncio.sleep(SETTLE_SECONDS)
    if profile is not None:
        profile.disable()
    if database_url is None:
        per_video = db_size(settings.resolved_database_url()) / (videos * (1 + repeat))
        for result in (first, *later):
            result.db_bytes_per_video = per_video
    return launch, first, later


# -- the command ---------------------------------------------------------------------------------


def table(results: list[Result]) -> str:
    header = (
        "| phase | videos | wall s | videos/s | CPU ms/video | CPU share | emulator CPU ms/video "
        "| GETs/video | DB KB/video | commits/video |"
    )
    lines = [header, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        db = "-" if r.db_bytes_per_video is None else f"{r.db_bytes_per_video / 1024:.1f}"
        commits = "-" if r.commits is None else f"{r.commits / r.videos:.2f}"
        lines.append(
            f"| {r.name} | {r.videos} | {r.wall_seconds:.2f} | {r.videos_per_second:.1f} | "
            f"{r.cpu_ms_per_video:.2f} | {r.cpu_share:.2f} | "
            f"{1000 * r.emulator_cpu_seconds / r.videos:.2f} | {r.gets / r.videos:.2f} | {db} "
            f"| {commits} |"
        )
    return "\n".join(lines)


@contextlib.contextmanager
def scratch_folder(keep: bool) -> Iterator[Path]:
    folder = Path(tempfile.mkdtemp(prefix="klingflow-bench-"))
    try:
        yield folder
    finally:
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)


def main(
    videos: Annotated[int, typer.Option(min=1, help="Videos per batch.")] = 1000,
    concurrency: Annotated[int, typer.Option(min=1, max=100, help="Items in flight.")] = 100,
    chunk_size: Annotated[int, typer.Option(min=1, help="Loop items per chunk workflow.")] = 50,
    download: Annotated[bool, typer.Option(help="kling.video downloads each MP4.")] = True,
    repeat: Annotated[
        int, typer.Option(min=1, help="Naive batches, and engine runs after the first.")
    ] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON, not a table.")] = False,
    profile: Annotated[
        Path | None,
        typer.Option(help="cProfile the engine phase (event-loop thread) into this file."),
    ] = None,
    keep: Annotated[bool, typer.Option(help="Keep the temporary folder (DB, files).")] = False,
) -> None:
    """Engine overhead vs naive httpx on a zero-latency emulator in another process."""
    with scratch_folder(keep) as folder, EmulatorProcess(folder) as emulator:
        run_naive(
            emulator,
            WARMUP_VIDEOS,
            concurrency=concurrency,
            download=True,
            folder=folder / "warmup",
        )
        naive = [
            run_naive(
                emulator,
                videos,
                concurrency=concurrency,
                download=download,
                folder=folder / f"naive-{n}",
            )
            for n in range(repeat)
        ]
        profiler = cProfile.Profile() if profile else None
        launch, first, later = asyncio.run(
            engine_batches(
                emulator,
                videos,
                concurrency=concurrency,
                chunk_size=chunk_size,
                download=download,
                home=folder / "home",
                repeat=repeat,
                profile=profiler,
            )
        )
        if profiler is not None and profile is not None:
            profiler.dump_stats(profile)
        shared = emulator.has_shared_renders
        if keep:
            print(f"kept {folder}", file=sys.stderr)
    results = [
        median(later, f"engine, later runs (median of {repeat})"),
        median([first], "engine, first run"),
        launch.plus(first, "engine, launch + first run"),
        median(naive, f"naive httpx (median of {repeat})"),
    ]
    settings = {
        "videos": videos,
        "concurrency": concurrency,
        "chunk_size": chunk_size,
        "download": download,
        "repeat": repeat,
        "launch_seconds": round(launch.wall_seconds, 3),
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "sqlite": sqlite3.sqlite_version,
        "emulator_shared_renders": shared,
    }
    if as_json:
        runs = {"naive": naive, "engine_first": [first], "engine_later": later}
        print(
            json.dumps(
                {
                    "settings": settings,
                    "results": [r.as_dict() for r in results],
                    "runs": {k: [r.as_dict() for r in v] for k, v in runs.items()},
                }
            )
        )
        return
    print(" ".join(f"{k}={v}" for k, v in settings.items()))
    print(table(results))
    if profile is not None:
        print(f"\ncProfile of the engine phase (event-loop thread) in {profile}:")
        pstats.Stats(str(profile)).sort_stats("tottime").print_stats(20)


if __name__ == "__main__":
    typer.run(main)
