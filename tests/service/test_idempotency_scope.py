"""Idempotency keys are per workflow, server prefixes are reserved, and a key reused with a
different body is a 409 (issue #15, point 10)."""

from __future__ import annotations

import pytest

from klingflow.emulator import EmulatorServer

from .conftest import CLIP, Service

OTHER = CLIP.replace("name: clip", "name: other")


def test_the_same_key_in_two_workflows_starts_two_runs(
    service: Service, emulator: EmulatorServer
) -> None:
    """A key used with workflow A never answers a start of workflow B with A's run."""
    service.publish()
    service.publish(OTHER)
    headers = {"Idempotency-Key": "shared-key"}
    first = service.http.post("/api/workflows/clip/runs", json={"prompt": "a"}, headers=headers)
    second = service.http.post("/api/workflows/other/runs", json={"prompt": "a"}, headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.json()["run_id"] != second.json()["run_id"]
    assert second.json()["workflow_name"] == "other"
    assert first.json()["idempotency_key"] == "shared-key"


@pytest.mark.parametrize("path", ["/api/workflows/clip/runs", "/hooks/clip"])
def test_a_key_reused_with_another_body_is_a_409(service: Service, path: str) -> None:
    """Same key, different body: 409 naming the key's run; the same body still gets it back."""
    service.publish()
    headers = {"Idempotency-Key": "k-1"}
    first = service.http.post(path, json={"prompt": "a fox"}, headers=headers)
    again = service.http.post(path, json={"prompt": "a fox"}, headers=headers)
    other = service.http.post(path, json={"prompt": "a whale"}, headers=headers)
    assert first.status_code == 201
    assert again.status_code == 200
    assert again.json()["run_id"] == first.json()["run_id"]
    assert other.status_code == 409, other.text
    assert first.json()["run_id"] in other.json()["message"]
    assert len(service.http.get("/api/runs").json()["runs"]) == 1


@pytest.mark.parametrize("key", ["schedule:clip:x:2026", "form:abc"])
@pytest.mark.parametrize("path", ["/api/workflows/clip/runs", "/hooks/clip"])
def test_server_key_prefixes_are_reserved(service: Service, path: str, key: str) -> None:
    """A client's key may not start with schedule: or form: (422, nothing started)."""
    service.publish()
    response = service.http.post(path, json={"prompt": "a"}, headers={"Idempotency-Key": key})
    assert response.status_code == 422, response.text
    assert "Idempotency-Key" in response.text
    assert service.http.get("/api/runs").json() == {"runs": []}
