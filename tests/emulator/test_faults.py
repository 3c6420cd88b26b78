"""Injected faults and limits, one kind at a time, and their reproducibility from a seed."""

from __future__ import annotations

import time
from typing import Any, Literal

import httpx
import pytest

from klingflow.emulator import EmulatorConfig, EmulatorServer, FaultRule

from ..loopback import loopback_client

V3: dict[str, Any] = {
    "model": "kling",
    "task_type": "video_generation",
    "input": {"prompt": "a paper boat", "version": "3.0", "duration": 3},
}
EFFECTS: dict[str, Any] = {
    "model": "kling",
    "task_type": "effects",
    "input": {"image_url": "https://example.com/cat.png", "effect": "squish"},
}


def _create(client: httpx.Client, body: dict[str, Any] = V3) -> str:
    response = client.post("/api/v1/task", json=body)
    assert response.status_code == 200, response.text
    task_id: str = response.json()["data"]["task_id"]
    return task_id


def test_error_fault_answers_its_status_in_the_envelope(
    emulator: EmulatorServer, client: httpx.Client
) -> None:
    """An error fault answers its 5xx with the envelope, creates nothing, then wears off."""
    emulator.add_fault(FaultRule(action="error", status=503, method="POST", path="/api/v1/task"))
    response = client.post("/api/v1/task", json=V3)
    assert response.status_code == 503
    assert response.json() == {
        "code": 503,
        "data": None,
        "message": "service unavailable (injected)",
    }
    assert emulator.stats()["creates"] == 0
    _create(client)
    assert emulator.stats()["creates"] == 1


def test_fault_times_counts_the_requests_it_hits(
    emulator: EmulatorServer, client: httpx.Client
) -> None:
    """times=2 hits the next two matching requests only; the control API shows what is left."""
    emulator.add_fault(FaultRule(action="error", times=2, path="/account/info"))
    codes = [client.get("/account/info").status_code for _ in range(3)]
    assert codes == [500, 500, 200]
    [rule] = httpx.get(emulator.url + "/_emulator/faults").json()
    assert (rule["action"], rule["remaining"]) == ("error", 0)


def test_fault_matches_only_its_method_and_path_prefix(
    emulator: EmulatorServer, client: httpx.Client
) -> None:
    """A rule for GET /api/v1/task leaves POSTs and other paths alone."""
    emulator.add_fault(FaultRule(action="error", method="GET", path="/api/v1/task/", times=None))
    task_id = _create(client)
    assert client.get("/account/info").status_code == 200
    assert client.get(f"/api/v1/task/{task_id}").status_code == 500


def test_slow_fault_delays_the_answer(emulator: EmulatorServer, client: httpx.Client) -> None:
    """A slow fault waits delay_seconds of real time, then answers normally."""
    emulator.add_fault(FaultRule(action="slow", delay_seconds=0.3, path="/account/info"))
    started = time.monotonic()
    response = client.get("/account/info")
    assert time.monotonic() - started >= 0.3
    assert response.status_code == 200


def test_drop_before_the_handler_creates_nothing(
    emulator: EmulatorServer, client: httpx.Client
) -> None:
    """A drop in phase "before" cuts the connection before the task exists."""
    emulator.add_fault(FaultRule(action="drop", method="POST", path="/api/v1/task"))
    with pytest.raises(httpx.RemoteProtocolError):
        client.post("/api/v1/task", json=V3)
    stats = emulator.stats()
    assert (stats["create_requests"], stats["creates"]) == (1, 0)
    assert emulator.tasks() == []


def test_accepted_then_dropped_leaves_exactly_one_task(
    emulator: EmulatorServer, client: httpx.Client
) -> None:
    """A drop in phase "after" creates the task, then cuts the answer: one task, one charge."""
    emulator.configure(balance_usd="10")
    emulator.add_fault(FaultRule(action="drop", method="POST", path="/api/v1/task", phase="after"))
    with pytest.raises(httpx.RemoteProtocolError):
        client.post("/api/v1/task", json=V3)
    stats = emulator.stats()
    assert (stats["create_requests"], stats["creates"]) == (1, 1)
    [task] = emulator.tasks()
    assert task["meta"]["usage"]["frozen"] == 3_000_000
    assert client.get("/account/info").json()["data"]["equivalent_in_usd"] == 9.7
    # The task is real: the client can find and follow it.
    emulator.advance(100)
    assert client.get(f"/api/v1/task/{task['task_id']}").json()["data"]["status"] == "completed"


@pytest.mark.parametrize("status", [500, 502])
def test_malformed_before_a_create_is_a_5xx_with_broken_json_and_no_task(
    emulator: EmulatorServer, client: httpx.Client, status: int
) -> None:
    """Before the handler, a malformed fault answers its (error) status, never 200: no task."""
    emulator.add_fault(FaultRule(action="malformed", method="POST", status=status))
    response = client.post("/api/v1/task", json=V3)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    with pytest.raises(ValueError, match=r"Unterminated|Expecting"):
        response.json()
    assert emulator.stats()["creates"] == 0


def test_malformed_after_the_handler_creates_the_task(
    emulator: EmulatorServer, client: httpx.Client
) -> None:
    """In phase "after" the real answer is cut short: the task exists, the body is broken."""
    emulator.add_fault(FaultRule(action="malformed", method="POST", phase="after", fraction=0.3))
    response = client.post("/api/v1/task", json=V3)
    with pytest.raises(ValueError, match=r"Unterminated|Expecting"):
        response.json()
    assert response.content.startswith(b'{"code":200,"data":{"task_id":')
    assert emulator.stats()["creates"] == 1


def test_malformed_keeps_the_status_of_the_real_answer(
    emulator: EmulatorServer, client: httpx.Client
) -> None:
    """A malformed 404 stays a 404 (only its body is broken)."""
    emulator.add_fault(FaultRule(action="malformed", phase="after"))
    response = client.get("/api/v1/task/0b9f8d2e-0000-4000-8000-000000000000")
    assert response.status_code == 404
    with pytest.raises(ValueError, match=r"Unterminated|Expecting"):
        response.json()


@pytest.mark.parametrize(("retry_after", "header"), [(7.0, "7"), (None, None)])
def test_rate_limit_fault_answers_429_with_retry_after(
    emulator: EmulatorServer, client: httpx.Client, retry_after: float | None, header: str | None
) -> None:
    """A rate_limit fault answers 429 in the envelope, with Retry-After when the rule sets it."""
    emulator.add_fault(FaultRule(action="rate_limit", retry_after_seconds=retry_after))
    response = client.post("/api/v1/task", json=V3)
    assert response.status_code == 429
    assert response.json()["code"] == 429
    assert response.headers.get("retry-after") == header
    assert emulator.stats()["rate_limited"] == 1
    assert emulator.stats()["creates"] == 0


def test_fail_task_fault_hits_only_its_task_type(
    emulator: EmulatorServer, client: httpx.Client
) -> None:
    """fail_task with task_type fails the next task of that type and leaves others alone."""
    emulator.add_fault(FaultRule(action="fail_task", task_type="effects"))
    video_id = _create(client)
    effects_id = _create(client, EFFECTS)
    emulator.advance(100)
    video = client.get(f"/api/v1/task/{video_id}").json()["data"]
    effects = client.get(f"/api/v1/task/{effects_id}").json()["data"]
    assert video["status"] == "completed"
    assert effects["status"] == "failed"
    assert effects["error"]["message"] == "failed to generate video"


def _read_until_cut(client: httpx.Client, url: str, *, size: int) -> bytes:
    """What a GET delivers before the connection drops (fails if it does not drop)."""
    received = bytearray()
    with client.stream("GET", url) as response:
        assert response.status_code == 200
        assert response.headers["content-length"] == str(size)
        try:
            for chunk in response.iter_raw():
                received += chunk
        except httpx.RemoteProtocolError:
            return bytes(received)
    raise AssertionError("the download was not cut")


@pytest.mark.parametrize("action", ["truncate", "drop"])
def test_cut_download_resumes_with_a_range_request(
    emulator: EmulatorServer, client: httpx.Client, action: Literal["truncate", "drop"]
) -> None:
    """A download cut mid-body can be finished with `Range: bytes=<received>-`."""
    task_id = _create(client)
    emulator.advance(100)
    url = client.get(f"/api/v1/task/{task_id}").json()["data"]["output"]["video"]
    full = client.get(url).content
    emulator.add_fault(FaultRule(action=action, path="/files/", fraction=0.4))
    received = _read_until_cut(client, url, size=len(full))
    assert 0 < len(received) < len(full)
    rest = client.get(url, headers={"range": f"bytes={len(received)}-"})
    assert rest.status_code == 206
    assert received + rest.content == full


def test_requests_per_minute_limit_answers_429_with_retry_after(
    emulator: EmulatorServer, client: httpx.Client, api_key: str
) -> None:
    """Past `requests` calls in the window a key gets 429 + Retry-After; other keys do not."""
    emulator.configure(api_keys=[api_key, "other-key"], rate_limit={"requests": 3})
    codes = [client.get("/account/info").status_code for _ in range(3)]
    limited = client.get("/account/info")
    assert codes == [200, 200, 200]
    assert limited.status_code == 429
    assert limited.json() == {"code": 429, "data": None, "message": "rate limit exceeded"}
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    other = httpx.get(emulator.url + "/account/info", headers={"x-api-key": "other-key"})
    assert other.status_code == 200
    assert emulator.stats()["rate_limited"] == 1


def test_rate_limit_window_is_real_time(emulator: EmulatorServer, client: httpx.Client) -> None:
    """Once window_seconds of real time pass, the key may call again."""
    emulator.configure(rate_limit={"requests": 1, "window_seconds": 0.5})
    assert client.get("/account/info").status_code == 200
    assert client.get("/account/info").status_code == 429
    time.sleep(0.6)
    assert client.get("/account/info").status_code == 200


def test_a_refused_request_does_not_use_up_an_after_fault(
    emulator: EmulatorServer, client: httpx.Client
) -> None:
    """A request refused by the rate limit leaves a phase-"after" fault for the next one."""
    emulator.configure(rate_limit={"requests": 1})
    client.get("/account/info")
    emulator.add_fault(FaultRule(action="error", phase="after", path="/account/"))
    assert client.get("/account/info").status_code == 429
    [rule] = httpx.get(emulator.url + "/_emulator/faults").json()
    assert rule["remaining"] == 1


def test_concurrency_reject_mode_answers_429(paused: EmulatorServer, client: httpx.Client) -> None:
    """With over_concurrency "reject" a task past the limit is refused with 429, not staged."""
    paused.configure(concurrency_limit=1, over_concurrency="reject")
    _create(client)
    response = client.post("/api/v1/task", json=V3)
    assert response.status_code == 429
    assert "concurrent" in response.json()["message"]
    assert response.headers["retry-after"].isdigit()
    stats = paused.stats()
    assert (stats["creates"], stats["rate_limited"]) == (1, 1)
    paused.advance(100)
    _create(client)  # a slot is free again


def _run_sequence(seed: int) -> tuple[list[str], list[int], list[str]]:
    """Task ids, GET status codes and final statuses of a fixed request sequence."""
    config = EmulatorConfig(
        api_keys=["seeded-key"],
        seed=seed,
        time_scale=1e-6,
        fail_probability=0.5,
        faults=[FaultRule(action="error", method="GET", probability=0.5, times=None)],
    )
    with (
        EmulatorServer(config) as server,
        loopback_client(server.url, headers={"x-api-key": "seeded-key"}) as http,
    ):
        ids = [http.post("/api/v1/task", json=V3).json()["data"]["task_id"] for _ in range(6)]
        codes = [http.get(f"/api/v1/task/{ids[n % 6]}").status_code for n in range(16)]
        server.clear_faults()
        server.advance(100)
        finals = [http.get(f"/api/v1/task/{task_id}").json()["data"]["status"] for task_id in ids]
    return ids, codes, finals


def test_same_seed_and_requests_give_the_same_ids_and_faults() -> None:
    """Two emulators with one seed answer one request sequence identically, random faults too."""
    first, again = _run_sequence(seed=42), _run_sequence(seed=42)
    assert first == again
    _ids, codes, finals = first
    assert set(codes) == {200, 500}  # the 50 % rule both hit and missed
    assert set(finals) == {"completed", "failed"}


def test_different_seeds_give_different_ids_and_faults() -> None:
    """Another seed gives other task ids and other fault decisions."""
    ids, codes, finals = _run_sequence(seed=42)
    other_ids, other_codes, other_finals = _run_sequence(seed=7)
    assert set(ids).isdisjoint(other_ids)
    assert (codes, finals) != (other_codes, other_finals)


def test_setting_the_seed_at_run_time_restarts_the_random_streams(
    emulator: EmulatorServer, client: httpx.Client
) -> None:
    """PATCHing `seed` makes the next ids those of a fresh emulator started with that seed."""
    emulator.configure(seed=42)
    assert _create(client) == _run_sequence(seed=42)[0][0]
