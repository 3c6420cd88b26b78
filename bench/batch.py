"""A batch at the account's pace: makespan against the limit, requests per video, detection.

    .venv/bin/python bench/batch.py [--mode polling|webhooks|both] [--videos 20]
                                    [--account-concurrency 5] [--processing-seconds 30]
                                    [--time-scale 2] [--rate-scale 1] [--postgres ADMIN_URL]
                                    [--json]

The scenario of issue 17, run as a user would: one `loop` of `kling.video` over N prompts
(download off), default settings (5 tasks at once, 60 requests/min, first poll after 5 s),
against the emulator with `concurrency_limit` C and `processing_seconds` P (plus its 2 s of
`pending`), sped up `time_scale` times. One video then takes T = (2 + P) / scale seconds of
wall time and the ideal makespan is ceil(N / C) x T: nothing can finish sooner.

- **polling**: an `Engine` in this process (what `klingflow run` does), no webhook URL.
- **webhooks**: the service (`klingflow serve`) on loopback with `KLINGFLOW_PUBLIC_URL` and
  `KLINGFLOW_WEBHOOK_SECRET`; the run is started through its API.

The emulator runs in a thread of this process. Reported per mode: makespan / ideal, status
GETs per video, creates (duplicates), webhook deliveries and failures, and the detection
latency per video: from the emulator's end of the task (its `ended_at`, mapped from the
emulated clock to wall time) to the run log's record of the node's end.

The run log is SQLite in a temporary folder, or, with `--postgres ADMIN_URL`, a fresh database
created on that server for each mode (and dropped after).

`--rate-scale` multiplies the request budget (and divides the first poll) by the same
factor as a faster `--time-scale`, to keep the budget's pressure at the scenario's level.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import socket
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
import uvicorn
import yaml
from common import fresh_postgres, percentile

from klingflow.emulator import EmulatorConfig, EmulatorServer
from klingflow.piapi import WaitPolicy
from klingflow.service import create_app
from klingflow.settings import Settings
from klingflow.workflows import load_workflow_text
from klingflow.workflows.database import make_engine
from klingflow.workflows.engine import Engine
from klingflow.workflows.runlog import RunLog

API_KEY = "bench-batch-key"
SECRET = "bench-batch-secret"  # noqa: S105 - a local test value
PENDING_SECONDS = 2.0
DEFAULT_POLL_SECONDS = 5.0
DEFAULT_REQUESTS_PER_MINUTE = 60


NODE_INPUT: dict[str, Any] = {"duration": 5, "mode": "std", "version": "2.1"}
"""The scenario's video: std, 5 s (PiAPI-typical render: 150 s)."""


def workflow_text(videos: int, node_input: dict[str, Any] | None = None) -> str:
    spec = {
        "name": "bench-batch",
        "inputs": {"prompts": {"type": "array", "required": True}},
        "nodes": [
            {
                "id": "each",
                "type": "loop",
                "with": {"items": "{{ inputs.prompts }}", "concurrency": videos},
                "nodes": [
                    {
                        "id": "video",
                        "type": "kling.video",
                        "with": {
                            "prompt": "{{ item }}",
                            **(node_input or NODE_INPUT),
                            "download": False,
                        },
                    }
                ],
            }
        ],
    }
    return yaml.safe_dump(spec, sort_keys=False)


def _free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.contextmanager
def service(settings: Settings, policy: WaitPolicy | None = None) -> Iterator[str]:
    """`klingflow serve` on loopback in a thread; yields its URL (already in `settings`)."""

    def engine_factory(settings: Settings) -> Engine:
        return Engine(settings, executor_id=settings.executor_id, wait_policy=policy)

    assert settings.public_url is not None
    port = int(settings.public_url.rsplit(":", 1)[1])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings, engine_factory=engine_factory), log_level="warning")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the service did not start")
        time.sleep(0.01)
    try:
        yield settings.public_url
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def _wall(emulated_iso: str, ref_emulated: float, ref_wall: float, scale: float) -> float:
    emulated = datetime.fromisoformat(emulated_iso.replace("Z", "+00:00")).timestamp()
    return ref_wall + (emulated - ref_emulated) / scale


def measure(
    mode: str,
    *,
    videos: int,
    account_concurrency: int,
    processing_seconds: float,
    time_scale: float,
    rate_scale: float,
    database_url: str | None,
    folder: Path,
    node_input: dict[str, Any] | None = None,
    scaled_waits: bool = False,
) -> dict[str, Any]:
    """Run the batch once in `mode`, with `folder` as KLINGFLOW_HOME; return its figures.

    `scaled_waits` tells the engine's wait policy the emulator's time scale, so it expects
    PiAPI-typical render times divided by it (a new user's engine does not know)."""
    config = EmulatorConfig(
        api_keys=[API_KEY],
        time_scale=time_scale,
        pending_seconds=PENDING_SECONDS,
        processing_seconds=processing_seconds,
        concurrency_limit=account_concurrency,
        video_max_height=16,
        video_fps=1,
    )
    with EmulatorServer(config) as emulator:
        os.environ["PIAPI_API_KEY"] = API_KEY
        os.environ["PIAPI_BASE_URL"] = emulator.url
        values: dict[str, Any] = {
            "home": Path(folder),
            "database_url": database_url or f"sqlite:///{folder}/klingflow.sqlite",
            "requests_per_minute": max(1, round(DEFAULT_REQUESTS_PER_MINUTE * rate_scale)),
            "poll_seconds": DEFAULT_POLL_SECONDS / rate_scale,
        }
        prompts = [f"batch video {n}" for n in range(videos)]
        policy = None
        if scaled_waits:
            policy = WaitPolicy(
                initial_interval_seconds=values["poll_seconds"], time_scale=time_scale
            )
        if mode == "webhooks":
            probe = _free_socket()
            port = probe.getsockname()[1]
            probe.close()
            values |= {"public_url": f"http://127.0.0.1:{port}", "webhook_secret": SECRET}
            settings = Settings(**values)
            with service(settings, policy) as url, httpx.Client(base_url=url, timeout=30) as http:
                http.post(
                    "/api/workflows", content=workflow_text(videos, node_input)
                ).raise_for_status()
                started = time.time()
                answer = http.post("/api/workflows/bench-batch/runs", json={"prompts": prompts})
                answer.raise_for_status()
                run_id = answer.json()["run_id"]
                while http.get(f"/api/runs/{run_id}").json()["run"]["status"] in (
                    "queued",
                    "running",
                ):
                    time.sleep(0.05)
                ended = time.time()
                runlog = RunLog(make_engine(settings.resolved_database_url()))
                nodes, status = runlog.nodes(run_id), runlog.get_run(run_id)
        else:
            settings = Settings(**values)
            nodes, status, started, ended = asyncio.run(
                _run_polling(settings, prompts, node_input, policy)
            )
        assert status is not None
        stats = emulator.stats()
        ref_emulated, ref_wall = emulator.now(), time.time()
        tasks = {task["task_id"]: task for task in emulator.tasks()}
    detection = sorted(
        node.finished_at
        - _wall(tasks[node.task_id]["meta"]["ended_at"], ref_emulated, ref_wall, time_scale)
        for node in nodes
        if node.task_id and node.finished_at and node.node_type == "kling.video"
    )
    one_video = (PENDING_SECONDS + processing_seconds) / time_scale
    ideal = math.ceil(videos / account_concurrency) * one_video
    makespan = ended - started
    timeline = sorted(
        (
            _wall(tasks[node.task_id]["meta"]["created_at"], ref_emulated, ref_wall, time_scale)
            - started,
            _wall(tasks[node.task_id]["meta"]["ended_at"], ref_emulated, ref_wall, time_scale)
            - started,
            node.finished_at - started,
        )
        for node in nodes
        if node.task_id and node.finished_at and node.node_type == "kling.video"
    )
    return {
        "mode": mode,
        "status": status.status.value,
        "videos": videos,
        "ideal_seconds": round(ideal, 2),
        "makespan_seconds": round(makespan, 2),
        "makespan_ratio": round(makespan / ideal, 3),
        "creates": stats["creates"],
        "create_requests": stats["create_requests"],
        "status_gets": stats["gets"],
        "gets_per_video": round(stats["gets"] / videos, 2),
        "rate_limited": stats["rate_limited"],
        "webhook_deliveries": stats["webhook_deliveries"],
        "webhook_failures": stats["webhook_failures"],
        "detection_p50_ms": round(1000 * statistics.median(detection)) if detection else None,
        "detection_p99_ms": _ms(percentile(detection, 0.99)),
        "detection_ms": [round(1000 * seconds, 1) for seconds in detection],
        "waves": waves(timeline, account_concurrency),
    }


def waves(timeline: list[tuple[float, float, float]], concurrency: int) -> list[dict[str, float]]:
    """Where each wave's seconds go, from (created, ended, detected) per task (seconds after
    the start, wall clock): when its first create reached the emulator (`start`: the first
    wave's is the start cost; the others' is the gap from the slot freed to the next
    create), its last render's end and the last detection (`late`: detection delay)."""
    out = []
    for first in range(0, len(timeline), concurrency):
        wave = timeline[first : first + concurrency]
        created = min(c for c, _, _ in wave)
        ended = max(e for _, e, _ in wave)
        detected = max(d for _, _, d in wave)
        previous = out[-1]["detected"] if out else 0.0
        out.append(
            {
                "start": round(created - previous, 3),
                "created": round(created, 3),
                "ended": round(ended, 3),
                "detected": round(detected, 3),
                "late": round(detected - ended, 3),
            }
        )
    return out


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else round(1000 * seconds)


async def _run_polling(
    settings: Settings,
    prompts: list[str],
    node_input: dict[str, Any] | None,
    policy: WaitPolicy | None,
) -> tuple[Any, Any, float, float]:
    async with Engine(settings, wait_policy=policy) as engine:
        spec = load_workflow_text(workflow_text(len(prompts), node_input))
        started = time.time()
        run = await engine.start_run(spec, {"prompts": prompts})
        await engine.wait([run.run_id], poll_seconds=0.05)
        ended = time.time()
        return engine.runlog.nodes(run.run_id), engine.runlog.get_run(run.run_id), started, ended


def main(
    mode: Annotated[str, typer.Option(help="polling, webhooks or both")] = "both",
    videos: Annotated[int, typer.Option(help="items in the loop")] = 20,
    account_concurrency: Annotated[int, typer.Option(help="emulator concurrency_limit")] = 5,
    processing_seconds: Annotated[float, typer.Option(help="emulated render time")] = 30.0,
    time_scale: Annotated[float, typer.Option(help="emulator clock speed")] = 2.0,
    rate_scale: Annotated[float, typer.Option(help="request budget x, first poll /")] = 1.0,
    postgres: Annotated[
        str | None, typer.Option(help="admin URL of a Postgres server (default: SQLite)")
    ] = None,
    batches: Annotated[
        int, typer.Option(help="batches per mode, one after the other in one home folder")
    ] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per batch")] = False,
) -> None:
    """Run the scenario in each mode and print its figures.

    With `--batches 2`, the second batch of a mode runs in the same home and database as the
    first, so its waits start from the render times the first one learned."""
    modes = ["polling", "webhooks"] if mode == "both" else [mode]
    for name in modes:
        with (
            tempfile.TemporaryDirectory(prefix="klingflow-batch-") as folder,
            fresh_postgres(postgres) as database_url,
        ):
            for batch in range(1, batches + 1):
                result = measure(
                    name,
                    videos=videos,
                    account_concurrency=account_concurrency,
                    processing_seconds=processing_seconds,
                    time_scale=time_scale,
                    rate_scale=rate_scale,
                    database_url=database_url,
                    folder=Path(folder),
                )
                result["batch"] = batch
                result["database"] = "postgres" if postgres else "sqlite"
                if as_json:
                    print(json.dumps(result), flush=True)
                else:
                    shown = {k: v for k, v in result.items() if k not in ("detection_ms", "waves")}
                    print("  ".join(f"{k}={v}" for k, v in shown.items()), flush=True)
                    for number, wave in enumerate(result["waves"], 1):
                        shown = {"wave": number, **wave}
                        print("    " + "  ".join(f"{k}={v}" for k, v in shown.items()))


if __name__ == "__main__":
    typer.run(main)
