"""Item 1 of issue 16: a batch's makespan against the account's limit, and the alternatives.

    .venv/bin/python bench/run.py --only makespan [--quick]

N videos against an emulator account running C at once, each taking T seconds (time-scaled):
nothing finishes sooner than ceil(N / C) x T. The full run measures issue 17's own scenario
(time scale 2: T = 16 s, 20 videos, C = 5, default settings: ideal 64 s). Measured in one
run, each on a fresh emulator, side by side in processes of their own (their starts a quarter
of T apart, so that their waves end at different moments): klingflow polling (an
`Engine`, what `klingflow run` does) on a fresh home (no render time learned: the first wave
probes) and again in the same home (learned), with webhooks (the service with a public URL
and secret; `batch.py`), a naive sequential loop (create, poll every few seconds, next; on
fewer videos, a multiple of C, so its ratio is the same as for N) and a naive asyncio httpx
script (create all, poll each every few seconds). The naive scripts poll at klingflow's
default first-poll pace (5 s, divided by the rate scale).
"""

from __future__ import annotations

import asyncio
import math
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import batch
import httpx
from common import Options, Section, Target, bar_chart, ratio, side_by_side, table

from klingflow.emulator import EmulatorConfig, EmulatorServer

TERMINAL = frozenset({"completed", "failed", "cancelled"})
BODY = {"model": "kling", "task_type": "video_generation"}
INPUT = {"duration": 5, "mode": "std", "version": "2.1"}


def scenario(quick: bool) -> dict[str, Any]:
    """The issue's batch (20 videos, C 5, 30 s renders), sped up to fit the time budget."""
    if quick:
        return {
            "videos": 10,
            "account_concurrency": 5,
            "processing_seconds": 30.0,
            "time_scale": 16.0,
            "rate_scale": 8.0,
        }
    return {
        "videos": 20,
        "account_concurrency": 5,
        "processing_seconds": 30.0,
        "time_scale": 2.0,
        "rate_scale": 1.0,
    }


SEQUENTIAL_VIDEOS = 5
"""The sequential loop's videos (one wave's worth: N / C times the ideal either way)."""


def emulator_config(s: dict[str, Any]) -> EmulatorConfig:
    return EmulatorConfig(
        api_keys=[batch.API_KEY],
        time_scale=s["time_scale"],
        pending_seconds=batch.PENDING_SECONDS,
        processing_seconds=s["processing_seconds"],
        concurrency_limit=s["account_concurrency"],
        video_max_height=16,
        video_fps=1,
    )


def _task(response: httpx.Response) -> dict[str, Any]:
    response.raise_for_status()
    data: dict[str, Any] = response.json()["data"]
    return data


KEEPALIVE = httpx.Limits(keepalive_expiry=4.0)
"""Below uvicorn's 5 s keep-alive timeout: a script polling every 5 s would otherwise reuse a
connection the emulator is closing (a `ReadError`, a crash rather than a measurement)."""


def naive_sequential(url: str, prompts: list[str], poll_seconds: float) -> None:
    """What a first script does: one video after the other, polling each until done."""
    headers = {"x-api-key": batch.API_KEY}
    with httpx.Client(base_url=url, headers=headers, timeout=30, limits=KEEPALIVE) as http:
        for prompt in prompts:
            task = _task(
                http.post("/api/v1/task", json={**BODY, "input": {"prompt": prompt, **INPUT}})
            )
            while task["status"] not in TERMINAL:
                time.sleep(poll_seconds)
                task = _task(http.get(f"/api/v1/task/{task['task_id']}"))


async def naive_asyncio(url: str, prompts: list[str], poll_seconds: float) -> None:
    """The next script: every create at once, each task polled on its own fixed period."""
    headers = {"x-api-key": batch.API_KEY}
    async with httpx.AsyncClient(
        base_url=url, headers=headers, timeout=30, limits=KEEPALIVE
    ) as http:

        async def one(prompt: str) -> None:
            body = {**BODY, "input": {"prompt": prompt, **INPUT}}
            task = _task(await http.post("/api/v1/task", json=body))
            while task["status"] not in TERMINAL:
                await asyncio.sleep(poll_seconds)
                task = _task(await http.get(f"/api/v1/task/{task['task_id']}"))

        await asyncio.gather(*(one(prompt) for prompt in prompts))


def measure_naive(kind: str, s: dict[str, Any]) -> dict[str, Any]:
    if kind == "sequential":
        s = {**s, "videos": min(s["videos"], SEQUENTIAL_VIDEOS)}
    prompts = [f"naive video {n}" for n in range(s["videos"])]
    poll = batch.DEFAULT_POLL_SECONDS / s["rate_scale"]
    with EmulatorServer(emulator_config(s)) as emulator:
        started = time.time()
        if kind == "sequential":
            naive_sequential(emulator.url, prompts, poll)
        else:
            asyncio.run(naive_asyncio(emulator.url, prompts, poll))
        makespan = time.time() - started
        stats = emulator.stats()
    ideal = ideal_seconds(s)
    return {
        "mode": f"naive {kind}",
        "videos": s["videos"],
        "makespan_seconds": round(makespan, 2),
        "ideal_seconds": round(ideal, 2),
        "makespan_ratio": round(makespan / ideal, 3),
        "status_gets": stats["gets"],
        "gets_per_video": round(stats["gets"] / s["videos"], 2),
        "rate_limited": stats["rate_limited"],
        "webhook_failures": None,
    }


def wave_seconds(s: dict[str, Any]) -> float:
    """T: one video's wall time, pending and processing, at the time scale."""
    return (batch.PENDING_SECONDS + s["processing_seconds"]) / s["time_scale"]


def ideal_seconds(s: dict[str, Any]) -> float:
    return math.ceil(s["videos"] / s["account_concurrency"]) * wave_seconds(s)


def measure_klingflow(mode: str, s: dict[str, Any], *, batches: int = 1) -> list[dict[str, Any]]:
    """`batches` batches one after the other in one home: the first on a fresh home, the
    next ones with the render times the earlier ones learned."""
    results = []
    with tempfile.TemporaryDirectory(prefix="klingflow-makespan-") as folder:
        for batch_number in range(1, batches + 1):
            result = batch.measure(mode, database_url=None, folder=Path(folder), **s)
            home = "fresh home" if batch_number == 1 else "learned home"
            result["mode"] = f"klingflow {mode}" + (f", {home}" if mode == "polling" else "")
            results.append(result)
            shown = {k: v for k, v in result.items() if k not in ("detection_ms", "waves")}
            print(shown, result["waves"], file=sys.stderr, flush=True)
    return results


def measure(quick: bool, options: Options) -> Section:
    s = scenario(quick)
    contenders = [
        partial(measure_klingflow, "polling", s, batches=2),
        partial(measure_klingflow, "webhooks", s),
        partial(measure_naive, "sequential", s),
        partial(measure_naive, "asyncio", s),
    ]
    stagger = wave_seconds(s) / len(contenders)
    polling, webhooks, sequential, naive = side_by_side(contenders, stagger_seconds=stagger)
    results = [*polling, *webhooks, sequential, naive]
    rows = [
        [
            r["mode"],
            r["makespan_seconds"],
            r["ideal_seconds"],
            f"**{r['makespan_ratio']}**",
            r["gets_per_video"],
            r.get("rate_limited"),
            r.get("webhook_failures"),
        ]
        for r in results
    ]
    by_mode = {r["mode"]: r for r in results}
    polling = by_mode["klingflow polling, fresh home"]["makespan_ratio"]
    learned = by_mode["klingflow polling, learned home"]["makespan_ratio"]
    webhooks = by_mode["klingflow webhooks"]["makespan_ratio"]
    figure = bar_chart(
        "makespan.png",
        [r["mode"] for r in results],
        [r["makespan_ratio"] for r in results],
        "makespan / ideal (lower is better; 1 = the account's limit)",
        marks={"the limit": 1.0, "target 1.05": 1.05},
    )
    one = wave_seconds(s)
    waves = [
        [r["mode"], number, w["start"], w["late"]]
        for r in results
        if r["mode"].startswith("klingflow")
        for number, w in enumerate(r["waves"], 1)
    ]
    text = (
        f"{s['videos']} videos, emulator `concurrency_limit` {s['account_concurrency']}, "
        f"`pending_seconds` 2 + `processing_seconds` {s['processing_seconds']:g} at time scale "
        f"{s['time_scale']:g}: T = {one:.2f} s, ideal = ceil(N / C) x T = "
        f"{ideal_seconds(s):.1f} s. klingflow runs with default settings whose request budget "
        f"is multiplied (and first poll divided) by the rate scale {s['rate_scale']:g}, so the "
        "budget presses as hard as in the issue's real-time scenario; the naive scripts poll "
        f"every {batch.DEFAULT_POLL_SECONDS / s['rate_scale']:g} s; the sequential loop makes "
        f"{min(s['videos'], SEQUENTIAL_VIDEOS)} videos against its own ideal.\n\n"
        + table(
            [
                "contender",
                "makespan s",
                "ideal s",
                "makespan / ideal",
                "status GETs / video",
                "429s",
                "webhook failures",
            ],
            rows,
        )
        + "\n\nWhere klingflow's seconds go, per wave of C videos: `start` is the time from "
        "`start_run` to the first create reaching the emulator (first wave), or from the "
        "previous wave's last detection to this wave's first create (negative: the next create "
        "left before the node's end was recorded); `late` is the time from the wave's last "
        "render end (emulator clock) to its detection in the run log.\n\n"
        + table(["contender", "wave", "start s", "late s"], waves)
    )
    return Section(
        name="makespan",
        title="1. Makespan against the account's limit",
        command="bench/run.py --only makespan",
        text=text,
        targets=[
            Target(
                "makespan / ideal, klingflow webhooks",
                webhooks,
                "<= 1.05",
                ratio(webhooks, 1.05, at_most=True),
            ),
            Target(
                "makespan / ideal, klingflow polling, fresh home",
                polling,
                "<= 1.10 (#17)",
                ratio(polling, 1.10, at_most=True),
            ),
            Target(
                "makespan / ideal, klingflow polling, learned home",
                learned,
                "<= 1.10 (#17)",
                ratio(learned, 1.10, at_most=True),
            ),
        ],
        figures=[figure],
        raw={"scenario": s, "results": results},
    )
