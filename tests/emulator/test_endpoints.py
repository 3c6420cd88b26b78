"""Every PiAPI endpoint the emulator serves: auth, the envelope, and the task object's shape."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import pytest

from klingflow.emulator import EmulatorServer
from klingflow.piapi.models import AccountInfo, ActiveTaskCounts, Task, TaskStatus

from ..loopback import loopback_client

TEXT_TO_VIDEO: dict[str, Any] = {
    "model": "kling",
    "task_type": "video_generation",
    "input": {"prompt": "a red fox in snow", "duration": 5, "version": "3.0", "mode": "std"},
}
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$")
ZERO_TIME = "0001-01-01T00:00:00Z"


def _create(client: httpx.Client, body: dict[str, Any] = TEXT_TO_VIDEO) -> dict[str, Any]:
    response = client.post("/api/v1/task", json=body)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def test_create_answers_the_envelope_with_a_pending_task(client: httpx.Client) -> None:
    """POST /api/v1/task answers 200 with {code: 200, data: task, message: "success"}."""
    response = client.post("/api/v1/task", json=TEXT_TO_VIDEO)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"code", "data", "message"}
    assert body["code"] == 200
    assert body["message"] == "success"
    assert body["data"]["status"] == "pending"


def test_task_object_has_every_field_of_the_spec(
    paused: EmulatorServer, client: httpx.Client
) -> None:
    """The task object carries exactly the spec's fields, with zero times while unset."""
    task = _create(client)
    assert set(task) == {
        "task_id", "model", "task_type", "status", "config", "input", "output", "meta",
        "detail", "logs", "error",
    }  # fmt: skip
    assert uuid.UUID(task["task_id"]).version == 4
    assert (task["model"], task["task_type"]) == ("kling", "video_generation")
    assert set(task["meta"]) == {
        "created_at", "started_at", "ended_at", "usage", "is_using_private_pool",
    }  # fmt: skip
    assert TIMESTAMP.match(task["meta"]["created_at"])
    assert task["meta"]["started_at"] == ZERO_TIME
    assert task["meta"]["ended_at"] == ZERO_TIME
    assert set(task["meta"]["usage"]) == {"type", "frozen", "consume"}
    assert task["meta"]["is_using_private_pool"] is False
    assert task["error"] == {"code": 0, "raw_message": "", "message": "", "detail": None}
    assert task["detail"] is None
    assert task["logs"] == []
    assert task["output"] == {"video": ""}
    assert task["config"] == {  # PiAPI's samples without `config` show "public"
        "service_mode": "public",
        "webhook_config": {"endpoint": "", "secret": ""},
    }
    assert list(task["input"]) == sorted(task["input"])  # a normalised, sorted echo
    assert task["input"]["prompt"] == "a red fox in snow"
    Task.model_validate(task)  # and the client's model reads it


def test_config_is_echoed_and_private_mode_marks_the_private_pool(client: httpx.Client) -> None:
    """The task echoes config.service_mode and webhook_config; private mode sets the flag."""
    config = {
        "service_mode": "private",
        "webhook_config": {"endpoint": "http://127.0.0.1:9/hook", "secret": "s3"},
    }
    task = _create(client, {**TEXT_TO_VIDEO, "config": config})
    assert task["config"] == config
    assert task["meta"]["is_using_private_pool"] is True


def test_documented_example_with_empty_webhook_endpoint_is_accepted(client: httpx.Client) -> None:
    """PiAPI's own Kling 3.0 example, with `webhook_config.endpoint: ""`, creates a task."""
    body = {
        "model": "kling",
        "task_type": "video_generation",
        "input": {
            "prompt": "a cat",
            "duration": 5,
            "aspect_ratio": "16:9",
            "enable_audio": False,
            "prefer_multi_shots": False,
            "mode": "std",
            "version": "3.0",
        },
        "config": {"service_mode": "public", "webhook_config": {"endpoint": "", "secret": ""}},
    }
    task = _create(client, body)
    assert task["config"]["webhook_config"] == {"endpoint": "", "secret": ""}


@pytest.mark.parametrize(
    ("sent", "echo"),
    [
        pytest.param(
            {"prompt": "a fox", "version": "2.1", "duration": "5s"},
            {"prompt": "a fox", "version": "2.1", "duration": 5, "mode": "std",
             "aspect_ratio": "16:9"},
            id="2.1",
        ),
        pytest.param(
            {"prompt": "a fox", "model_name": "Kling V1.6", "negative_prompt": ""},
            {"prompt": "a fox", "version": "1.6", "duration": 5, "mode": "std",
             "aspect_ratio": "16:9"},
            id="1.6 by model_name",
        ),
        pytest.param(
            {"prompt": "a fox", "version": "2.6", "mode": "pro"},
            {"prompt": "a fox", "version": "2.6", "duration": 5, "mode": "pro",
             "aspect_ratio": "16:9", "enable_audio": False},
            id="2.6 has audio",
        ),
        pytest.param(
            {"prompt": "a fox", "version": "3.0"},
            {"prompt": "a fox", "version": "3.0", "duration": 5, "mode": "std",
             "aspect_ratio": "16:9", "enable_audio": False, "prefer_multi_shots": False},
            id="3.0",
        ),
    ],
)  # fmt: skip
def test_input_echo_is_what_was_sent_plus_documented_defaults(
    client: httpx.Client, sent: dict[str, Any], echo: dict[str, Any]
) -> None:
    """1.6/2.1 echoes never gain `enable_audio` or `prefer_multi_shots` that were not sent."""
    body = {"model": "kling", "task_type": "video_generation", "input": sent}
    task = _create(client, body)
    assert task["input"] == dict(sorted(echo.items()))


def test_get_returns_the_same_task(client: httpx.Client) -> None:
    """GET /api/v1/task/{task_id} answers the envelope with the created task."""
    created = _create(client)
    response = client.get(f"/api/v1/task/{created['task_id']}")
    assert response.status_code == 200
    body = response.json()
    assert (body["code"], body["message"]) == (200, "success")
    assert body["data"]["task_id"] == created["task_id"]
    assert body["data"]["input"] == created["input"]


def test_get_unknown_task_is_404_in_the_envelope(client: httpx.Client) -> None:
    """An unknown task id answers 404 with code 404, null data and a message naming it."""
    task_id = str(uuid.uuid4())
    response = client.get(f"/api/v1/task/{task_id}")
    assert response.status_code == 404
    assert response.json() == {"code": 404, "data": None, "message": f"task {task_id} not found"}


def test_tasks_of_another_key_are_invisible(emulator: EmulatorServer, api_key: str) -> None:
    """A task created with one key is 404 for another key (get and cancel alike)."""
    emulator.configure(api_keys=[api_key, "other-key"])
    with (
        loopback_client(emulator.url, headers={"x-api-key": api_key}) as mine,
        loopback_client(emulator.url, headers={"x-api-key": "other-key"}) as theirs,
    ):
        task_id = _create(mine)["task_id"]
        assert theirs.get(f"/api/v1/task/{task_id}").status_code == 404
        assert theirs.delete(f"/api/v1/task/{task_id}").status_code == 404
        assert mine.get(f"/api/v1/task/{task_id}").status_code == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/v1/task"),
        ("GET", "/api/v1/task/0b9f8d2e-0000-4000-8000-000000000000"),
        ("DELETE", "/api/v1/task/0b9f8d2e-0000-4000-8000-000000000000"),
        ("POST", "/api/v1/task/0b9f8d2e-0000-4000-8000-000000000000/cancel"),
        ("DELETE", "/api/v1/tasks?created_before=1&model=all"),
        ("GET", "/account/info"),
        ("GET", "/account/active_tasks"),
    ],
)
@pytest.mark.parametrize("key", [None, "", "wrong-key"])
def test_missing_or_wrong_key_is_401_on_every_endpoint(
    emulator: EmulatorServer, method: str, path: str, key: str | None
) -> None:
    """Without a configured key in x-api-key every PiAPI endpoint answers 401 in the envelope."""
    headers = {} if key is None else {"x-api-key": key}
    response = httpx.request(method, emulator.url + path, headers=headers, json=TEXT_TO_VIDEO)
    assert response.status_code == 401
    body = response.json()
    assert body["code"] == 401
    assert body["data"] is None
    assert "x-api-key" in body["message"]
    assert emulator.stats()["creates"] == 0


def test_api_key_header_name_is_case_insensitive(emulator: EmulatorServer, api_key: str) -> None:
    """`X-API-Key` (as the CLI and pricing pages send it) works like `x-api-key`."""
    response = httpx.post(
        emulator.url + "/api/v1/task", headers={"X-API-Key": api_key}, json=TEXT_TO_VIDEO
    )
    assert response.status_code == 200


def test_any_non_empty_key_is_accepted_without_configured_keys(emulator: EmulatorServer) -> None:
    """With an empty api_keys list any non-empty key works, and an empty one still gets 401."""
    emulator.configure(api_keys=[])
    url = emulator.url + "/account/info"
    assert httpx.get(url, headers={"x-api-key": "anything-at-all"}).status_code == 200
    assert httpx.get(url, headers={"x-api-key": ""}).status_code == 401
    assert httpx.get(url).status_code == 401


@pytest.mark.parametrize("route", ["delete", "post-cancel"])
def test_both_cancel_routes_cancel_a_pending_task(
    paused: EmulatorServer, client: httpx.Client, route: str
) -> None:
    """DELETE /api/v1/task/{id} and POST /api/v1/task/{id}/cancel both cancel a pending task."""
    task_id = _create(client)["task_id"]
    if route == "delete":
        response = client.delete(f"/api/v1/task/{task_id}")
    else:
        response = client.post(f"/api/v1/task/{task_id}/cancel")
    assert response.status_code == 200
    data = response.json()["data"]
    assert data["status"] == "failed"
    assert data["error"]["message"] == "task cancelled"
    assert client.get(f"/api/v1/task/{task_id}").json()["data"]["status"] == "failed"


def test_cancel_unknown_task_is_404(client: httpx.Client) -> None:
    """Cancelling a task id nobody created answers 404."""
    assert client.delete(f"/api/v1/task/{uuid.uuid4()}").status_code == 404


def test_bulk_cancel_cancels_pending_tasks_created_before_the_timestamp(
    paused: EmulatorServer, client: httpx.Client
) -> None:
    """DELETE /api/v1/tasks cancels this key's pending tasks created before created_before."""
    early = [_create(client)["task_id"] for _ in range(2)]
    cutoff = int(paused.now()) + 1
    paused.advance(5)  # the early ones are processing now: not cancellable
    late = _create(client)["task_id"]
    response = client.delete("/api/v1/tasks", params={"created_before": cutoff, "model": "all"})
    assert response.status_code == 200
    assert response.json()["data"] == {"cancelled_task_ids": [], "count": 0}
    later_cutoff = int(paused.now()) + 1
    response = client.delete(
        "/api/v1/tasks", params={"created_before": later_cutoff, "model": "kling"}
    )
    assert response.json()["data"] == {"cancelled_task_ids": [late], "count": 1}
    statuses = [client.get(f"/api/v1/task/{t}").json()["data"]["status"] for t in early]
    assert statuses == ["processing", "processing"]


def test_bulk_cancel_filters_by_model(paused: EmulatorServer, client: httpx.Client) -> None:
    """model=kling-turbo cancels only turbo tasks; kling covers both kling models."""
    turbo_body = {
        "model": "kling-turbo",
        "task_type": "video_generation",
        "input": {"prompt": "fast car", "duration": 5, "version": "2.5-turbo"},
    }
    kling_id = _create(client)["task_id"]
    turbo_id = _create(client, turbo_body)["task_id"]
    cutoff = int(paused.now()) + 1
    response = client.delete(
        "/api/v1/tasks", params={"created_before": cutoff, "model": "kling-turbo"}
    )
    assert response.json()["data"]["cancelled_task_ids"] == [turbo_id]
    response = client.delete("/api/v1/tasks", params={"created_before": cutoff, "model": "kling"})
    assert response.json()["data"]["cancelled_task_ids"] == [kling_id]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"model": "all"}, "created_before"),
        ({"created_before": "yesterday", "model": "all"}, "created_before"),
        ({"created_before": "1"}, "model"),
        ({"created_before": "1", "model": "sora"}, "model"),
    ],
)
def test_bulk_cancel_needs_both_query_parameters(
    client: httpx.Client, params: dict[str, str], field: str
) -> None:
    """created_before (unix seconds) and model are both required; errors name the field."""
    response = client.delete("/api/v1/tasks", params=params)
    assert response.status_code == 400
    assert response.json()["message"].startswith(f"{field}:")


def test_account_info_reports_the_balance(emulator: EmulatorServer, client: httpx.Client) -> None:
    """GET /account/info sends PiAPI's current shape and the older flat one, which agree."""
    emulator.configure(balance_usd="2.5")
    data = client.get("/account/info").json()["data"]
    assert set(data) >= {
        "id", "name", "plan", "type", "is_enable", "credit_pack_info", "equivalent_in_usd",
        "account_name", "account_id", "credits",
    }  # fmt: skip
    assert set(data["credit_pack_info"]) >= {
        "available_credits", "used_credits", "total_credits", "frozen_credits",
    }  # fmt: skip
    assert data["credits"] == data["credit_pack_info"]["available_credits"] == 25_000_000
    assert data["credit_pack_info"]["total_credits"] == 25_000_000
    assert data["equivalent_in_usd"] == 2.5
    assert (data["id"], data["name"]) == (data["account_id"], data["account_name"])
    assert data["is_enable"] is True
    info = AccountInfo.model_validate(data)
    assert info.account_id.startswith("key-")
    assert info.credits == 25_000_000


def test_keys_of_a_configured_account_share_one_balance(emulator: EmulatorServer) -> None:
    """With `accounts`, two keys spend from one balance; the config never shows the keys."""
    emulator.configure(
        api_keys=["key-a", "key-b"],
        accounts={"studio": ["key-a", "key-b"]},
        balance_usd="0.60",
        time_scale=1e-6,
    )
    assert emulator.configure()["accounts"] == {"studio": ["***", "***"]}
    body = {
        "model": "kling",
        "task_type": "video_generation",
        "input": {"prompt": "a fox", "version": "3.0", "duration": 5},
    }
    with (
        loopback_client(emulator.url, headers={"x-api-key": "key-a"}) as a,
        loopback_client(emulator.url, headers={"x-api-key": "key-b"}) as b,
    ):
        assert a.post("/api/v1/task", json=body).status_code == 200
        assert b.post("/api/v1/task", json=body).status_code == 402
        info = b.get("/account/info").json()["data"]
    assert (info["id"], info["name"], info["credits"]) == ("studio", "studio", 1_000_000)


def test_each_api_key_is_its_own_account(emulator: EmulatorServer) -> None:
    """Spending with one key leaves another key's balance whole; past it is 402, never < 0."""
    emulator.configure(api_keys=["key-a", "key-b"], balance_usd="0.60", time_scale=1e-6)
    body = {
        "model": "kling",
        "task_type": "video_generation",
        "input": {"prompt": "a fox", "version": "3.0", "duration": 5},
    }  # $0.50 reserved per task
    with (
        loopback_client(emulator.url, headers={"x-api-key": "key-a"}) as a,
        loopback_client(emulator.url, headers={"x-api-key": "key-b"}) as b,
    ):
        assert a.post("/api/v1/task", json=body).status_code == 200
        refused = a.post("/api/v1/task", json=body)
        assert (refused.status_code, refused.json()["message"]) == (
            402, "failed to freeze credit: credit not enough",
        )  # fmt: skip
        pack_a = a.get("/account/info").json()["data"]["credit_pack_info"]
        assert (pack_a["available_credits"], pack_a["frozen_credits"]) == (1_000_000, 5_000_000)
        assert b.get("/account/info").json()["data"]["credits"] == 6_000_000
        assert b.post("/api/v1/task", json=body).status_code == 200
    assert emulator.stats()["creates"] == 2


def test_account_info_without_a_balance_has_null_credits(client: httpx.Client) -> None:
    """With no balance configured (never runs out), credits and equivalent_in_usd are null."""
    data = client.get("/account/info").json()["data"]
    assert data["credits"] is None
    assert data["equivalent_in_usd"] is None


def test_active_tasks_counts_per_provider(paused: EmulatorServer, client: httpx.Client) -> None:
    """GET /account/active_tasks gives staged, pending and processing counts under "kling"."""
    paused.configure(concurrency_limit=2)
    for _ in range(3):
        _create(client)
    data = client.get("/account/active_tasks").json()["data"]
    assert data == {
        "kling": {"staged_count": 1, "pending_count": 2, "processing_count": 0, "active_tasks": 3}
    }
    paused.advance(2)
    counts = ActiveTaskCounts.model_validate(
        client.get("/account/active_tasks").json()["data"]["kling"]
    )
    assert (counts.staged_count, counts.pending_count, counts.processing_count) == (1, 0, 2)
    assert counts.active_tasks == 3


def test_unknown_paths_and_methods_answer_in_the_envelope(client: httpx.Client) -> None:
    """Routes PiAPI lacks are 404, wrong methods 405, both in the {code, data, message} shape."""
    missing = client.get("/api/v1/nothing")
    assert missing.status_code == 404
    assert missing.json() == {"code": 404, "data": None, "message": "Not Found"}
    wrong = client.put("/api/v1/task")
    assert wrong.status_code == 405
    assert wrong.json()["code"] == 405


def test_status_values_are_lowercase(paused: EmulatorServer, client: httpx.Client) -> None:
    """Statuses are lowercase (pending, processing, completed), as every PiAPI example."""
    task_id = _create(client)["task_id"]
    seen = [client.get(f"/api/v1/task/{task_id}").json()["data"]["status"]]
    for step in (2, 60):
        paused.advance(step)
        seen.append(client.get(f"/api/v1/task/{task_id}").json()["data"]["status"])
    assert seen == [TaskStatus.PENDING, TaskStatus.PROCESSING, TaskStatus.COMPLETED]
    assert all(status == status.lower() for status in seen)
