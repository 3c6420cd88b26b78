"""Bad request bodies at the REST API, the trigger hooks and the webhook receiver: a 4xx
with a message, never a 500 or a traceback, no run, no create, and no secret in any
response, log line or stored row (issue #15, adversarial suite)."""

from __future__ import annotations

import json
import logging

import pytest

from klingflow.emulator import EmulatorServer

from .conftest import (
    WEBHOOK_SECRET,
    Cases,
    Service,
    assert_no_secret,
    dump_sqlite,
    secrets_of,
)

CLIP = """\
name: clip
inputs:
  prompt: {type: string, required: true}
  seconds: {type: integer, default: 5}
nodes:
  - id: clip
    type: kling.video
    with: {prompt: "{{ inputs.prompt }}", duration: "{{ inputs.seconds }}", download: false}
"""


def start_bodies(api_key: str) -> dict[str, bytes]:
    """Bodies no start may accept, as raw bytes (some are not even JSON)."""
    objects: dict[str, object] = {
        "empty-prompt": {"prompt": ""},
        "blank-prompt": {"prompt": "   "},
        "zero-width": {"prompt": "\u200b\u200b"},
        "nul": {"prompt": "a\x00b"},
        "ansi": {"prompt": "\x1b[31mred"},
        "bell": {"prompt": "a\x07"},
        "too-long": {"prompt": "x" * 3000},
        "number-prompt": {"prompt": 5},
        "list-prompt": {"prompt": ["a"]},
        "object-prompt": {"prompt": {"a": 1}},
        "missing": {},
        "secret-in-prompt": {"prompt": f"{api_key}\x00"},
        "bad-seconds": {"prompt": "a fox", "seconds": 99},
        "negative-seconds": {"prompt": "a fox", "seconds": -1},
        "text-seconds": {"prompt": "a fox", "seconds": "five"},
        "huge-seconds": {"prompt": "a fox", "seconds": 10**30},
        "bool-seconds": {"prompt": "a fox", "seconds": True},
        "extra-nul": {"prompt": "a fox", "x": "\x00"},
        "list": [1, 2],
        "string": "a fox",
        "number": 5,
        "null": None,
    }
    raw = {name: json.dumps(value).encode() for name, value in objects.items()}
    raw.update(
        {
            "surrogate": b'{"prompt": "\\ud800"}',
            "surrogate-key": b'{"prompt": "a fox", "\\udfff": 1}',
            "deep": b'{"prompt": "a fox", "x": ' + b"[" * 3000 + b"]" * 3000 + b"}",
            "big-int": b'{"prompt": "a fox", "x": ' + b"9" * 5000 + b"}",
            "truncated": b'{"prompt": "a fo',
            "binary": bytes(range(256)),
            "empty": b"",
        }
    )
    return raw


BAD_WORKFLOWS = {
    "not-yaml": b"name: [unclosed\n",
    "deep": b'{"name": "d", "nodes": ' + b"[" * 3000 + b"]" * 3000 + b"}",
    "nul": b"name: n\x00\nnodes: []\n",
    "binary": bytes(range(256)),
    "big-int": b"name: b\nnodes:\n  - {id: a, type: set, with: {values: {x: "
    + b"9" * 5000
    + b"}}}\n",
    "recursive-alias": b"name: r\nnodes: &n\n  - *n\n",
    "include": b"name: inc\nnodes:\n  - {id: a, type: set, with: {values: "
    b"{x: \"{% include 'x' %}\"}}}\n",
    "empty-prompt": b"name: e\nnodes:\n  - {id: a, type: kling.video, with: {prompt: ''}}\n",
    "bad-node": b"name: b\nnodes:\n  - {id: a, type: nope}\n",
    "list": b"- 1\n",
}
WEBHOOK_BODIES = {
    "not-json": b"{",
    "deep": b'{"data": ' + b"[" * 3000 + b"]" * 3000 + b"}",
    "big-int": b'{"timestamp": ' + b"9" * 5000 + b', "data": {}}',
    "binary": bytes(range(256)),
    "list": b"[]",
    "no-data": b'{"timestamp": 1}',
    "data-not-object": b'{"timestamp": 1, "data": 5}',
    "no-task-id": b'{"timestamp": 1, "data": {"status": "completed"}}',
    "surrogate": b'{"timestamp": 1, "data": {"task_id": "\\ud800"}}',
}


def test_every_http_entry_point_refuses_bad_bodies_and_leaks_nothing(
    service: Service,
    emulator: EmulatorServer,
    api_key: str,
    cases: Cases,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Start, hook, estimate, publish and webhook bodies: 4xx with a message, nothing made."""
    caplog.set_level(logging.DEBUG)
    secrets = secrets_of(api_key)
    published = service.http.post("/api/workflows", content=CLIP)
    assert published.status_code == 201, published.text
    failures: list[str] = []
    count = 0
    json_type = {"content-type": "application/json"}

    def judge(label: str, response_status: int, text: str, *, expected: set[int]) -> None:
        problems = []
        if response_status not in expected:
            problems.append(f"status {response_status}, expected {sorted(expected)}")
        if "Traceback" in text:
            problems.append("a traceback")
        try:
            body = json.loads(text)
            if not (body.get("message") or body.get("detail")):
                problems.append("no message")
        except ValueError:
            problems.append("not JSON")
        try:
            assert_no_secret(text, secrets)
        except AssertionError:
            problems.append("a secret in the response")
        if problems:
            failures.append(f"{label}: {'; '.join(problems)} | {text[:200]!r}")

    for name, body in start_bodies(api_key).items():
        for path in ("/api/workflows/clip/runs", "/hooks/clip", "/api/workflows/clip/estimate"):
            response = service.http.post(path, content=body, headers=json_type)
            count += 1
            judge(f"{path} {name}", response.status_code, response.text, expected={400, 422})
    for name, body in BAD_WORKFLOWS.items():
        response = service.http.post("/api/workflows", content=body)
        count += 1
        judge(f"publish {name}", response.status_code, response.text, expected={400, 422})
    for name, body in WEBHOOK_BODIES.items():
        headers = {**json_type, "x-webhook-secret": WEBHOOK_SECRET}
        response = service.http.post("/hooks/piapi", content=body, headers=headers)
        count += 1
        judge(f"webhook {name}", response.status_code, response.text, expected={400, 422})
    for name, headers in {
        "no-secret": json_type,
        "wrong-secret": {**json_type, "x-webhook-secret": "guess"},
        "secret-prefix": {**json_type, "x-webhook-secret": WEBHOOK_SECRET[:-1]},
    }.items():
        body = b'{"timestamp": 1, "data": {"task_id": "t-1", "status": "completed"}}'
        response = service.http.post("/hooks/piapi", content=body, headers=headers)
        count += 1
        judge(f"webhook {name}", response.status_code, response.text, expected={401, 403})
    cases.add("http bodies", count)
    assert failures == [], "\n".join(failures)
    runs = service.http.get("/api/runs")
    assert runs.status_code == 200
    assert runs.json() == {"runs": []}
    assert service.http.get("/").status_code in (200, 303)  # the UI answers (login first)
    assert emulator.stats()["creates"] == 0
    assert_no_secret(caplog.text, secrets)
    assert_no_secret(dump_sqlite(service.database), secrets)
