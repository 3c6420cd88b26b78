"""A worker SIGKILLed with a create on the wire: PiAPI's webhook settles it, nobody types.

Issue #10's Done-when: the creates caught on the wire by a kill "are settled by the webhook
(test with the service)". `klingflow serve --no-execute` takes the run (REST API) and the
webhooks, a `klingflow worker` runs the loop: real processes on one Postgres database, with
webhooks on (KLINGFLOW_PUBLIC_URL, KLINGFLOW_WEBHOOK_SECRET). PiAPI takes the first create
but holds its answer; the worker is killed then, and restarted.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from klingflow.emulator import EmulatorServer, FaultRule
from klingflow.workflows.database import make_engine
from klingflow.workflows.records import IntentState, RunStatus
from klingflow.workflows.runlog import RunLog

from ..loopback import loopback_client
from . import preloaded
from .harness import command_env, video_loop

PROMPTS = ["a heron at dusk", "a lighthouse in fog", "a tram in the rain"]
WEBHOOK_SECRET = "kf-crash-hook-3e9d1c"  # a test value


def free_port() -> int:
    """A loopback port nobody listens on now (the service's public URL must be known first)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for_line(log: Path, process: subprocess.Popen[bytes], needle: str) -> None:
    deadline = time.monotonic() + 60
    while needle not in (text := log.read_text()):
        assert process.poll() is None, text
        assert time.monotonic() < deadline, text
        time.sleep(0.05)


@pytest.mark.timeout(240)  # three process starts: slow on a loaded machine, mostly waiting
def test_a_create_on_the_wire_at_a_kill_is_settled_by_its_webhook(
    postgres_url: str, emulator: EmulatorServer, api_key: str, tmp_path: Path
) -> None:
    """The worker dies while PiAPI holds its first create's answer. Restarted, it finishes
    the loop; the uncertain item is settled by PiAPI's webhook to the service, and the run
    completes without a command: 3 creates, 3 videos."""
    port = free_port()
    env = command_env(
        tmp_path / "home",
        emulator,
        api_key,
        database_url=postgres_url,
        KLINGFLOW_PUBLIC_URL=f"http://127.0.0.1:{port}",
        KLINGFLOW_WEBHOOK_SECRET=WEBHOOK_SECRET,
    )
    emulator.configure(processing_seconds=1_000)  # 1 s of real time per video at x1000
    emulator.add_fault(  # PiAPI takes the first create, and answers it 15 s later
        FaultRule(
            action="slow", method="POST", path="/api/v1/task", phase="after", delay_seconds=15
        )
    )
    klingflow = [sys.executable, "-m", "klingflow"]
    serve_log, worker_log = tmp_path / "serve.log", tmp_path / "worker.log"
    processes: list[subprocess.Popen[bytes] | preloaded.Command] = []

    def start(*command: str, log: Path, executor_id: str) -> subprocess.Popen[bytes]:
        with log.open("ab") as output:
            process = subprocess.Popen(
                [*klingflow, *command],
                env={**env, "KLINGFLOW_EXECUTOR_ID": executor_id},
                stdout=output, stderr=subprocess.STDOUT,
            )  # fmt: skip
        processes.append(process)
        return process

    def start_worker() -> preloaded.Command:
        """Forked from a process that imported the engine already (preloaded.py)."""
        process = preloaded.Command(
            ["worker"], {**env, "KLINGFLOW_EXECUTOR_ID": "worker-1"},
            stdout=worker_log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        processes.append(process)
        return process

    runlog = RunLog(make_engine(postgres_url.replace("postgresql://", "postgresql+psycopg://")))
    try:
        server = start(
            "serve", "--no-execute", "--port", str(port), log=serve_log, executor_id="api-1"
        )
        wait_for_line(serve_log, server, "klingflow serve: executor api-1 on ")
        # That line comes from the app's start-up, which uvicorn runs before it listens.
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None, serve_log.read_text()
                assert time.monotonic() < deadline, serve_log.read_text()
                time.sleep(0.05)
        with loopback_client(f"http://127.0.0.1:{port}", timeout=30) as api:
            published = api.post("/api/workflows", content=video_loop("webhook-crash"))
            assert published.status_code in (200, 201), published.text
            queued = api.post("/api/workflows/webhook-crash/runs", json={"prompts": PROMPTS})
            assert queued.status_code == 201, queued.text
        run_id = queued.json()["run_id"]  # queued: the service executes nothing
        worker = start_worker()
        deadline = time.monotonic() + 60
        while emulator.stats()["creates"] < 1:  # taken by PiAPI, its answer held
            assert worker.poll() is None, worker_log.read_text()
            assert time.monotonic() < deadline, worker_log.read_text()
            time.sleep(0.02)
        os.kill(worker.pid, signal.SIGKILL)
        assert worker.wait(timeout=10) == -signal.SIGKILL
        [intent] = runlog.intents(run_id)
        assert intent.state is IntentState.SENT  # on the wire: nobody knows its task id
        emulator.clear_faults()

        start_worker()  # the same slot, restarted
        deadline = time.monotonic() + 90
        while (run := runlog.get_run(run_id)) is None or run.status is not RunStatus.COMPLETED:
            assert run is None or run.status is not RunStatus.CRASHED, run.message
            states = [(i.node_path, i.state.value, i.task_id) for i in runlog.intents(run_id)]
            assert time.monotonic() < deadline, f"{run}\n{states}\n{serve_log.read_text()}"
            time.sleep(0.1)
        settled = runlog.intents(run_id)[0]
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=30)
        runlog.engine.dispose()
    assert emulator.stats()["creates"] == len(PROMPTS)
    [task] = [t for t in emulator.tasks() if t["input"]["prompt"] == PROMPTS[0]]
    assert settled.task_id == task["task_id"]
    assert settled.state is IntentState.COMPLETED
    assert sorted(p.name for p in (tmp_path / "home").glob("runs/*/*.mp4")) == [
        "1.mp4",
        "2.mp4",
        "3.mp4",
    ]
