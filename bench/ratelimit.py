"""Item 6 of issue 16: rate-limit adherence, 1 worker and 3.

    .venv/bin/python bench/run.py --only ratelimit [--quick] [--no-postgres]

The emulator (its own process, zero latency) limits the key to R requests per 60-s sliding
window and answers 429 beyond. klingflow gets `KLINGFLOW_REQUESTS_PER_MINUTE` = R and far more
videos than R allows, so the limit binds all along. Over exactly one window (60 s from the
run's start) the emulator counts the requests it served: achieved / R (target >= 0.95) and the
429s klingflow caused (target 0). 1 worker: an engine on SQLite. 3 workers: an engine plus two
in subprocesses on one Postgres database, sharing R through leases. The two measurements run
side by side, each in a process of its own with an emulator of its own.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import common
import engine as eng
from common import Options, Section, Target, fresh_postgres, plot, ratio, save, table
from overhead import CHUNK_SIZE, CONCURRENCY, extra_workers

from klingflow.settings import Settings
from klingflow.workflows.engine import Engine

WINDOW_SECONDS = 60.0


async def drive(
    emulator: eng.EmulatorProcess, limit: int, home: Path, database_url: str | None
) -> dict[str, Any]:
    os.environ["PIAPI_API_KEY"] = eng.API_KEY
    os.environ["PIAPI_BASE_URL"] = emulator.url
    settings = Settings(
        home=home,
        database_url=database_url,
        concurrency=CONCURRENCY,
        requests_per_minute=limit,
        max_runs=4,
    )
    served: list[tuple[float, int, int]] = []
    async with Engine(settings, wait_policy=eng.WAIT_POLICY, chunk_size=CHUNK_SIZE) as engine:
        spec = eng.workflow(concurrency=CONCURRENCY, download=False)
        before = emulator.stats()
        started = time.monotonic()
        await engine.start_run(spec, {"prompts": eng.prompts(limit * 2, "limited")})
        while (elapsed := time.monotonic() - started) < WINDOW_SECONDS:
            stats = emulator.stats()
            served.append(
                (
                    round(elapsed, 2),
                    stats["create_requests"]
                    + stats["gets"]
                    - before["create_requests"]
                    - before["gets"],
                    stats["rate_limited"] - before["rate_limited"],
                )
            )
            await asyncio.sleep(min(1.0, WINDOW_SECONDS - elapsed))
        after = emulator.stats()
        os.environ.pop("PIAPI_BASE_URL")
    requests = after["create_requests"] + after["gets"] - before["create_requests"] - before["gets"]
    limited = after["rate_limited"] - before["rate_limited"]
    return {
        "limit": limit,
        "requests": requests,
        "rate_limited": limited,
        "served": requests - limited,
        "curve": served,
    }


def run_config(workers: int, limit: int, options: Options) -> dict[str, Any]:
    overrides = {"rate_limit": {"requests": limit, "window_seconds": WINDOW_SECONDS}}
    with (
        tempfile.TemporaryDirectory(prefix="klingflow-ratelimit-") as name,
        eng.EmulatorProcess(Path(name), overrides) as emulator,
    ):
        folder = Path(name)
        if workers == 1:
            result = asyncio.run(drive(emulator, limit, folder / "home", None))
        else:
            with fresh_postgres(options.postgres) as url:
                assert url is not None
                with extra_workers(workers - 1, url, emulator.url, folder, limit):
                    result = asyncio.run(drive(emulator, limit, folder / "home", url))
    result["workers"] = workers
    result["achieved_ratio"] = round(result["served"] / limit, 3)
    return result


def measure(quick: bool, options: Options) -> Section:
    limit = 300 if quick else 600
    plan = [1] if quick or not options.postgres else [1, 3]
    runs = [partial(run_config, workers, limit, options) for workers in plan]
    results = common.side_by_side(runs)
    pyplot = plot()
    figure, axes = pyplot.subplots(figsize=(6, 3))
    for r in results:
        axes.plot(
            [p[0] for p in r["curve"]],
            [p[1] for p in r["curve"]],
            label=f"{r['workers']} worker(s): requests sent",
        )
    axes.plot([0, WINDOW_SECONDS], [limit, limit], "k--", linewidth=1, label=f"R = {limit}")
    axes.set_xlabel("seconds since the run started")
    axes.set_ylabel("requests (cumulative)")
    axes.legend(fontsize=8)
    text = (
        f"R = {limit} requests per {WINDOW_SECONDS:g} s at the emulator and in "
        f"`KLINGFLOW_REQUESTS_PER_MINUTE`; {limit * 2} videos queued, {CONCURRENCY} at once, "
        "zero latency (each video is a create and one GET), no downloads. 3 workers: on "
        "Postgres."
        + (" Quick run: 1 worker only." if quick else "")
        + "\n\n"
        + table(
            ["workers", "requests sent", "served", "429s caused", "achieved / R"],
            [
                [
                    r["workers"],
                    r["requests"],
                    r["served"],
                    f"**{r['rate_limited']}**",
                    f"**{r['achieved_ratio']}**",
                ]
                for r in results
            ],
        )
    )
    targets = []
    for r in results:
        targets.append(
            Target(
                f"achieved / R, {r['workers']} worker(s)",
                r["achieved_ratio"],
                ">= 0.95",
                ratio(r["achieved_ratio"], 0.95, at_most=False),
            )
        )
        targets.append(
            Target(
                f"429s caused, {r['workers']} worker(s)",
                r["rate_limited"],
                "0",
                r["rate_limited"] == 0,
            )
        )
    return Section(
        name="ratelimit",
        title="6. Rate-limit adherence",
        command="bench/run.py --only ratelimit",
        text=text,
        targets=targets,
        figures=[save(figure, "ratelimit.png")],
        raw={"limit": limit, "results": results},
    )
