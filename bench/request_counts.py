"""Item 2 of issue 16: requests per video for a 10-minute generation.

    .venv/bin/python bench/run.py --only request_counts [--quick]

The emulator renders for 600 emulated seconds (plus 2 s pending), sped up `time_scale` times.
klingflow runs the batch polling and with webhooks (`batch.measure`, its wait policy told the
time scale so it expects PiAPI-typical times divided by it); the video asked for is pro, 10 s,
whose PiAPI-typical render is about 8 minutes. Next to it, replayed against the emulator with
the same sleeps in emulated seconds: PiAPI's official CLI (first GET at once, then 1 s growing
x1.5, capped at 30 s) and the n8n community node (a GET every 3 s). Counts come from the
emulator's stats: status GETs plus create requests, per video (no download). Each contender
has an emulator of its own, all side by side in processes of their own.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import batch
import httpx
from common import Options, Section, Target, bar_chart, ratio, side_by_side, table
from makespan import BODY, TERMINAL

from klingflow.emulator import EmulatorConfig, EmulatorServer

RENDER_SECONDS = 600.0
NODE_INPUT = {"duration": 10, "mode": "pro", "version": "2.1"}


def cli_schedule() -> Iterator[float]:
    """PiAPI's CLI: the first look at once, then 1 s growing x1.5, capped at 30 s."""
    yield 0.0
    pause = 1.0
    while True:
        yield pause
        pause = min(30.0, pause * 1.5)


def n8n_schedule() -> Iterator[float]:
    """The n8n community node: a look every 3 s."""
    while True:
        yield 3.0


SCHEDULES = {"PiAPI CLI (1 s x1.5, cap 30 s)": cli_schedule, "n8n node (every 3 s)": n8n_schedule}


async def replay(url: str, videos: int, scale: float, schedule: Any) -> None:
    headers = {"x-api-key": batch.API_KEY}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as http:

        async def one(number: int) -> None:
            body = {**BODY, "input": {"prompt": f"replay {number}", **NODE_INPUT}}
            answer = await http.post("/api/v1/task", json=body)
            answer.raise_for_status()
            task_id = answer.json()["data"]["task_id"]
            for pause in schedule():
                await asyncio.sleep(pause / scale)
                task = (await http.get(f"/api/v1/task/{task_id}")).json()["data"]
                if task["status"] in TERMINAL:
                    return

        await asyncio.gather(*(one(n) for n in range(videos)))


def measure_replay(name: str, videos: int, scale: float) -> dict[str, Any]:
    config = EmulatorConfig(
        api_keys=[batch.API_KEY],
        time_scale=scale,
        pending_seconds=batch.PENDING_SECONDS,
        processing_seconds=RENDER_SECONDS,
        video_max_height=16,
        video_fps=1,
    )
    with EmulatorServer(config) as emulator:
        asyncio.run(replay(emulator.url, videos, scale, SCHEDULES[name]))
        stats = emulator.stats()
    return _figures(name, stats, videos)


def _figures(name: str, stats: dict[str, Any], videos: int) -> dict[str, Any]:
    return {
        "contender": name,
        "status_gets": stats["gets"],
        "create_requests": stats["create_requests"],
        "requests_per_video": round((stats["gets"] + stats["create_requests"]) / videos, 2),
        "gets_per_video": round(stats["gets"] / videos, 2),
    }


def measure_klingflow(mode: str, videos: int, scale: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="klingflow-requests-") as folder:
        result = batch.measure(
            mode,
            videos=videos,
            account_concurrency=videos,
            processing_seconds=RENDER_SECONDS,
            time_scale=scale,
            rate_scale=scale,
            database_url=None,
            folder=Path(folder),
            node_input=NODE_INPUT,
            scaled_waits=True,
        )
    stats = {"gets": result["status_gets"], "create_requests": result["create_requests"]}
    figures = _figures(f"klingflow {mode}", stats, videos)
    figures["makespan_seconds"] = result["makespan_seconds"]
    figures["webhook_failures"] = result["webhook_failures"]
    return figures


def measure(quick: bool, options: Options) -> Section:
    videos, scale = (3, 120.0) if quick else (5, 60.0)
    results = side_by_side(
        [
            partial(measure_klingflow, "webhooks", videos, scale),
            partial(measure_klingflow, "polling", videos, scale),
            *(partial(measure_replay, name, videos, scale) for name in SCHEDULES),
        ]
    )
    by_name = {r["contender"]: r for r in results}
    webhooks = by_name["klingflow webhooks"]["requests_per_video"]
    polling = by_name["klingflow polling"]["requests_per_video"]
    figure = bar_chart(
        "requests.png",
        [r["contender"] for r in results],
        [r["requests_per_video"] for r in results],
        "requests per video, 10-minute render (log scale)",
        log=True,
        marks={"polling target 12": 12},
    )
    text = (
        f"{videos} videos at once (emulator concurrency {videos}), each rendering "
        f"{RENDER_SECONDS:g} emulated seconds at time scale {scale:g} "
        f"({(RENDER_SECONDS + 2) / scale:.1f} s of wall time); input `{NODE_INPUT}`. "
        "Requests = create requests + status GETs, per video; no download.\n\n"
        + table(
            ["contender", "requests / video", "status GETs / video", "webhook failures"],
            [
                [
                    r["contender"],
                    f"**{r['requests_per_video']}**",
                    r["gets_per_video"],
                    r.get("webhook_failures"),
                ]
                for r in results
            ],
        )
    )
    return Section(
        name="request_counts",
        title="2. Requests per video, 10-minute generation",
        command="bench/run.py --only request_counts",
        text=text,
        targets=[
            Target(
                "requests / video, webhooks", webhooks, "<= 2", ratio(webhooks, 2, at_most=True)
            ),
            Target("requests / video, polling", polling, "<= 12", ratio(polling, 12, at_most=True)),
        ],
        figures=[figure],
        raw={"videos": videos, "time_scale": scale, "input": NODE_INPUT, "results": results},
    )
