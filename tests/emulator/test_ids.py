"""Task ids are unique like PiAPI's UUIDs: across resets, restarts and emulators, unless seeded."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from klingflow.emulator import EmulatorConfig, EmulatorServer

from ..loopback import loopback_client

BODY: dict[str, Any] = {
    "model": "kling",
    "task_type": "video_generation",
    "input": {"prompt": "a fox", "version": "3.0", "duration": 5},
}


def _ids(config: EmulatorConfig, count: int = 2) -> list[str]:
    """Start an emulator, create `count` tasks, stop it: the ids it handed out."""
    with (
        EmulatorServer(config) as server,
        loopback_client(server.url, headers={"x-api-key": "k"}) as http,
    ):
        return [
            http.post("/api/v1/task", json=BODY).json()["data"]["task_id"] for _ in range(count)
        ]


def test_a_restarted_emulator_never_repeats_a_task_id() -> None:
    """Two runs of the default config (a restart, or two emulators) share no task id."""
    config = EmulatorConfig(time_scale=1e-6)
    first, second = _ids(config), _ids(config)
    assert not set(first) & set(second)
    assert all(uuid.UUID(task_id).version == 4 for task_id in first + second)


def test_a_reset_never_repeats_a_task_id(emulator: EmulatorServer, client: httpx.Client) -> None:
    """Without a seed, the ids after a reset are new ones."""
    before = client.post("/api/v1/task", json=BODY).json()["data"]["task_id"]
    emulator.reset()
    assert client.post("/api/v1/task", json=BODY).json()["data"]["task_id"] != before


def test_a_seed_replays_the_same_ids() -> None:
    """With `seed`, two emulators hand out the same ids in creation order (determinism)."""
    config = EmulatorConfig(time_scale=1e-6, seed=42)
    assert _ids(config) == _ids(config)
