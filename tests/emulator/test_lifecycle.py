"""The task lifecycle on the emulated clock: statuses, timestamps, usage, staging and cancels.

Most tests stop the clock (`paused`) and step it with `advance`, so every assertion is about
emulated time and none depends on how fast the machine is.
"""

from __future__ import annotations

import itertools
import time
from datetime import datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest

from klingflow.emulator import EmulatorServer, FaultRule, GenerationError
from klingflow.piapi.kling import parse_task_request
from klingflow.piapi.models import Task, usd_to_points
from klingflow.piapi.pricing import estimate_cost

from ..loopback import loopback_client

ZERO_TIME = "0001-01-01T00:00:00Z"
V3_STD_5S: dict[str, Any] = {
    "model": "kling",
    "task_type": "video_generation",
    "input": {"prompt": "a heron takes off", "version": "3.0", "mode": "std", "duration": 5},
}
V3_STD_5S_POINTS = 5_000_000  # 5 s x $0.10 x 10,000,000 points per USD
TURBO_PRO_5S: dict[str, Any] = {
    "model": "kling-turbo",
    "task_type": "video_generation",
    "input": {"prompt": "a race car", "version": "2.5-turbo", "mode": "pro", "duration": 5},
}


def _create(client: httpx.Client, body: dict[str, Any] = V3_STD_5S) -> str:
    response = client.post("/api/v1/task", json=body)
    assert response.status_code == 200, response.text
    task_id: str = response.json()["data"]["task_id"]
    return task_id


def _get(client: httpx.Client, task_id: str) -> dict[str, Any]:
    data: dict[str, Any] = client.get(f"/api/v1/task/{task_id}").json()["data"]
    return data


def _task(client: httpx.Client, task_id: str) -> Task:
    return Task.model_validate(_get(client, task_id))


def _at(task: Task, name: str) -> datetime:
    value = getattr(task.meta, name)
    assert value is not None, f"{name} is unset"
    assert isinstance(value, datetime)
    return value


def _seconds(later: datetime, earlier: datetime) -> float:
    return (later - earlier).total_seconds()


def _balance_usd(client: httpx.Client) -> Decimal:
    return Decimal(str(client.get("/account/info").json()["data"]["equivalent_in_usd"]))


def test_task_goes_pending_processing_completed_on_the_emulated_clock(
    paused: EmulatorServer, client: httpx.Client
) -> None:
    """Pending for pending_seconds, processing for processing_seconds, then completed."""
    task_id = _create(client)
    paused.advance(1.9)
    assert _get(client, task_id)["status"] == "pending"
    paused.advance(0.2)
    assert _get(client, task_id)["status"] == "processing"
    paused.advance(59.0)
    assert _get(client, task_id)["status"] == "processing"
    paused.advance(1.0)
    assert _get(client, task_id)["status"] == "completed"


def test_timestamps_are_zero_until_set_then_exact(
    paused: EmulatorServer, client: httpx.Client
) -> None:
    """started_at and ended_at are Go's zero time until they happen, then land on schedule."""
    task_id = _create(client)
    pending = _get(client, task_id)["meta"]
    assert (pending["started_at"], pending["ended_at"]) == (ZERO_TIME, ZERO_TIME)
    paused.advance(2)
    processing = _get(client, task_id)["meta"]
    assert processing["started_at"] != ZERO_TIME
    assert processing["ended_at"] == ZERO_TIME
    paused.advance(60)
    task = _task(client, task_id)
    assert _seconds(_at(task, "started_at"), _at(task, "created_at")) == pytest.approx(2, abs=0.01)
    assert _seconds(_at(task, "ended_at"), _at(task, "started_at")) == pytest.approx(60, abs=0.01)


def test_zero_latency_task_is_completed_on_the_next_get(
    paused: EmulatorServer, client: httpx.Client
) -> None:
    """With pending_seconds and processing_seconds 0 a new task is completed by the next GET."""
    paused.configure(pending_seconds=0, processing_seconds=0)
    created = client.post("/api/v1/task", json=V3_STD_5S).json()["data"]
    assert created["status"] == "pending"  # the create answer shows the state it was made in
    task = _task(client, created["task_id"])
    assert task.status == "completed"
    assert _at(task, "started_at") == _at(task, "created_at")
    assert _at(task, "ended_at") == _at(task, "started_at")
    assert task.video_url is not None
    assert client.get(task.video_url).status_code == 200


def test_tasks_finish_on_their_own_at_a_high_time_scale(
    emulator: EmulatorServer, client: httpx.Client
) -> None:
    """Without any time control, a 62-second job finishes in well under a second at x1000."""
    task_id = _create(client)
    deadline = time.monotonic() + 10
    while _get(client, task_id)["status"] != "completed":
        assert time.monotonic() < deadline, "the task never completed"
        time.sleep(0.01)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(V3_STD_5S, id="3.0 std"),
        pytest.param(
            {**V3_STD_5S, "input": {**V3_STD_5S["input"], "mode": "pro", "enable_audio": True}},
            id="3.0 pro audio",
        ),
        pytest.param(
            {
                "model": "kling",
                "task_type": "video_generation",
                "input": {"prompt": "a", "version": "2.6", "duration": 10, "mode": "pro"},
            },
            id="2.6 pro 10 s",
        ),
        pytest.param(
            {
                "model": "kling",
                "task_type": "omni_video_generation",
                "input": {"prompt": "a", "version": "3.0", "resolution": "720p", "duration": 3},
            },
            id="omni 3 s",
        ),
        pytest.param(
            {
                "model": "kling",
                "task_type": "motion_control",
                "input": {"image_url": "https://e.com/a.png", "preset_motion": "Wave"},
            },
            id="motion control",
        ),
        pytest.param(
            {"model": "kling", "task_type": "sound", "input": {"prompt": "rain"}}, id="sound"
        ),
        pytest.param(
            {
                "model": "kling",
                "task_type": "ai_try_on",
                "input": {
                    "model_input": "https://e.com/me.png",
                    "dress_input": "https://e.com/dress.png",
                    "batch_size": 3,
                },
            },
            id="try-on x3",
        ),
    ],
)
def test_usage_is_frozen_at_submit_and_consumed_at_completion(
    paused: EmulatorServer, client: httpx.Client, body: dict[str, Any]
) -> None:
    """`frozen` is the price-table cost at submit (consume 0); completion consumes exactly it."""
    points = usd_to_points(estimate_cost(parse_task_request(body)[0]))
    task_id = _create(client, body)
    assert _get(client, task_id)["meta"]["usage"] == {
        "type": "point",
        "frozen": points,
        "consume": 0,
    }
    paused.advance(100)
    task = _get(client, task_id)
    assert task["status"] == "completed"
    assert task["meta"]["usage"] == {"type": "point", "frozen": points, "consume": points}


def test_known_price_is_one_usd_per_ten_million_points(
    paused: EmulatorServer, client: httpx.Client
) -> None:
    """A 5 s Kling 3.0 std task without audio freezes $0.50, i.e. 5,000,000 points."""
    task_id = _create(client)
    assert _get(client, task_id)["meta"]["usage"]["frozen"] == V3_STD_5S_POINTS


def test_turbo_is_charged_at_submit(paused: EmulatorServer, client: httpx.Client) -> None:
    """kling-turbo shows usage type "llm", consumed at once: 2.5-turbo pro 5 s = 2,800,000."""
    paused.configure(balance_usd="10")
    task_id = _create(client, TURBO_PRO_5S)
    assert _get(client, task_id)["meta"]["usage"] == {
        "type": "llm",
        "frozen": 0,
        "consume": 2_800_000,
    }
    assert _balance_usd(client) == Decimal("9.72")
    paused.advance(100)
    assert _get(client, task_id)["meta"]["usage"]["consume"] == 2_800_000
    assert _balance_usd(client) == Decimal("9.72")


def test_balance_reserves_at_submit_and_charges_at_completion(
    paused: EmulatorServer, client: httpx.Client
) -> None:
    """The usable balance drops by the frozen amount at submit and stays down once consumed."""
    paused.configure(balance_usd="10")
    task_id = _create(client)
    assert _balance_usd(client) == Decimal("9.5")
    paused.advance(100)
    assert _get(client, task_id)["status"] == "completed"
    assert _balance_usd(client) == Decimal("9.5")
    assert client.get("/account/info").json()["data"]["spent_usd"] == 0.5


def test_failed_task_has_an_error_and_is_refunded(
    paused: EmulatorServer, client: httpx.Client
) -> None:
    """A generation failure ends `failed` with the error block filled and nothing consumed."""
    paused.configure(balance_usd="10")
    error = GenerationError(code=10005, message="task failed", raw_message="kling: risk control")
    paused.add_fault(FaultRule(action="fail_task", error=error))
    task_id = _create(client)
    assert _balance_usd(client) == Decimal("9.5")
    paused.advance(100)
    task = _get(client, task_id)
    assert task["status"] == "failed"
    assert task["error"] == {
        "code": 10005,
        "message": "task failed",
        "raw_message": "kling: risk control",
        "detail": None,
    }
    assert task["meta"]["usage"] == {"type": "point", "frozen": V3_STD_5S_POINTS, "consume": 0}
    assert task["meta"]["ended_at"] != ZERO_TIME
    assert _balance_usd(client) == Decimal("10")


def test_failed_turbo_task_refunds_its_upfront_charge(
    paused: EmulatorServer, client: httpx.Client
) -> None:
    """A turbo task charged at submit gets its charge back (consume 0) when it fails."""
    paused.configure(balance_usd="10")
    paused.add_fault(FaultRule(action="fail_task"))
    task_id = _create(client, TURBO_PRO_5S)
    paused.advance(100)
    task = _get(client, task_id)
    assert task["status"] == "failed"
    assert task["meta"]["usage"]["consume"] == 0
    assert _balance_usd(client) == Decimal("10")


def test_fail_probability_uses_the_configured_generation_error(
    paused: EmulatorServer, client: httpx.Client
) -> None:
    """With fail_probability 1 every task fails with config.generation_error."""
    error = GenerationError(code=10002, message="quota not enough", raw_message="")
    paused.configure(fail_probability=1.0, generation_error=error)
    task_id = _create(client)
    paused.advance(100)
    task = _get(client, task_id)
    assert task["status"] == "failed"
    assert task["error"]["message"] == "quota not enough"


def test_balance_runs_out_with_402_credit_not_enough(
    paused: EmulatorServer, client: httpx.Client
) -> None:
    """When the balance cannot cover the price the create answers 402 "credit not enough"."""
    paused.configure(balance_usd="1.2")
    _create(client)
    _create(client)
    response = client.post("/api/v1/task", json=V3_STD_5S)
    assert response.status_code == 402
    assert response.json()["code"] == 402
    assert response.json()["data"] is None
    assert "credit not enough" in response.json()["message"]
    assert paused.stats()["creates"] == 2
    assert _balance_usd(client) == Decimal("0.2")


def test_refund_makes_the_balance_usable_again(
    paused: EmulatorServer, client: httpx.Client
) -> None:
    """After a cancel releases its reservation, a task that did not fit fits again."""
    paused.configure(balance_usd="0.5")
    first = _create(client)
    assert client.post("/api/v1/task", json=V3_STD_5S).status_code == 402
    assert client.delete(f"/api/v1/task/{first}").status_code == 200
    _create(client)


def test_cancel_releases_the_reservation(paused: EmulatorServer, client: httpx.Client) -> None:
    """A cancelled pending task ends failed, "task cancelled", with nothing consumed."""
    paused.configure(balance_usd="10")
    task_id = _create(client)
    data = client.delete(f"/api/v1/task/{task_id}").json()["data"]
    assert data["status"] == "failed"
    assert data["error"]["code"] == 10001
    assert data["error"]["message"] == "task cancelled"
    assert data["meta"]["ended_at"] != ZERO_TIME
    assert data["meta"]["started_at"] == ZERO_TIME
    assert data["meta"]["usage"]["consume"] == 0
    assert _balance_usd(client) == Decimal("10")
    paused.advance(100)  # the lifecycle does not resume a cancelled task
    assert _get(client, task_id)["status"] == "failed"


def test_cancelled_status_can_be_cancelled(paused: EmulatorServer, client: httpx.Client) -> None:
    """With cancelled_status "cancelled" a cancelled task shows status "cancelled"."""
    paused.configure(cancelled_status="cancelled")
    task_id = _create(client)
    assert client.delete(f"/api/v1/task/{task_id}").json()["data"]["status"] == "cancelled"


def test_cancel_while_processing_is_400(paused: EmulatorServer, client: httpx.Client) -> None:
    """Once processing a task cannot be cancelled: 400 naming the status, task untouched."""
    task_id = _create(client)
    paused.advance(3)
    response = client.post(f"/api/v1/task/{task_id}/cancel")
    assert response.status_code == 400
    assert response.json()["message"] == (
        f"task {task_id} is processing: only pending tasks can be cancelled"
    )
    paused.advance(100)
    assert _get(client, task_id)["status"] == "completed"


def test_cancel_after_completion_is_400(paused: EmulatorServer, client: httpx.Client) -> None:
    """A completed task cannot be cancelled either."""
    task_id = _create(client)
    paused.advance(100)
    response = client.delete(f"/api/v1/task/{task_id}")
    assert response.status_code == 400
    assert "is completed" in response.json()["message"]


def test_over_the_concurrency_limit_tasks_are_staged_then_promoted(
    paused: EmulatorServer, client: httpx.Client
) -> None:
    """Past the per-key limit a task is `staged`, and becomes pending when a slot frees."""
    paused.configure(concurrency_limit=1)
    first, second = _create(client), _create(client)
    staged = _get(client, second)
    assert staged["status"] == "staged"
    assert staged["meta"]["started_at"] == ZERO_TIME
    assert staged["meta"]["usage"]["frozen"] == V3_STD_5S_POINTS
    paused.advance(61)
    assert _get(client, second)["status"] == "staged"
    paused.advance(1.5)
    assert _get(client, first)["status"] == "completed"
    assert _get(client, second)["status"] == "pending"
    paused.advance(2)
    done, promoted = _task(client, first), _task(client, second)
    assert promoted.status == "processing"
    assert _seconds(_at(promoted, "started_at"), _at(done, "ended_at")) == pytest.approx(
        2, abs=0.01
    )


def test_one_clock_jump_applies_every_transition_in_order(
    paused: EmulatorServer, client: httpx.Client
) -> None:
    """One large advance replays the queue exactly: each task starts 2 s after the last ends."""
    paused.configure(concurrency_limit=1)
    ids = [_create(client) for _ in range(3)]
    paused.advance(1000)
    tasks = [_task(client, task_id) for task_id in ids]
    assert [task.status for task in tasks] == ["completed"] * 3
    for earlier, later in itertools.pairwise(tasks):
        gap = _seconds(_at(later, "started_at"), _at(earlier, "ended_at"))
        assert gap == pytest.approx(2, abs=0.01)
    for task in tasks:
        assert _seconds(_at(task, "ended_at"), _at(task, "started_at")) == pytest.approx(
            60, abs=0.01
        )
    assert paused.stats()["peak_concurrency"] == 1


def test_cancelling_a_staged_task_takes_it_out_of_the_queue(
    paused: EmulatorServer, client: httpx.Client
) -> None:
    """A staged task can be cancelled; the next staged task takes the freed turn."""
    paused.configure(concurrency_limit=1)
    first, second, third = _create(client), _create(client), _create(client)
    assert client.delete(f"/api/v1/task/{second}").status_code == 200
    paused.advance(63)
    assert [_get(client, t)["status"] for t in (first, second, third)] == [
        "completed",
        "failed",
        "pending",
    ]


def test_cancelling_a_pending_task_frees_its_slot(
    paused: EmulatorServer, client: httpx.Client
) -> None:
    """Cancelling a pending task promotes the oldest staged task at once."""
    paused.configure(concurrency_limit=1)
    first, second = _create(client), _create(client)
    assert client.delete(f"/api/v1/task/{first}").status_code == 200
    assert _get(client, second)["status"] == "pending"


def test_raising_the_concurrency_limit_promotes_staged_tasks(
    paused: EmulatorServer, client: httpx.Client
) -> None:
    """A higher limit set at run time starts waiting tasks right away."""
    paused.configure(concurrency_limit=1)
    _create(client)
    second = _create(client)
    assert _get(client, second)["status"] == "staged"
    paused.configure(concurrency_limit=2)
    assert _get(client, second)["status"] == "pending"


def test_concurrency_limit_is_per_key(paused: EmulatorServer, api_key: str) -> None:
    """Each key has its own slots: one key's queue does not stage another key's tasks."""
    paused.configure(api_keys=[api_key, "second-key"], concurrency_limit=1)
    with (
        loopback_client(paused.url, headers={"x-api-key": api_key}) as one,
        loopback_client(paused.url, headers={"x-api-key": "second-key"}) as two,
    ):
        _create(one)
        assert _get(one, _create(one))["status"] == "staged"
        assert _get(two, _create(two))["status"] == "pending"
    assert paused.stats()["peak_concurrency"] == 2


def test_lip_sync_price_follows_the_origin_video_length(
    paused: EmulatorServer, client: httpx.Client
) -> None:
    """A lip sync of a 10 s video costs two 5-second blocks: $0.20, 2,000,000 points."""
    origin = _create(
        client,
        {
            "model": "kling",
            "task_type": "video_generation",
            "input": {"prompt": "a talk", "version": "2.6", "duration": 10},
        },
    )
    paused.advance(100)
    lip = _create(
        client,
        {
            "model": "kling",
            "task_type": "lip_sync",
            "input": {"origin_task_id": origin, "tts_text": "hello"},
        },
    )
    assert _get(client, lip)["meta"]["usage"]["frozen"] == 2_000_000
