"""Item 3 of issue 16: detection latency, from the emulator's end of a task to the run log.

    .venv/bin/python bench/run.py --only detection [--quick] [--no-postgres]

The batch of `makespan.py` (`batch.measure`) with webhooks on SQLite and on Postgres, and
polling on SQLite, side by side in processes of their own, their starts a third of a video's
time apart so that their waves end at different moments. Per video: the emulator's
`ended_at` (its emulated clock mapped to wall time) to the run log's record of the node's
end; p50 and p99 over the batch, and their CDF.
"""

from __future__ import annotations

import tempfile
from functools import partial
from pathlib import Path
from typing import Any

import batch
import common
from common import Options, Section, Target, fresh_postgres, plot, ratio, save, table
from makespan import scenario, wave_seconds


def run_mode(mode: str, database: str, s: dict[str, Any], options: Options) -> dict[str, Any]:
    admin = options.postgres if database == "postgres" else None
    with (
        tempfile.TemporaryDirectory(prefix="klingflow-detection-") as folder,
        fresh_postgres(admin) as url,
    ):
        result = batch.measure(mode, database_url=url, folder=Path(folder), **s)
    result["contender"] = f"{mode}, {database}"
    return result


def measure(quick: bool, options: Options) -> Section:
    s = scenario(quick)
    plan = [("webhooks", "sqlite"), ("polling", "sqlite")]
    if options.postgres:
        plan.insert(1, ("webhooks", "postgres"))
    runs = [partial(run_mode, mode, database, s, options) for mode, database in plan]
    results = common.side_by_side(runs, stagger_seconds=wave_seconds(s) / len(runs))
    pyplot = plot()
    figure, axes = pyplot.subplots(figsize=(6, 3))
    for r in results:
        values = sorted(r["detection_ms"])
        if values:
            shares = [(n + 1) / len(values) for n in range(len(values))]
            axes.step(values, shares, where="post", label=r["contender"])
    axes.axvline(250, color="green", linestyle="--", linewidth=1, label="p99 target 250 ms")
    axes.set_xscale("symlog", linthresh=100)
    axes.set_xlabel("detection latency, ms")
    axes.set_ylabel("share of videos")
    axes.legend(fontsize=8)
    text = (
        f"The batch of section 1 ({s['videos']} videos, time scale {s['time_scale']:g}, rate "
        f"scale {s['rate_scale']:g}). The emulator's clock has a resolution of its time scale: "
        "latencies below about 10 ms are noise.\n\n"
        + table(
            [
                "mode, run log",
                "p50 ms",
                "p99 ms",
                "status GETs / video",
                "webhook failures",
                "makespan / ideal",
            ],
            [
                [
                    r["contender"],
                    r["detection_p50_ms"],
                    f"**{r['detection_p99_ms']}**",
                    r["gets_per_video"],
                    r["webhook_failures"],
                    r["makespan_ratio"],
                ]
                for r in results
            ],
        )
    )
    targets = [
        Target(
            f"detection p99, {r['contender']}",
            r["detection_p99_ms"],
            "<= 250 ms",
            ratio(r["detection_p99_ms"], 250, at_most=True),
        )
        for r in results
        if r["contender"].startswith("webhooks")
    ]
    polling = next(r for r in results if r["contender"].startswith("polling"))
    targets.append(Target("detection p99, polling, sqlite", polling["detection_p99_ms"], "-", None))
    return Section(
        name="detection",
        title="3. Detection latency",
        command="bench/run.py --only detection",
        text=text,
        targets=targets,
        figures=[save(figure, "detection.png")],
        raw={"scenario": s, "results": results},
    )
