"""SIGKILL a real `klingflow run` mid-batch, run the same command again: nothing is paid twice.

The batch runs in a process of its own (forked from one that imported the engine already:
preloaded.py) against the test emulator over HTTP. Each test waits until the
emulator shows the batch at a chosen point (a download under way, a create accepted but not
yet answered, every task submitted and generating), kills the process with SIGKILL, then
runs the very same command (same idempotency key, so the same run) to the end.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import av
import pytest

from klingflow.emulator import EmulatorServer, FaultRule
from klingflow.piapi import PiAPI
from klingflow.workflows.database import make_engine
from klingflow.workflows.records import Intent, IntentState, RunStatus
from klingflow.workflows.runlog import RunLog

from . import preloaded
from .harness import command_env, video_loop

PROMPTS = ["a red fox in snow", "a paper boat at sea", "sunflowers at dawn"]
WORKFLOW = video_loop("crash-batch")


class Batch:
    """The command, its environment, and ways to run or kill it."""

    def __init__(self, tmp_path: Path, emulator: EmulatorServer, api_key: str) -> None:
        self.file = tmp_path / "batch.yaml"
        self.file.write_text(WORKFLOW)
        self.home = tmp_path / "home"
        self.emulator = emulator
        self.env = command_env(self.home, emulator, api_key)
        self.command = [
            "run", str(self.file),
            "-i", f"prompts={json.dumps(PROMPTS)}", "--idempotency-key", "batch-1", "--json",
        ]  # fmt: skip

    def start(self) -> preloaded.Command:
        log = self.home.parent / "killed.log"
        return preloaded.Command(self.command, self.env, stdout=log, stderr=log)

    def kill_when(self, process: preloaded.Command, ready: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 60
        while not ready():
            log = (self.home.parent / "killed.log").read_text()
            assert process.poll() is None, f"the batch ended before the crash point:\n{log}"
            assert time.monotonic() < deadline, "the batch never reached the crash point"
            time.sleep(0.02)
        os.kill(process.pid, signal.SIGKILL)
        assert process.wait(timeout=10) == -signal.SIGKILL

    def finish(self, *extra: str) -> tuple[int, list[dict[str, Any]], str]:
        result = preloaded.run(
            list(extra) or self.command, self.env, self.home.parent / "finish", timeout=120
        )
        out = result.stdout
        return result.returncode, json.loads(out) if out.strip() else [], result.stderr

    def accepted(self) -> int:
        """Submissions whose task id the batch has recorded (read from its run log)."""
        return self._count_intents("where task_id is not null")

    def recorded(self) -> int:
        """Submissions the batch has recorded, sent or not (read from its run log)."""
        return self._count_intents("")

    def _count_intents(self, where: str) -> int:
        database = self.home / "klingflow.sqlite"
        if not database.exists():
            return 0
        with sqlite3.connect(database) as db:
            try:
                row = db.execute(f"select count(*) from kf_intents {where}")  # noqa: S608
            except sqlite3.OperationalError:  # tables not created yet
                return 0
            count: int = row.fetchone()[0]
            return count

    def files(self) -> list[str]:
        return sorted(path.name for path in self.home.glob("runs/*/*.mp4"))


@pytest.fixture
def batch(tmp_path: Path, emulator: EmulatorServer, api_key: str) -> Batch:
    return Batch(tmp_path, emulator, api_key)


def assert_each_video_paid_once(emulator: EmulatorServer, batch: Batch) -> None:
    tasks = emulator.tasks()
    assert sorted(t["input"]["prompt"] for t in tasks) == sorted(PROMPTS)
    assert emulator.stats()["creates"] == len(PROMPTS)
    assert all(t["status"] == "completed" for t in tasks)
    assert batch.files() == ["1.mp4", "2.mp4", "3.mp4"]


def charged_usd(api_key: str, url: str) -> Decimal:
    """What PiAPI (the emulator) charged this key so far."""
    with PiAPI(api_key=api_key, base_url=url) as client:
        info = client.account()
    return Decimal(str(info.model_dump()["spent_usd"])).quantize(Decimal("0.01"))


def fault_used(emulator: EmulatorServer) -> bool:
    rules: list[dict[str, Any]] = emulator._call("GET", "/_emulator/faults")
    return any(rule["remaining"] == 0 for rule in rules)


def test_killed_during_a_download_before_later_submissions(
    batch: Batch, emulator: EmulatorServer
) -> None:
    """Item 1 is downloading, items 2-3 not yet submitted: the rerun finishes all, once each."""
    emulator.add_fault(FaultRule(action="slow", method="GET", path="/files/", delay_seconds=30))
    process = batch.start()
    batch.kill_when(process, lambda: fault_used(emulator))
    assert emulator.stats()["creates"] == 1
    emulator.clear_faults()

    code, [run], _ = batch.finish()
    assert code == 0
    assert run["status"] == "completed"
    assert_each_video_paid_once(emulator, batch)


def test_killed_while_a_task_is_generating(batch: Batch, emulator: EmulatorServer) -> None:
    """Killed mid-wait: the rerun resumes the recorded task ids instead of submitting again."""
    emulator.configure(processing_seconds=3_000)  # 3 s of real time per video at x1000
    process = batch.start()
    batch.kill_when(process, lambda: batch.accepted() == 1)
    emulator.configure(processing_seconds=1)

    code, [run], _ = batch.finish()
    assert code == 0
    assert run["status"] == "completed"
    assert_each_video_paid_once(emulator, batch)


def test_killed_after_piapi_took_the_task_but_before_it_answered(
    batch: Batch, emulator: EmulatorServer
) -> None:
    """The lost answer is the honest limit: the run pauses instead of paying twice."""
    emulator.add_fault(
        FaultRule(
            action="slow", method="POST", path="/api/v1/task", phase="after", delay_seconds=30
        )
    )
    process = batch.start()
    batch.kill_when(process, lambda: emulator.stats()["creates"] == 1)
    emulator.clear_faults()

    code, [run], _ = batch.finish()
    assert code == 16
    assert run["status"] == "paused"
    assert "may have created a paid task" in run["message"]
    # The other items went on; the uncertain one was not submitted again.
    assert emulator.stats()["creates"] == len(PROMPTS)

    # What a user finds in PiAPI's task list for the first prompt:
    [task] = [t for t in emulator.tasks() if t["input"]["prompt"] == PROMPTS[0]]
    code, [run], _ = batch.finish(
        "runs", "retry", run["run_id"], "--task-id", task["task_id"], "--json"
    )
    assert code == 0
    assert run["status"] == "completed"
    assert_each_video_paid_once(emulator, batch)


def test_creates_queued_behind_the_clients_limits_resume_by_themselves(
    batch: Batch, emulator: EmulatorServer
) -> None:
    """Killed while creates wait for a free task slot: none was sent, so none is uncertain."""
    prompts = [f"queued prompt {n}" for n in range(6)]
    batch.command[batch.command.index("-i") + 1] = f"prompts={json.dumps(prompts)}"
    batch.file.write_text(WORKFLOW.replace("concurrency: 1", "concurrency: 6"))
    batch.env["KLINGFLOW_CONCURRENCY"] = "2"  # the client lets 2 tasks run; 4 creates queue
    emulator.configure(processing_seconds=3_000)  # 3 s of real time per video at x1000
    process = batch.start()
    # The other four wait behind the client's two slots: recorded, never sent.
    batch.kill_when(process, lambda: batch.accepted() == 2 and batch.recorded() == 6)
    assert emulator.stats()["creates"] == 2
    emulator.configure(processing_seconds=1)

    code, [run], _ = batch.finish()
    assert code == 0, run
    assert run["status"] == "completed"
    tasks = emulator.tasks()
    assert sorted(t["input"]["prompt"] for t in tasks) == sorted(prompts)
    assert emulator.stats()["creates"] == len(prompts)
    assert len(batch.files()) == len(prompts)


def test_task_id_per_item_settles_several_uncertain_submissions(
    batch: Batch, emulator: EmulatorServer
) -> None:
    """Two items' answers are lost: `--task-id PATH=ID` per item settles both, paying nothing more.

    Ids that do not match their submission's prompt are refused first, and nothing changes.
    """
    emulator.add_fault(
        FaultRule(action="drop", method="POST", path="/api/v1/task", phase="after", times=2)
    )
    code, [run], _ = batch.finish()
    assert code == 16
    assert run["status"] == "paused"
    assert emulator.stats()["creates"] == len(PROMPTS)
    by_prompt = {t["input"]["prompt"]: t["task_id"] for t in emulator.tasks()}
    first, second = by_prompt[PROMPTS[0]], by_prompt[PROMPTS[1]]

    retry = ["runs", "retry", run["run_id"], "--json"]
    swapped = ["--task-id", f"each[0].video={second}", "--task-id", f"each[1].video={first}"]
    code, [run], _ = batch.finish(*retry, *swapped)
    assert code == 16
    assert run["status"] == "paused"
    assert "is not this submission (it differs in input.prompt)" in run["message"]
    assert "nothing was changed" in run["message"]

    bare = ["--task-id", first]
    code, [run], _ = batch.finish(*retry, *bare)
    assert code == 16
    assert "there are 2 (each[0].video, each[1].video)" in run["message"]

    given = ["--task-id", f"each[0].video={first}", "--task-id", f"each[1].video={second}"]
    code, [run], _ = batch.finish(*retry, *given)
    assert code == 0, run["message"]
    assert run["status"] == "completed"
    assert_each_video_paid_once(emulator, batch)
    assert Decimal(run["spent_usd"]) == charged_usd(batch.env["PIAPI_API_KEY"], emulator.url)


def test_restart_counts_the_dead_processs_tasks_toward_the_concurrency_limit(
    batch: Batch, emulator: EmulatorServer
) -> None:
    """Two tasks still generate at PiAPI when the rerun starts: it submits no third meanwhile."""
    prompts = [f"limited prompt {n}" for n in range(4)]
    batch.command[batch.command.index("-i") + 1] = f"prompts={json.dumps(prompts)}"
    batch.file.write_text(WORKFLOW.replace("concurrency: 1", "concurrency: 4"))
    batch.env["KLINGFLOW_CONCURRENCY"] = "2"
    emulator.configure(processing_seconds=2_000)  # 2 s of real time per video at x1000
    process = batch.start()
    batch.kill_when(process, lambda: batch.accepted() == 2)

    code, [run], _ = batch.finish()
    assert code == 0, run["message"]
    assert run["status"] == "completed"
    assert emulator.stats()["creates"] == len(prompts)
    assert emulator.stats()["peak_concurrency"] == 2


LOOP_OF_20 = video_loop("crash-loop", concurrency=5)
KILLS = 20
SEED = 20261206


@pytest.mark.timeout(300)
@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_a_worker_killed_at_random_points_delivers_every_paid_video_once(
    database: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
    emulator: EmulatorServer,
    api_key: str,
) -> None:
    """SIGKILL a worker at 20 seeded random moments of a 20-video loop and restart it each
    time: 20 creates, 20 valid MP4s, spend equal to PiAPI's charge, and no human needed but
    for a create caught on the wire (settled with `--task-id` per item)."""
    home = tmp_path / "home"
    url = f"sqlite:///{home / 'klingflow.sqlite'}"
    if database == "postgres":
        url = request.getfixturevalue("postgres_url")
    env = command_env(
        home,
        emulator,
        api_key,
        database_url=url if database == "postgres" else None,
        # Polls every 50 ms would spend the default 60 requests a minute in seconds and
        # leave the worker waiting on its own rate limit: this test is about crashes.
        KLINGFLOW_REQUESTS_PER_MINUTE="100000",
        KLINGFLOW_EXECUTOR_ID="crash-worker",  # a restarted worker recovers its runs
    )
    prompts = [f"crash loop clip {n}" for n in range(20)]
    (tmp_path / "loop.yaml").write_text(LOOP_OF_20)
    emulator.configure(processing_seconds=2_500)  # 2.5 s of real time per video at x1000
    # Forked from a process that imported the engine already (preloaded.py): the ~40 worker
    # starts would spend most of this test's CPU on imports.
    started = preloaded.run(
        ["run", str(tmp_path / "loop.yaml"), "-i", f"prompts={json.dumps(prompts)}", "--detach"],
        env, tmp_path / "detach", check=True,
    )  # fmt: skip
    run_id = started.stdout.strip()
    runlog = RunLog(make_engine(url.replace("postgresql://", "postgresql+psycopg://")))
    log = tmp_path / "worker.log"

    def status() -> RunStatus:
        run = runlog.get_run(run_id)
        assert run is not None
        return run.status

    def start_worker() -> preloaded.Command:
        worker = preloaded.Command(["worker"], env, stdout=log, stderr=log)
        workers.append(worker)
        deadline = time.monotonic() + 60
        while log.read_text().count("klingflow worker crash-worker") < starts + 1:
            assert worker.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the worker never started"
            time.sleep(0.02)
        return worker

    def retry(*options: str) -> int:
        """`runs retry` from another shell while the worker runs (without its executor id)."""
        shell = {k: v for k, v in env.items() if k != "KLINGFLOW_EXECUTOR_ID"}
        try:
            done = preloaded.run(
                ["runs", "retry", run_id, *options, "--json"],
                shell,
                tmp_path / "retry",
                timeout=120,
            )
        except subprocess.TimeoutExpired as error:
            raise AssertionError(
                f"runs retry {options} hung: {error.stderr!r}\n"
                f"{[(n.node_path, n.status.value) for n in runlog.nodes(run_id)]}\n"
                f"{[(i.node_path, i.state.value, i.task_id) for i in runlog.intents(run_id)]}"
            ) from None
        return done.returncode

    def uncertain_now() -> tuple[list[Intent], list[str], list[str]]:
        """The uncertain submissions, as the user sorts them in PiAPI's task list: the
        `--task-id` options of those PiAPI took, and the node paths of those it never got."""
        uncertain = [i for i in runlog.intents(run_id) if i.state == IntentState.UNCERTAIN]
        by_prompt = {t["input"]["prompt"]: t["task_id"] for t in emulator.tasks()}
        found, missing = [], []
        for intent in uncertain:
            prompt = prompts[int(intent.node_path.split("[")[1].split("]")[0])]
            if prompt in by_prompt:  # PiAPI took it: its task id settles the item
                found += ["--task-id", f"{intent.node_path}={by_prompt[prompt]}"]
            else:  # it never arrived: submit it again
                missing.append(intent.node_path)
        return uncertain, found, missing

    rng = random.Random(SEED)
    kills = starts = settled_early = 0
    workers: list[preloaded.Command] = []
    try:
        while kills < KILLS and starts < 2 * KILLS:
            # PiAPI's clock stands still while no worker is up, so the loop is not done
            # by the time the kills are: it advances only while the worker works.
            emulator.configure(time_scale=0.001)
            worker = start_worker()
            starts += 1
            emulator.configure(time_scale=1000)
            time.sleep(rng.uniform(0.05, 0.5))  # a random moment of submitting, polling, saving
            seen = status()
            unfinished = seen not in (RunStatus.COMPLETED, RunStatus.PAUSED)
            os.kill(worker.pid, signal.SIGKILL)
            assert worker.wait(timeout=10) == -signal.SIGKILL
            kills += unfinished
            if seen is RunStatus.PAUSED:
                # Every item not yet done was caught on the wire by earlier kills, and this
                # worker paused the run before the kills were done: the user settles them
                # (without waiting: no worker is up), and the next worker goes on with it.
                early, found, missing = uncertain_now()
                assert early, runlog.get_run(run_id)
                settled_early += len(found) // 2 if found else len(missing)
                assert retry(*(found or ["--resubmit"]), "--no-wait") == 0
        assert kills == KILLS, f"the loop finished after {kills} kills"
        worker = start_worker()
        deadline = time.monotonic() + 120
        while status() not in (RunStatus.COMPLETED, RunStatus.PAUSED):
            assert worker.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, (
                f"the run never settled: {status()}\n"
                f"{[(n.node_path, n.status.value, n.error) for n in runlog.nodes(run_id)]}\n"
                f"{[(i.node_path, i.state.value, i.task_id) for i in runlog.intents(run_id)]}"
            )
            time.sleep(0.1)
        uncertain, found, missing = uncertain_now()
        if uncertain:  # creates caught on the wire: the user looks in PiAPI's task list
            assert status() == RunStatus.PAUSED
            if found:  # the others still uncertain keep the run paused (exit 16)
                assert retry(*found) == (16 if missing else 0)
            if missing:
                assert retry("--resubmit") == 0
        run = runlog.get_run(run_id)
        assert run is not None
        price = runlog.intents(run_id)[0].estimated_usd  # klingflow's price of one video
    finally:
        for started_worker in workers:
            if started_worker.poll() is None:
                started_worker.kill()
                started_worker.wait(timeout=30)
        runlog.engine.dispose()
    assert run.status == RunStatus.COMPLETED, run.message
    # Only a create on the wire at a kill can be uncertain: never one still queued.
    assert len(uncertain) <= kills, (
        f"{len(uncertain)} uncertain after {kills} kills ({settled_early} settled earlier)"
    )
    stats = emulator.stats()
    assert stats["creates"] == 20
    assert sorted(t["input"]["prompt"] for t in emulator.tasks()) == sorted(prompts)
    files = sorted(home.glob(f"runs/{run_id}/*.mp4"))
    assert [f.name for f in files] == sorted(f"{n}.mp4" for n in range(1, 21))
    for path in files:
        with av.open(str(path)) as container:
            assert container.streams.video, path
    assert run.spent_usd == charged_usd(api_key, emulator.url) == 20 * price


def test_spend_after_resubmitting_is_what_piapi_charged(
    batch: Batch, emulator: EmulatorServer
) -> None:
    """A create dropped before PiAPI took it, then `--resubmit`: spent is PiAPI's charge, and
    the first submission's estimate stays reserved (unknown), never counted as spent."""
    emulator.add_fault(FaultRule(action="drop", method="POST", path="/api/v1/task"))
    code, [run], _ = batch.finish()
    assert code == 16
    assert run["status"] == "paused"
    assert emulator.stats()["creates"] == len(PROMPTS) - 1  # the first never reached PiAPI

    code, [run], _ = batch.finish("runs", "retry", run["run_id"], "--resubmit", "--json")
    assert code == 0, run["message"]
    assert run["status"] == "completed"
    assert_each_video_paid_once(emulator, batch)
    charged = charged_usd(batch.env["PIAPI_API_KEY"], emulator.url)
    assert Decimal(run["spent_usd"]) == charged
    assert Decimal(run["reserved_usd"]) == charged / len(PROMPTS)  # the abandoned estimate
