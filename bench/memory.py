"""Item 5 of issue 16: memory with many tasks in flight, growth over a large batch, and how
fast a large run reads back.

    .venv/bin/python bench/run.py --only memory [--quick] [--inflight 5000] [--batch-videos 100000]

Each part runs in a child process (`python bench/memory.py inflight|batch N`), so its RSS is
the engine's alone (the emulator is a process of its own too) and nothing of an earlier part
stays in it:

- **inflight**: an emulator whose renders never end in time; one loop of N items with N
  allowed at once; once the emulator has N tasks, the child's RSS.
- **batch**: N videos on a zero-latency emulator, no downloads, SQLite; RSS and the DB's size
  sampled as videos complete (bytes per video should stay flat, RSS should not grow with N,
  during the loop or at its end: `rss_loop_end_max_mb`, `peak_rss_mb`; the run's `outputs:`
  count the videos, or name every item's output with KLINGFLOW_BENCH_BATCH_OUTPUTS=all),
  then `klingflow runs show RUN --json` (a CLI process) and `GET /api/runs/{id}` (the
  service's app in process) timed on that run, wall and CPU (the wall time of a process
  waits for a busy machine; its CPU time does not).

With KLINGFLOW_BENCH_KEEP=FOLDER the parts run in FOLDER and leave it there:
`python bench/memory.py readback FOLDER/batch/home RUN` then times the read-back again (e.g.
after a change to the CLI, without running the batch again).

The issue asks for 5,000 in flight and a 100,000-video batch; the default full run uses
2,000 and 4,000 to fit the time budget (`--inflight 5000 --batch-videos 100000` for the
real thing: about 8 minutes on 2 cores, the batch alone 7 at about 230 videos/s).
"""

from __future__ import annotations

import asyncio
import compileall
import dataclasses
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import engine as eng
from common import DOCS, Options, Section, Target, plot, ratio, rss_mb, save, table

from klingflow.settings import Settings
from klingflow.workflows.engine import Engine

CHUNK_SIZE = 50
READ_BACK_TIMES = 3
"""`runs show` and the API are timed this many times on the batch's run: the median is kept."""
OUTPUTS_ENV = "KLINGFLOW_BENCH_BATCH_OUTPUTS"
KEEP_ENV = "KLINGFLOW_BENCH_KEEP"
"""A folder to run the parts in and keep (else a temporary one): `memory.py readback
FOLDER/batch/home RUN` times `runs show` and the API on the kept run again."""
BATCH_OUTPUTS = {
    "count": {"videos": "{{ nodes.each.output | length }}"},
    "all": {"videos": "{{ nodes.each.output }}"},
}
"""The batch's `outputs:`: a count (default), or every item's output, which the run then holds."""
LOOP_LIMIT = 100
"""A loop's `concurrency` is at most 100 (per run and process)."""


def _children_cpu() -> float:
    """CPU seconds (user and system) of the child processes waited for so far."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def _creates(emulator: eng.EmulatorProcess) -> int:
    """Tasks the emulator created so far, without its per-task counters: read every second
    in the process measured, a 50,000-task body (about 12 MB, parsed into 50,000 dicts)
    grew its RSS with the batch, as much as the engine's own growth."""
    response = emulator._control.get("/_emulator/stats", params={"tasks": "false"})
    response.raise_for_status()
    creates: int = response.json()["creates"]
    return creates


def _sqlite_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if p.exists())


async def inflight(count: int, folder: Path) -> dict[str, Any]:
    """A loop runs at most 100 items at once per run and process, so N in flight are
    ceil(N / 100) runs of one 100-item loop each, all executing at once."""
    overrides = {"processing_seconds": 3600.0, "time_scale": 1.0}
    runs = math.ceil(count / LOOP_LIMIT)
    with eng.EmulatorProcess(folder, overrides) as emulator:
        baseline = rss_mb()
        settings = Settings(
            home=folder / "home",
            database_url=None,
            concurrency=count,
            requests_per_minute=1_000_000,
            max_runs=runs,
        )
        async with eng.users_engine(settings, emulator, chunk_size=CHUNK_SIZE) as engine:
            launched = rss_mb()
            spec = eng.workflow(concurrency=LOOP_LIMIT, download=False)
            started = time.monotonic()
            for number in range(runs):
                size = min(LOOP_LIMIT, count - number * LOOP_LIMIT)
                await engine.start_run(spec, {"prompts": eng.prompts(size, f"inflight-{number}")})
            creates = 0
            while time.monotonic() - started < 300:
                creates = _creates(emulator)
                if creates >= count:
                    break
                await asyncio.sleep(0.5)
            await asyncio.sleep(2)
            result = {
                "tasks": count,
                "in_flight": creates,
                "runs": runs,
                "rss_mb": round(rss_mb(), 1),
                "baseline_mb": round(baseline, 1),
                "launched_mb": round(launched, 1),
                "seconds_to_submit": round(time.monotonic() - started, 1),
                # what each task in flight holds once launched: the figure that extrapolates
                "kb_per_task": round((rss_mb() - launched) * 1024 / max(creates, 1), 1),
            }
            # Tearing down thousands of waiting tasks is not measured: stop the emulator and
            # leave at once.
            print(json.dumps(result), flush=True)
            emulator.__exit__(None, None, None)
            os._exit(0)


async def large_batch(count: int, folder: Path) -> dict[str, Any]:
    with eng.EmulatorProcess(folder) as emulator:
        home = folder / "home"
        settings = Settings(
            home=home, database_url=None, concurrency=100, requests_per_minute=1_000_000, max_runs=4
        )
        samples: list[dict[str, float]] = []
        db = Path(settings.resolved_database_url().removeprefix("sqlite:///"))
        engine = eng.users_engine(
            settings, emulator, wait_policy=eng.WAIT_POLICY, chunk_size=CHUNK_SIZE
        )
        async with engine:
            # Outputs that count the videos: holding every item's output is the user's choice
            # (`"{{ nodes.each.output }}"`, `--batch-outputs all`), measured apart.
            spec = eng.workflow(
                concurrency=100,
                download=False,
                outputs=BATCH_OUTPUTS[os.environ.get(OUTPUTS_ENV, "count")],
            )
            base_creates = _creates(emulator)
            base_bytes = _sqlite_bytes(db)
            stop = threading.Event()

            def sample() -> None:
                while not stop.wait(1.0):
                    done = _creates(emulator) - base_creates
                    samples.append(
                        {
                            "videos": done,
                            "rss_mb": round(rss_mb(), 1),
                            "db_bytes": _sqlite_bytes(db) - base_bytes,
                        }
                    )

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            started = time.monotonic()
            run = await engine.start_run(spec, {"prompts": eng.prompts(count, "large")})
            [record] = await engine.wait([run.run_id], poll_seconds=1.0)
            wall = time.monotonic() - started
            stop.set()
            sampler.join()
            peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux
            end_mb = rss_mb()
            await asyncio.sleep(eng.SETTLE_SECONDS)
        db_bytes = eng.db_size(f"sqlite:///{db}") - base_bytes
        shown = read_back(home, run.run_id)
        during = [s["rss_mb"] for s in samples if count / 4 <= s["videos"] < count * 0.95]
        return {
            "videos": count,
            "status": str(record.status),
            "outputs": os.environ.get(OUTPUTS_ENV, "count"),
            "rss_during_max_mb": max(during, default=None),
            "rss_loop_end_max_mb": max(
                (s["rss_mb"] for s in samples if s["videos"] >= count), default=None
            ),
            "rss_after_run_mb": round(end_mb, 1),
            "peak_rss_mb": round(peak_mb, 1),
            "load_average": os.getloadavg(),
            "wall_seconds": round(wall, 1),
            "db_bytes_per_video": round(db_bytes / count),
            "samples": samples,
            "home": str(home),
            "run_id": run.run_id,
            **shown,
        }


def read_back(home: Path, run_id: str) -> dict[str, Any]:
    """`klingflow runs show RUN --json` (a CLI process) and `GET /api/runs/{id}` (the app
    in process) on a finished run, wall and CPU, the median of `READ_BACK_TIMES`.

    klingflow's bytecode is compiled first, as installing a wheel does: a checkout run with
    PYTHONDONTWRITEBYTECODE (this machine's default) would otherwise compile every module
    the CLI imports, on each run (measured: a third of its CPU)."""
    import klingflow

    compileall.compile_dir(Path(klingflow.__file__).parent, quiet=1)
    env = {**os.environ, "KLINGFLOW_HOME": str(home)}
    command = [sys.executable, "-m", "klingflow", "runs", "show", run_id, "--json"]
    shows: list[tuple[float, float, subprocess.CompletedProcess[bytes]]] = []
    for _ in range(READ_BACK_TIMES):
        cpu_before = _children_cpu()
        began = time.perf_counter()
        shown = subprocess.run(command, env=env, capture_output=True, check=False)  # noqa: S603
        # The wall time waits for a busy machine; the CPU time does not.
        shows.append((time.perf_counter() - began, _children_cpu() - cpu_before, shown))
    runs_show, runs_show_cpu, shown = sorted(shows, key=lambda s: s[1])[len(shows) // 2]
    from fastapi.testclient import TestClient

    from klingflow.service import create_app

    os.environ.setdefault("PIAPI_API_KEY", eng.API_KEY)  # never used: nothing executes

    def reader(settings: Settings) -> Engine:
        return Engine(settings, execute=False)

    app = create_app(Settings(home=home, database_url=None), engine_factory=reader)
    answers = []
    with TestClient(app, base_url="http://127.0.0.1", client=("127.0.0.1", 50000)) as http:
        for _ in range(READ_BACK_TIMES):
            began, cpu_began = time.perf_counter(), time.process_time()
            answer = http.get(f"/api/runs/{run_id}")
            answers.append((time.perf_counter() - began, time.process_time() - cpu_began, answer))
    api, api_cpu, answer = sorted(answers, key=lambda a: a[1])[len(answers) // 2]
    return {
        "runs_show_seconds": round(runs_show, 2),
        "runs_show_cpu_seconds": round(runs_show_cpu, 2),
        "runs_show_exit": shown.returncode,
        "runs_show_bytes": len(shown.stdout),
        "api_seconds": round(api, 3),
        "api_cpu_seconds": round(api_cpu, 3),
        "api_status": answer.status_code,
        "api_bytes": len(answer.content),
    }


def save_read_back(again: dict[str, Any]) -> None:
    """Put read-back figures taken again into the last full run's memory section, said so."""
    import run

    path = DOCS / "benchmarks.json"
    results = json.loads(path.read_text())
    old = results["sections"]["memory"]
    raw = old["raw"]
    rebuilt = dataclasses.asdict(section(raw["inflight"], {**raw["batch"], **again}))
    rebuilt["text"] += (
        f"\n\nThe read-back figures were taken again on the kept run, "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M UTC} (load {os.getloadavg()[0]:.1f}); the rest "
        "is the run above."
    )
    results["sections"]["memory"] = {**rebuilt, "seconds": old["seconds"], "run": old["run"]}
    path.write_text(json.dumps(results, indent=1, default=str) + "\n")
    (DOCS / "benchmarks.md").write_text(run.render(results))


def child(part: str, count: int) -> dict[str, Any]:
    """Run one part in a fresh interpreter; its last stdout line is the JSON result."""
    completed = subprocess.run(  # noqa: S603 - our own interpreter and script
        [sys.executable, __file__, part, str(count)],
        capture_output=True,
        text=True,
        check=False,
        timeout=max(3600, count // 10),  # 100,000 videos on a loaded machine: over an hour
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    if completed.returncode != 0 or not lines:
        raise RuntimeError(f"memory {part} {count} failed: {completed.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


RATE_WINDOW = 30
"""Samples (about a second each) averaged for the rate curve."""


def growth_plot(samples: list[dict[str, float]]) -> str:
    """RSS, DB size and pace against videos submitted: flat RSS, a straight DB line (constant
    bytes per video) and a pace that does not fall are what scaling to 100,000 needs."""
    figure, (left, middle, right) = plot().subplots(1, 3, figsize=(11, 3))
    videos = [s["videos"] for s in samples]
    left.plot(videos, [s["rss_mb"] for s in samples])
    left.set_ylabel("RSS, MB")
    middle.plot(videos, [s["db_bytes"] / 1e6 for s in samples])
    middle.set_ylabel("DB size (with WAL), MB")
    paced = range(RATE_WINDOW, len(videos), RATE_WINDOW)
    right.plot(
        [videos[i] for i in paced],
        [(videos[i] - videos[i - RATE_WINDOW]) / RATE_WINDOW for i in paced],
    )
    right.set_ylabel(f"videos/s ({RATE_WINDOW} s mean)")
    for axes in (left, middle, right):
        axes.set_xlabel("videos submitted")
        axes.set_ylim(bottom=0)
    figure.tight_layout()
    return save(figure, "memory.png")


def measure(quick: bool, options: Options) -> Section:
    tasks = options.inflight or (300 if quick else 2000)
    videos = options.batch_videos or (400 if quick else 4000)
    return section(child("inflight", tasks), child("batch", videos))


def section(held: dict[str, Any], large: dict[str, Any]) -> Section:
    """The section of the two parts' results (also rebuilt by `readback ... --save`)."""
    tasks, videos = held["tasks"], large["videos"]
    held_note = "scaled down" if tasks < 5000 else ""
    if held["in_flight"] < tasks:
        held_note += f"; only {held['in_flight']} of {tasks} submitted in 300 s"
    samples = large["samples"]
    later = [s["rss_mb"] for s in samples if s["videos"] >= videos / 4]
    # How far the RSS rose above its level at a quarter of the batch: not the range, whose
    # minimum was the last sample, taken once the finished run had let its memory go.
    growth = round(max(later) - later[0], 1) if later else None
    # Flat: the last 3/4 of the batch grow the RSS by under a tenth (noise, no leak per video).
    flat = None if growth is None else ratio(growth, max(later) / 10, at_most=True)
    text = (
        ("**Scaled down** for the time budget" if videos < 100_000 else "Full size")
        + f": {tasks} tasks in flight and a batch of {videos} videos (the issue: 5,000 and "
        "100,000; `bench/run.py --only memory --inflight 5000 --batch-videos 100000` for the "
        "full figures, about 8 minutes). Each part runs in a fresh child process on SQLite.\n\n"
        + table(
            ["figure", "value"],
            [
                [
                    f"RSS with {held['in_flight']} of {tasks} tasks in flight",
                    f"**{held['rss_mb']} MB**",
                ],
                ["RSS after launch, before the run", f"{held['launched_mb']} MB"],
                [f"RSS growth over the batch's last 3/4 ({videos} videos)", f"**{growth} MB**"],
                [
                    "DB bytes per video at the end (after a WAL checkpoint)",
                    large["db_bytes_per_video"],
                ],
                ["batch wall time", f"{large['wall_seconds']} s"],
                [
                    "`klingflow runs show RUN --json` on it (a CLI process, bytecode "
                    f"compiled, median of {READ_BACK_TIMES}; {large['runs_show_bytes']} bytes)",
                    f"**{large['runs_show_seconds']} s** "
                    f"({large.get('runs_show_cpu_seconds')} s CPU)",
                ],
                [
                    f"`GET /api/runs/{{id}}` on it (in-process app, median of {READ_BACK_TIMES}; "
                    f"HTTP {large['api_status']}, {large['api_bytes']} bytes)",
                    f"**{large['api_seconds']} s** ({large.get('api_cpu_seconds')} s CPU)",
                ],
            ],
        )
    )
    return Section(
        name="memory",
        title="5. Memory and growth",
        command="bench/run.py --only memory",
        text=text,
        targets=[
            Target(
                f"RSS MB, {held['in_flight']} tasks in flight",
                held["rss_mb"],
                "<= 300",
                ratio(held["rss_mb"], 300, at_most=True),
                held_note,
            ),
            Target(
                f"RSS growth MB over {videos} videos",
                growth,
                "flat (< 10%)",
                flat,
                "scaled down" if videos < 100_000 else "",
            ),
            Target(
                "`runs show` s",
                large["runs_show_seconds"],
                "< 1",
                ratio(large["runs_show_seconds"], 1, at_most=True),
                f"{videos} videos",
            ),
            Target(
                "`GET /api/runs/{id}` s",
                large["api_seconds"],
                "< 1",
                ratio(large["api_seconds"], 1, at_most=True),
                f"{videos} videos",
            ),
        ],
        figures=[growth_plot(samples)],
        raw={"inflight": held, "batch": large},
    )


if __name__ == "__main__":
    part = sys.argv[1]
    if part == "readback":  # `readback HOME RUN [--save]`: time the read-back on a kept home
        again = read_back(Path(sys.argv[2]), sys.argv[3])
        print(json.dumps(again), flush=True)
        if "--save" in sys.argv:  # into the memory section of docs/benchmarks.json and .md
            save_read_back(again)
    elif kept := os.environ.get(KEEP_ENV):  # the batch's home stays there, to read back later
        folder = Path(kept) / part
        folder.mkdir(parents=True, exist_ok=True)
        work = inflight if part == "inflight" else large_batch
        print(json.dumps(asyncio.run(work(int(sys.argv[2]), folder))), flush=True)
    else:
        with tempfile.TemporaryDirectory(prefix="klingflow-memory-") as scratch:
            work = inflight if part == "inflight" else large_batch
            print(json.dumps(asyncio.run(work(int(sys.argv[2]), Path(scratch)))), flush=True)
