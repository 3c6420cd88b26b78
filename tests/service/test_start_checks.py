"""Start requests run the estimate's checks: input that cannot make a valid Kling request is
a 422 before any run is stored or any money is spent (issue #15, point 6)."""

from __future__ import annotations

import pytest

from klingflow.emulator import EmulatorServer

from .conftest import Service

BAD_PAYLOADS = [
    {"prompt": ""},
    {"prompt": "   "},
    {"prompt": "x" * 3000},
]


@pytest.mark.parametrize("payload", BAD_PAYLOADS, ids=["empty", "blank", "too-long"])
@pytest.mark.parametrize("path", ["/api/workflows/clip/runs", "/hooks/clip"])
def test_start_refuses_a_payload_that_cannot_render_a_valid_request(
    service: Service, emulator: EmulatorServer, path: str, payload: dict[str, str]
) -> None:
    """A start whose prompt Kling would refuse answers 422 naming the field; no run, no create."""
    service.publish()
    response = service.http.post(path, json=payload)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["error"] == "InvalidRequestError"
    assert "prompt" in body["message"]
    assert service.http.get("/api/runs").json() == {"runs": []}
    assert emulator.stats()["creates"] == 0


def test_a_good_payload_still_starts(service: Service) -> None:
    """The check lets a valid start through (201)."""
    service.publish()
    assert service.http.post("/hooks/clip", json={"prompt": "a fox"}).status_code == 201


def test_a_schedule_whose_ticks_could_never_start_is_refused_at_publish(
    service: Service, emulator: EmulatorServer
) -> None:
    """A schedule payload that renders an invalid Kling request is a 422 when published,
    not a warning at every tick."""
    text = (
        "name: sched\ninputs:\n  prompt: {type: string, required: true}\n"
        "schedules:\n  - {cron: '0 9 * * *', payload: {prompt: '   '}}\n"
        "nodes:\n  - {id: clip, type: kling.video, with: "
        '{prompt: "{{ inputs.prompt }}", download: false}}\n'
    )
    response = service.http.post("/api/workflows", content=text)
    assert response.status_code == 422, response.text
    [problem] = response.json()["details"]["problems"]
    assert "schedules[0].payload" in problem["field"]
    assert "no tick could start" in problem["message"]
    assert emulator.stats()["creates"] == 0
