"""The control API under /_emulator/: stats, config, reset, time, faults and the task list."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import httpx
import pytest
import yaml

from klingflow.emulator import EmulatorConfig, EmulatorServer, FaultRule, key_id

from ..loopback import loopback_client

V3: dict[str, Any] = {
    "model": "kling",
    "task_type": "video_generation",
    "input": {"prompt": "an owl", "version": "3.0", "duration": 3},
}
COUNTERS = {
    "creates", "create_requests", "gets", "cancels", "account_requests", "chat_requests",
    "rate_limited", "webhook_deliveries", "webhook_failures",
}  # fmt: skip


def _create(client: httpx.Client) -> str:
    response = client.post("/api/v1/task", json=V3)
    assert response.status_code == 200, response.text
    task_id: str = response.json()["data"]["task_id"]
    return task_id


def _control(emulator: EmulatorServer) -> httpx.Client:
    return loopback_client(emulator.url + "/_emulator")


def test_stats_top_level_has_every_total(emulator: EmulatorServer) -> None:
    """GET /_emulator/stats has the totals, peak_concurrency, and the per-key and per-task maps."""
    stats = emulator.stats()
    assert set(stats) == COUNTERS | {"peak_concurrency", "keys", "tasks"}
    assert all(stats[name] == 0 for name in COUNTERS | {"peak_concurrency"})
    assert (stats["keys"], stats["tasks"]) == ({}, {})


def test_stats_count_per_key_and_per_task(
    paused: EmulatorServer, client: httpx.Client, api_key: str
) -> None:
    """Requests are counted in the totals, under the key that made them and under the task."""
    paused.configure(api_keys=[api_key, "second-key"])
    first, second = _create(client), _create(client)
    for _ in range(3):
        client.get(f"/api/v1/task/{first}")
    client.delete(f"/api/v1/task/{second}")
    client.get("/account/info")
    with loopback_client(paused.url, headers={"x-api-key": "second-key"}) as other:
        theirs = _create(other)
        other.get(f"/api/v1/task/{theirs}")
    stats = paused.stats()
    totals = {name: stats[name] for name in ("creates", "gets", "cancels", "account_requests")}
    assert totals == {"creates": 3, "gets": 4, "cancels": 1, "account_requests": 1}
    mine = stats["keys"][key_id(api_key)]
    assert (mine["creates"], mine["gets"], mine["cancels"]) == (2, 3, 1)
    assert mine["peak_concurrency"] == 2
    assert stats["keys"][key_id("second-key")]["creates"] == 1
    assert stats["tasks"][first]["gets"] == 3
    assert stats["tasks"][first]["creates"] == 1
    assert stats["tasks"][second]["cancels"] == 1
    assert stats["tasks"][theirs]["gets"] == 1
    assert api_key not in json.dumps(stats)  # keys appear only as key ids
    with _control(paused) as control:
        totals_only = control.get("/stats", params={"tasks": "false"}).json()
    assert totals_only == {name: value for name, value in stats.items() if name != "tasks"}


def test_rate_limited_counts_every_429_sent(paused: EmulatorServer, client: httpx.Client) -> None:
    """A limit, an injected 429 and a concurrency refusal all count as rate_limited."""
    paused.configure(concurrency_limit=1, over_concurrency="reject")
    _create(client)
    assert client.post("/api/v1/task", json=V3).status_code == 429
    paused.add_fault(FaultRule(action="rate_limit"))
    assert client.get("/account/info").status_code == 429
    paused.configure(rate_limit={"requests": 1})
    client.get("/account/info")
    assert client.get("/account/info").status_code == 429
    assert paused.stats()["rate_limited"] == 3


def test_peak_concurrency_is_the_most_tasks_running_at_once(
    paused: EmulatorServer, client: httpx.Client
) -> None:
    """peak_concurrency keeps the highest number of pending+processing tasks ever seen."""
    for _ in range(3):
        _create(client)
    paused.advance(100)
    _create(client)
    assert paused.stats()["peak_concurrency"] == 3


def test_config_get_masks_the_api_keys(emulator: EmulatorServer, api_key: str) -> None:
    """GET /_emulator/config shows every setting but replaces the keys with a mask."""
    with _control(emulator) as control:
        config = control.get("/config").json()
    assert config["api_keys"] == ["***"]
    assert (config["time_scale"], config["video_max_height"], config["video_fps"]) == (
        1000.0,
        72,
        4,
    )
    assert set(config) == set(EmulatorConfig.model_fields)
    assert api_key not in json.dumps(config)


def test_config_patch_changes_settings_at_run_time(
    paused: EmulatorServer, client: httpx.Client
) -> None:
    """PATCH /_emulator/config changes the named settings and answers the new config."""
    with _control(paused) as control:
        answer = control.patch("/config", json={"pending_seconds": 5})
    assert answer.status_code == 200
    assert answer.json()["pending_seconds"] == 5
    task_id = _create(client)
    paused.advance(4)
    assert client.get(f"/api/v1/task/{task_id}").json()["data"]["status"] == "pending"
    paused.advance(1.5)
    assert client.get(f"/api/v1/task/{task_id}").json()["data"]["status"] == "processing"


@pytest.mark.parametrize(
    "patch",
    [{"time_scale": 0}, {"no_such_setting": 1}, {"faults": [{"action": "explode"}]}, [1, 2]],
)
def test_config_patch_rejects_bad_settings(emulator: EmulatorServer, patch: Any) -> None:
    """An invalid patch gets 400 "invalid emulator config" and changes nothing."""
    with _control(emulator) as control:
        before = control.get("/config").json()
        response = control.patch("/config", json=patch)
        assert response.status_code == 400
        assert response.json()["message"].startswith("invalid emulator config")
        assert control.get("/config").json() == before


def test_config_round_trip_keeps_the_keys(emulator: EmulatorServer, client: httpx.Client) -> None:
    """PATCHing back what GET returned (masked keys included) leaves the keys working."""
    with _control(emulator) as control:
        config = control.get("/config").json()
        assert control.patch("/config", json=config).status_code == 200
    assert client.get("/account/info").status_code == 200


def test_reset_forgets_everything_and_restores_the_config(
    emulator: EmulatorServer, client: httpx.Client
) -> None:
    """POST /_emulator/reset drops tasks, stats and faults and restores the starting config."""
    _create(client)
    emulator.configure(pending_seconds=9)
    emulator.add_fault(FaultRule(action="error", times=None, path="/nowhere"))
    emulator.reset()
    assert emulator.tasks() == []
    assert emulator.stats()["creates"] == 0
    with _control(emulator) as control:
        assert control.get("/faults").json() == []
        assert control.get("/config").json()["pending_seconds"] == 2


def test_reset_can_keep_the_config(emulator: EmulatorServer) -> None:
    """With keep_config the settings stay (faults still go)."""
    emulator.configure(pending_seconds=9)
    emulator.add_fault(FaultRule(action="error", path="/nowhere"))
    emulator.reset(keep_config=True)
    with _control(emulator) as control:
        assert control.get("/config").json()["pending_seconds"] == 9
        assert control.get("/faults").json() == []


def test_time_shows_and_advances_the_emulated_clock(emulator: EmulatorServer) -> None:
    """GET /_emulator/time gives now and the scale; POST advance_seconds jumps forward."""
    with _control(emulator) as control:
        before = control.get("/time").json()
        assert set(before) == {"now", "epoch_seconds", "time_scale"}
        assert before["time_scale"] == 1000.0
        after = control.post("/time", json={"advance_seconds": 3600}).json()
    assert after["epoch_seconds"] >= before["epoch_seconds"] + 3600
    assert after["now"].endswith("Z")


def test_time_scale_can_be_set_through_the_time_endpoint(emulator: EmulatorServer) -> None:
    """POST /_emulator/time with time_scale changes the clock speed (and the config)."""
    with _control(emulator) as control:
        assert control.post("/time", json={"time_scale": 2.5}).json()["time_scale"] == 2.5
        assert control.get("/config").json()["time_scale"] == 2.5


@pytest.mark.parametrize(
    "body",
    [{"advance_seconds": -1}, {"advance_seconds": "soon"}, {"time_scale": 0}, [5]],
)
def test_time_rejects_going_back_and_bad_values(emulator: EmulatorServer, body: Any) -> None:
    """The clock never goes back; bad values get 400 and leave the clock alone."""
    with _control(emulator) as control:
        response = control.post("/time", json=body)
        assert response.status_code == 400
        assert response.json()["data"] is None
        assert control.get("/time").json()["time_scale"] == 1000.0


def test_faults_can_be_added_listed_and_cleared(emulator: EmulatorServer) -> None:
    """POST /_emulator/faults takes one rule or a list; GET lists them; DELETE clears them."""
    with _control(emulator) as control:
        rules = [{"action": "error", "status": 502}, {"action": "slow", "delay_seconds": 0.1}]
        assert len(control.post("/faults", json=rules).json()) == 2
        assert len(control.post("/faults", json={"action": "malformed"}).json()) == 3
        listed = control.get("/faults").json()
        assert [rule["action"] for rule in listed] == ["error", "slow", "malformed"]
        assert listed[0]["remaining"] == 1
        assert control.delete("/faults").json() == {"cleared": True}
        assert control.get("/faults").json() == []


def test_a_bad_fault_list_adds_nothing(emulator: EmulatorServer) -> None:
    """If one rule of a list is invalid the whole list is refused with 400."""
    with _control(emulator) as control:
        response = control.post("/faults", json=[{"action": "error"}, {"action": "explode"}])
        assert response.status_code == 400
        assert response.json()["message"].startswith("invalid fault rule")
        assert control.get("/faults").json() == []


def test_task_list_shows_every_key(
    emulator: EmulatorServer, client: httpx.Client, api_key: str
) -> None:
    """GET /_emulator/tasks lists the tasks of all keys as PiAPI shows them."""
    emulator.configure(api_keys=[api_key, "second-key"])
    mine = _create(client)
    with loopback_client(emulator.url, headers={"x-api-key": "second-key"}) as other:
        theirs = _create(other)
    assert {task["task_id"] for task in emulator.tasks()} == {mine, theirs}


CONFIG_YAML = """
api_keys: [key-one, key-two]
time_scale: 100
seed: 7
concurrency_limit: 2
over_concurrency: reject
rate_limit: {requests: 30, window_seconds: 60}
balance_usd: 12.5
retention_seconds: 3600
video_max_height: null
webhook_on_every_status: true
webhook_faults: {duplicate_probability: 0.1, reorder: true}
generation_error: {code: 10002, message: credit not enough, raw_message: ""}
faults:
  - {action: error, status: 503, path: /api/v1/task, times: null, probability: 0.05}
  - {action: drop, method: POST, phase: after}
prices:
  lip_sync_per_5s: 0.2
"""


def test_config_loads_from_plain_yaml_and_json() -> None:
    """EmulatorConfig validates from a YAML or JSON file's plain data, as the CLI loads it."""
    data = yaml.safe_load(CONFIG_YAML)
    from_yaml = EmulatorConfig.model_validate(data)
    from_json = EmulatorConfig.model_validate_json(json.dumps(data))
    assert from_yaml == from_json
    assert from_yaml.balance_usd == Decimal("12.5")
    assert from_yaml.rate_limit is not None
    assert from_yaml.rate_limit.requests == 30
    assert [rule.action for rule in from_yaml.faults] == ["error", "drop"]
    assert from_yaml.prices.lip_sync_per_5s == Decimal("0.2")
    assert EmulatorConfig.model_validate(json.loads(from_yaml.model_dump_json())) == from_yaml
    assert EmulatorConfig.model_validate({}) == EmulatorConfig()


def test_config_files_reject_unknown_settings() -> None:
    """A misspelt setting in a config file is an error, not silently ignored."""
    with pytest.raises(ValueError, match="time_scael"):
        EmulatorConfig.model_validate({"time_scael": 10})
