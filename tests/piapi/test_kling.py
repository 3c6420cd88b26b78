"""Rules of the shared request module that PiAPI's own examples pin down."""

from __future__ import annotations

import pytest

from klingflow.errors import InvalidRequestError
from klingflow.piapi.kling import KlingOmniRequest, KlingVideoRequest, parse_task_request
from klingflow.piapi.pricing import estimate_cost

DOC_K3_BODY = {
    "model": "kling",
    "task_type": "video_generation",
    "input": {
        "prompt": "Close-up, static camera, a woman in swim suit near the sea introduces herself.",
        "duration": 5,
        "aspect_ratio": "16:9",
        "enable_audio": False,
        "prefer_multi_shots": False,
        "mode": "std",
        "version": "3.0",
    },
    "config": {"service_mode": "public", "webhook_config": {"endpoint": "", "secret": ""}},
}


def test_piapi_documented_kling3_request_is_valid() -> None:
    """The docs' own request, with its empty webhook endpoint, means 'no webhook'."""
    request, config = parse_task_request(DOC_K3_BODY)
    assert request.duration_seconds == 5
    assert config is not None
    assert config.webhook_config is None


def test_url_rule_message_has_no_library_prefix() -> None:
    """A bad URL is reported as the rule, not as pydantic's 'Value error, ...' text."""
    with pytest.raises(InvalidRequestError) as caught:
        KlingVideoRequest(prompt="x", image_url="ftp://example.com/a.png")
    assert caught.value.problems == [("input.image_url", "must be an http(s) URL")]


def test_omni_duration_is_ignored_when_shots_are_given() -> None:
    """As PiAPI says, multi_shots decide the length; a stray duration is not an error."""
    request = KlingOmniRequest.from_input(
        {
            "multi_shots": [{"prompt": "a", "duration": 3}, {"prompt": "b", "duration": 4}],
            "duration": 99,
        }
    )
    assert request.duration_seconds == 7


def test_professional_mode_is_priced_and_rendered_as_pro() -> None:
    """HYA's `professional_mode` asks for pro (1080p), so it is priced like `mode: pro`."""
    request = KlingVideoRequest(prompt="x", professional_mode=True)
    assert request.resolution == "1080p"
    assert estimate_cost(request) == estimate_cost(KlingVideoRequest(prompt="x", mode="pro"))
