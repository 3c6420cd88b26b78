"""Text no database can store is refused at the door, so listings never break afterwards
(issue #15, point 9)."""

from __future__ import annotations

import pytest

from klingflow.emulator import EmulatorServer

from .conftest import Service

NOTED = """\
name: noted
inputs:
  prompt: {type: string, required: true}
  note: {type: string}
nodes:
  - id: clip
    type: kling.video
    with: {prompt: "{{ inputs.prompt }}", download: false}
"""

BODIES = {
    "surrogate-in-prompt": b'{"prompt": "a fox \\ud800"}',
    "surrogate-in-note": b'{"prompt": "a fox", "note": "\\udfff"}',
    "surrogate-in-extra": b'{"prompt": "a fox", "extra": {"deep": ["\\ud83d"]}}',
    "surrogate-key": b'{"prompt": "a fox", "\\ud800": 1}',
    "nul-in-note": b'{"prompt": "a fox", "note": "a\\u0000b"}',
    "nul-in-prompt": b'{"prompt": "a\\u0000fox"}',
    "huge-int": b'{"prompt": "a fox", "extra": ' + b"9" * 40 + b"}",
    "deep": b'{"prompt": "a fox", "extra": ' + b"[" * 60 + b"]" * 60 + b"}",
}


@pytest.mark.parametrize("path", ["/api/workflows/noted/runs", "/hooks/noted"])
@pytest.mark.parametrize("body", list(BODIES.values()), ids=list(BODIES))
def test_unstorable_text_is_refused_and_listings_keep_working(
    service: Service, emulator: EmulatorServer, path: str, body: bytes
) -> None:
    """422 naming where the bad text sits; runs list, the run pages and the UI still answer."""
    service.publish(NOTED)
    good = service.start("noted", {"prompt": "a fox", "note": "fine"})
    response = service.http.post(path, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.json()["details"]["problems"], response.text
    listing = service.http.get("/api/runs")
    assert listing.status_code == 200
    assert [run["run_id"] for run in listing.json()["runs"]] == [good]
    assert service.http.get(f"/api/runs/{good}").status_code == 200
    assert service.http.get("/").status_code == 200
    assert service.http.get(f"/runs/{good}").status_code == 200
    assert emulator.stats()["creates"] <= 1  # only the good run's
