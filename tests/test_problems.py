"""`klingflow.problems`: one wording for pydantic's errors, wherever they are reported."""

from __future__ import annotations

import pytest

from klingflow.errors import InvalidRequestError
from klingflow.piapi import KlingVideoRequest, LipSyncRequest, parse_task_request
from klingflow.problems import split_field


def test_a_missing_kling_field_is_required() -> None:
    """A Kling request missing a field says "is required", as workflow checks do."""
    with pytest.raises(InvalidRequestError) as caught:
        LipSyncRequest.from_input({"tts_text": "hello"})
    assert ("input.origin_task_id", "is required") in caught.value.problems


def test_an_unknown_kling_field_names_the_task_type() -> None:
    """An unknown input key is not a known field *for this task type*."""
    with pytest.raises(InvalidRequestError) as caught:
        KlingVideoRequest.from_input({"prompt": "a fox", "colour": "red"})
    assert caught.value.problems == [("input.colour", "is not a known field for this task type")]


def test_a_config_problem_is_named_under_config() -> None:
    """Problems in the create body's `config` are prefixed `config.`."""
    body = {
        "model": "kling",
        "task_type": "video_generation",
        "input": {"prompt": "a fox"},
        "config": {"service_mode": "free"},
    }
    with pytest.raises(InvalidRequestError) as caught:
        parse_task_request(body)
    assert [field for field, _ in caught.value.problems] == ["config.service_mode"]


def test_cross_field_rules_keep_the_field_they_are_about() -> None:
    """A rule raised by the whole request names its field, not the request."""
    with pytest.raises(InvalidRequestError) as caught:
        KlingVideoRequest.from_input({"prompt": "a fox", "version": "2.1", "duration": 7})
    assert caught.value.problems == [("input.duration", "must be 5 or 10 for version 2.1")]


@pytest.mark.parametrize(
    ("field", "path"),
    [
        ("multi_shots[0].prompt", ("multi_shots", 0, "prompt")),
        ("multi_shots.0.prompt", ("multi_shots", 0, "prompt")),
        ("camera_control.config", ("camera_control", "config")),
    ],
)
def test_split_field_reads_both_index_styles(field: str, path: tuple[str | int, ...]) -> None:
    """Ours (`[0]`) and pydantic's (`.0`) list indexes make the same path."""
    assert split_field(field) == path
