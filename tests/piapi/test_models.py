"""The task object, normalised at the edge: statuses, timestamps, outputs, usage."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from klingflow.piapi.models import TERMINAL_STATUSES, Task, TaskStatus

DOC_TASK: dict[str, Any] = {
    "task_id": "40680c72-279e-42c2-a4c0-e96e71865f04",
    "model": "kling",
    "task_type": "video_generation",
    "status": "Completed",
    "config": {
        "service_mode": "public",
        "webhook_config": {"endpoint": "https://x", "secret": "s3cr3t"},
    },
    "input": {"prompt": "p"},
    "output": {"video": "https://storage.theapi.app/videos/1.mp4"},
    "meta": {
        "created_at": "2026-02-06T15:35:38.35263085Z",
        "started_at": "0001-01-01T00:00:00Z",
        "ended_at": "0001-01-01T00:00:00Z",
        "usage": {"type": "point", "frozen": 4500000, "consume": 4500000},
        "is_using_private_pool": False,
    },
    "detail": None,
    "logs": None,
    "error": {"code": 0, "raw_message": "", "message": "", "detail": None},
}


def test_documented_task_parses_with_status_lowercased_and_zero_times_unset() -> None:
    """PiAPI's capitalised status folds to the enum; Go zero times become None."""
    task = Task.model_validate(DOC_TASK)
    assert task.status is TaskStatus.COMPLETED
    assert task.is_terminal
    assert task.meta.created_at is not None
    assert task.meta.started_at is None
    assert task.cost_usd == Decimal("0.45")
    assert not task.error.is_error


@pytest.mark.parametrize(
    ("output", "url"),
    [
        ({"video": "https://a/v.mp4"}, "https://a/v.mp4"),
        ({"video": "", "video_url": "https://a/u.mp4"}, "https://a/u.mp4"),
        (
            {
                "works": [
                    {
                        "video": {
                            "resource": "https://a/r.mp4",
                            "resource_without_watermark": "https://a/w.mp4",
                        }
                    }
                ]
            },
            "https://a/w.mp4",
        ),
        (
            {
                "works": [
                    {"video": {"resource": "https://a/r.mp4", "resource_without_watermark": ""}}
                ]
            },
            "https://a/r.mp4",
        ),
        ({"type": "", "status": 0, "works": None}, None),
        (None, None),
    ],
)
def test_video_url_is_found_in_every_output_shape(
    output: dict[str, Any] | None, url: str | None
) -> None:
    """One accessor reads `output.video`, `video_url` and the classic `works` shape."""
    assert Task.model_validate({**DOC_TASK, "output": output}).video_url == url


def test_cancelled_spellings_are_terminal() -> None:
    """Both spellings of cancelled end a wait, like completed and failed."""
    assert Task.model_validate({**DOC_TASK, "status": "canceled"}).status is TaskStatus.CANCELLED
    assert {s.value for s in TERMINAL_STATUSES} == {"completed", "failed", "cancelled"}


def test_public_dict_masks_the_webhook_secret() -> None:
    """The echoed webhook secret never reaches printed or logged task data."""
    data = Task.model_validate(DOC_TASK).public_dict()
    assert data["config"]["webhook_config"]["secret"] == "***"
    assert "s3cr3t" not in repr(data)


def test_error_summary_reads_message_raw_message_and_code() -> None:
    """A failed task explains itself in one line."""
    task = Task.model_validate(
        {
            **DOC_TASK,
            "status": "failed",
            "error": {"code": 10000, "message": "m", "raw_message": "r"},
        }
    )
    assert task.error.summary() == "m | r | code 10000"
