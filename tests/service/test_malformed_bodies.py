"""Malformed files and bodies get a 4xx with a message, never a 500 or a traceback, at every
HTTP entry point (issue #15, point 12)."""

from __future__ import annotations

import pytest

from klingflow.emulator import EmulatorServer

from .conftest import WEBHOOK_SECRET, Service

DEEP_JSON = b'{"prompt": "a fox", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}"
BIG_INT = b'{"prompt": "a fox", "x": ' + b"9" * 5000 + b"}"
WORKFLOW_BODIES = {
    "deep-yaml": b"name: d\nnodes:\n  - id: a\n    type: set\n    with:\n      values: "
    + b"[" * 5000
    + b"]" * 5000,
    "deep-json": b'{"name": "d", "nodes": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    "alias-bomb": b'a: &a ["x","x","x","x","x","x","x","x","x"]\n'
    + b"".join(
        f"{n}: &{n} [{', '.join(['*' + p] * 9)}]\n".encode()
        for p, n in zip("abcdef", "bcdefg", strict=True)
    )
    + b"name: bomb\nnodes: []\n",
    "recursive-alias": b"name: r\nnodes: &n\n  - *n\n",
    "nul": b"name: n\x00\nnodes: []\n",
    "big-int-yaml": b"name: b\nnodes:\n  - id: a\n    type: set\n    with:\n      values: {x: "
    + b"9" * 5000
    + b"}\n",
    "big-int-json": b'{"name": "b", "nodes": [{"id": "a", "type": "set", "with": {"values": '
    b'{"x": ' + b"9" * 5000 + b"}}}]}",
    "binary": bytes(range(256)) * 4,
}
START_BODIES = {
    "deep": DEEP_JSON,
    "big-int": BIG_INT,
    "binary": bytes(range(256)),
    "nul": b'{"prompt": "a\\u0000fox"}',
    "not-an-object": b"[1, 2, 3]",
    "truncated": b'{"prompt": "a fo',
}


@pytest.mark.parametrize("body", list(WORKFLOW_BODIES.values()), ids=list(WORKFLOW_BODIES))
def test_publishing_a_malformed_file_is_a_422_with_a_message(service: Service, body: bytes) -> None:
    """POST /api/workflows answers 422 and problems; nothing is published."""
    response = service.http.post("/api/workflows", content=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"] in ("WorkflowDefinitionError", "InvalidRequestError")
    assert response.json()["details"]["problems"]
    assert "Traceback" not in response.text
    assert service.http.get("/api/workflows").json() == {"workflows": []}


@pytest.mark.parametrize(
    "path", ["/api/workflows/clip/runs", "/hooks/clip", "/api/workflows/clip/estimate"]
)
@pytest.mark.parametrize("body", list(START_BODIES.values()), ids=list(START_BODIES))
def test_a_malformed_start_body_is_a_4xx_with_a_message(
    service: Service, emulator: EmulatorServer, path: str, body: bytes
) -> None:
    """Start, hook and estimate bodies that are not a storable JSON object: 4xx, no run."""
    service.publish()
    response = service.http.post(path, content=body, headers={"content-type": "application/json"})
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["message"]
    assert "Traceback" not in response.text
    assert service.http.get("/api/runs").json() == {"runs": []}
    assert emulator.stats()["creates"] == 0


@pytest.mark.parametrize(
    "body",
    [DEEP_JSON, BIG_INT, bytes(range(256)), b"{"],
    ids=["deep", "big-int", "binary", "truncated"],
)
def test_a_malformed_webhook_body_is_a_4xx(service: Service, body: bytes) -> None:
    """The webhook receiver refuses a malformed body (right secret) with a 4xx, not a 500."""
    response = service.http.post(
        "/hooks/piapi",
        content=body,
        headers={"content-type": "application/json", "x-webhook-secret": WEBHOOK_SECRET},
    )
    assert 400 <= response.status_code < 500, response.text
    assert "Traceback" not in response.text
