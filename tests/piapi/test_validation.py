"""Every rule in kling.py rejects a bad request locally: nothing is sent, nothing is spent."""

from __future__ import annotations

from typing import Any

import pytest

from klingflow.emulator import EmulatorServer
from klingflow.piapi import InvalidRequestError, TaskConfig

from .adapter import Api

URL = "https://example.com/a.png"
LONG = "x" * 2501


def video(**fields: Any) -> dict[str, Any]:
    return {"model": "kling", "task_type": "video_generation", "input": fields}


def kling(task_type: str, **fields: Any) -> dict[str, Any]:
    return {"model": "kling", "task_type": task_type, "input": fields}


def turbo(**fields: Any) -> dict[str, Any]:
    return {"model": "kling-turbo", "task_type": "video_generation", "input": fields}


def shots(*durations: int) -> list[dict[str, Any]]:
    return [{"prompt": f"shot {n}", "duration": d} for n, d in enumerate(durations)]


SIMPLE_PAN = {"type": "simple", "config": {"pan": 5}}

# (id, body, the field the problem must name)
BAD: list[tuple[str, dict[str, Any], str]] = [
    # the body itself
    ("model-missing", {"task_type": "video_generation", "input": {}}, "model"),
    ("model-unknown", {"model": "sora", "task_type": "video_generation", "input": {}}, "model"),
    ("task-type-missing", {"model": "kling", "input": {}}, "task_type"),
    ("task-type-unknown", kling("upscale", prompt="p"), "task_type"),
    (
        "input-not-object",
        {"model": "kling", "task_type": "video_generation", "input": "p"},
        "input",
    ),
    ("extra-top-level-field", {**video(prompt="p"), "priority": 1}, "priority"),
    (
        "config-service-mode",
        {**video(prompt="p"), "config": {"service_mode": "vip"}},
        "config.service_mode",
    ),
    (
        "config-webhook-not-http",
        {**video(prompt="p"), "config": {"webhook_config": {"endpoint": "ftp://h"}}},
        "config.webhook_config.endpoint",
    ),
    # video_generation: field rules
    ("unknown-input-field", video(prompt="p", colour="red"), "input.colour"),
    ("prompt-too-long", video(prompt=LONG), "input.prompt"),
    ("negative-prompt-too-long", video(prompt="p", negative_prompt=LONG), "input.negative_prompt"),
    ("duration-not-a-number", video(prompt="p", duration="long"), "input.duration"),
    ("aspect-ratio-unknown", video(prompt="p", aspect_ratio="4:3"), "input.aspect_ratio"),
    ("mode-unknown", video(prompt="p", mode="ultra"), "input.mode"),
    ("version-unknown", video(prompt="p", version="9.9"), "input.version"),
    ("image-url-not-http", video(image_url="file:///etc/passwd"), "input.image_url"),
    (
        "image-tail-url-not-http",
        video(image_url=URL, image_tail_url="ftp://h/x"),
        "input.image_tail_url",
    ),
    ("cfg-scale-above-1", video(version="2.1", prompt="p", cfg_scale=1.5), "input.cfg_scale"),
    ("model-name-unknown", video(prompt="p", model_name="Kling V9"), "input.model_name"),
    (
        "model-name-contradicts-version",
        video(prompt="p", model_name="Kling V2.1", version="1.6"),
        "input.model_name",
    ),
    # video_generation: camera control
    (
        "camera-simple-without-config",
        video(version="2.1", prompt="p", camera_control={"type": "simple"}),
        "input.camera_control.config",
    ),
    (
        "camera-simple-two-axes",
        video(
            version="2.1",
            prompt="p",
            camera_control={"type": "simple", "config": {"pan": 1, "zoom": 2}},
        ),
        "input.camera_control.config",
    ),
    (
        "camera-preset-with-config",
        video(
            version="2.1", prompt="p", camera_control={"type": "down_back", "config": {"pan": 1}}
        ),
        "input.camera_control.config",
    ),
    (
        "camera-axis-out-of-range",
        video(version="2.1", prompt="p", camera_control={"type": "simple", "config": {"pan": 11}}),
        "input.camera_control.config.pan",
    ),
    (
        "camera-with-image",
        video(version="2.1", image_url=URL, camera_control=SIMPLE_PAN),
        "input.camera_control",
    ),
    ("camera-on-3.0", video(prompt="p", camera_control=SIMPLE_PAN), "input.camera_control"),
    # video_generation: cross-field rules
    ("no-prompt-no-image", video(duration=5), "input.prompt"),
    ("duration-3.0-too-short", video(prompt="p", duration=2), "input.duration"),
    ("duration-3.0-too-long", video(prompt="p", duration=16), "input.duration"),
    (
        "duration-classic-not-5-or-10",
        video(version="2.1", prompt="p", duration=7),
        "input.duration",
    ),
    (
        "prefer-multi-shots-classic",
        video(version="2.1", prompt="p", prefer_multi_shots=True),
        "input.prefer_multi_shots",
    ),
    ("audio-on-2.1", video(version="2.1", prompt="p", enable_audio=True), "input.enable_audio"),
    ("tail-without-first-frame", video(prompt="p", image_tail_url=URL), "input.image_tail_url"),
    ("multi-shots-classic", video(version="2.1", multi_shots=shots(3, 2)), "input.multi_shots"),
    ("multi-shots-none", video(multi_shots=[]), "input.multi_shots"),
    ("multi-shots-seven", video(multi_shots=shots(1, 1, 1, 1, 1, 1, 1)), "input.multi_shots"),
    ("multi-shots-total-over-15", video(multi_shots=shots(8, 8)), "input.multi_shots"),
    ("multi-shots-total-under-3", video(multi_shots=shots(1, 1)), "input.multi_shots"),
    (
        "shot-without-prompt",
        video(multi_shots=[{"prompt": "", "duration": 3}]),
        "input.multi_shots.0.prompt",
    ),
    (
        "shot-duration-zero",
        video(multi_shots=[{"prompt": "a", "duration": 0}]),
        "input.multi_shots.0.duration",
    ),
    ("elements-not-1.6", video(prompt="p", elements=[{"image_url": URL}]), "input.elements"),
    ("elements-none", video(version="1.6", prompt="p", elements=[]), "input.elements"),
    (
        "elements-five",
        video(version="1.6", prompt="p", elements=[{"image_url": URL}] * 5),
        "input.elements",
    ),
    (
        "elements-with-image-url",
        video(version="1.6", image_url=URL, elements=[{"image_url": URL}]),
        "input.elements",
    ),
    (
        "element-url-not-http",
        video(version="1.6", prompt="p", elements=[{"image_url": "x"}]),
        "input.elements.0.image_url",
    ),
    ("v1.5-std-mode", video(version="1.5", prompt="p", mode="std"), "input.mode"),
    (
        "v1.5-ten-seconds",
        video(version="1.5", prompt="p", mode="pro", duration=10),
        "input.duration",
    ),
    (
        "v1.5-tail-frame",
        video(version="1.5", mode="pro", image_url=URL, image_tail_url=URL),
        "input.image_tail_url",
    ),
    # kling-turbo
    ("turbo-no-prompt", turbo(duration=5), "input.prompt"),
    ("turbo-2.5-duration", turbo(prompt="p", duration=7), "input.duration"),
    ("turbo-3.0-duration", turbo(prompt="p", version="3.0-turbo", duration=2), "input.duration"),
    ("turbo-tail-without-first", turbo(prompt="p", image_tail_url=URL), "input.image_tail_url"),
    ("turbo-version", turbo(prompt="p", version="2.6"), "input.version"),
    # omni
    ("omni-no-prompt", kling("omni_video_generation", duration=5), "input.prompt"),
    (
        "omni-o1-duration",
        kling("omni_video_generation", prompt="p", version="o1", duration=7),
        "input.duration",
    ),
    (
        "omni-3.0-duration",
        kling("omni_video_generation", prompt="p", duration=20),
        "input.duration",
    ),
    (
        "omni-resolution",
        kling("omni_video_generation", prompt="p", resolution="4k"),
        "input.resolution",
    ),
    (
        "omni-eight-images",
        kling("omni_video_generation", prompt="p", images=[URL] * 8),
        "input.images",
    ),
    (
        "omni-image-not-http",
        kling("omni_video_generation", prompt="p", images=["x"]),
        "input.images",
    ),
    (
        "omni-shots-total",
        kling("omni_video_generation", multi_shots=shots(10, 10)),
        "input.multi_shots",
    ),
    (
        "omni-shots-seven",
        kling("omni_video_generation", multi_shots=shots(1, 1, 1, 1, 1, 1, 1)),
        "input.multi_shots",
    ),
    # extend_video, lip_sync
    ("extend-without-origin", kling("extend_video", prompt="p"), "input.origin_task_id"),
    (
        "extend-cfg-scale",
        kling("extend_video", origin_task_id="t", cfg_scale=-1),
        "input.cfg_scale",
    ),
    ("lip-sync-without-origin", kling("lip_sync", tts_text="hi"), "input.origin_task_id"),
    ("lip-sync-nothing-to-say", kling("lip_sync", origin_task_id="t"), "input.tts_text"),
    (
        "lip-sync-speed",
        kling("lip_sync", origin_task_id="t", tts_text="hi", tts_speed=3),
        "input.tts_speed",
    ),
    (
        "lip-sync-dubbing-not-http",
        kling("lip_sync", origin_task_id="t", local_dubbing_url="a.mp3"),
        "input.local_dubbing_url",
    ),
    # effects, sound
    ("effects-unknown-effect", kling("effects", image_url=URL, effect="explode"), "input.effect"),
    ("effects-needs-prompt", kling("effects", image_url=URL, effect="rocket"), "input.prompt"),
    ("effects-without-image", kling("effects", effect="squish"), "input.image_url"),
    (
        "effects-image-not-http",
        kling("effects", image_url="img.png", effect="squish"),
        "input.image_url",
    ),
    ("sound-without-source", kling("sound", duration=5), "input.prompt"),
    ("sound-duration", kling("sound", prompt="rain", duration=7), "input.duration"),
    # motion_control, avatar, ai_try_on
    (
        "motion-both-references",
        kling("motion_control", image_url=URL, video_url=URL, preset_motion="Dance"),
        "input.video_url",
    ),
    ("motion-no-reference", kling("motion_control", image_url=URL), "input.video_url"),
    (
        "motion-direction",
        kling("motion_control", image_url=URL, preset_motion="D", motion_direction="up"),
        "input.motion_direction",
    ),
    (
        "motion-version",
        kling("motion_control", image_url=URL, preset_motion="D", version="1.6"),
        "input.version",
    ),
    ("avatar-nothing-to-say", kling("avatar", image_url=URL), "input.audio_url"),
    (
        "avatar-image-not-http",
        kling("avatar", image_url="me.png", tts_text="hi"),
        "input.image_url",
    ),
    (
        "try-on-dress-and-upper",
        kling("ai_try_on", model_input=URL, dress_input=URL, upper_input=URL),
        "input.dress_input",
    ),
    ("try-on-no-garment", kling("ai_try_on", model_input=URL), "input.dress_input"),
    (
        "try-on-batch-five",
        kling("ai_try_on", model_input=URL, dress_input=URL, batch_size=5),
        "input.batch_size",
    ),
    (
        "try-on-person-not-http",
        kling("ai_try_on", model_input="me.png", dress_input=URL),
        "input.model_input",
    ),
]


def test_every_broken_rule_is_rejected_locally_and_nothing_is_sent(
    api: Api, emulator: EmulatorServer, subtests: pytest.Subtests
) -> None:
    """Each bad body raises InvalidRequestError naming its field; no request leaves at all."""
    assert len({case_id for case_id, _, _ in BAD}) == len(BAD)
    for case_id, body, field in BAD:
        with subtests.test(case_id):
            with pytest.raises(InvalidRequestError) as caught:
                api.submit(body)
            assert field in [name for name, _ in caught.value.problems]
            assert "nothing was sent" in str(caught.value)
    stats = emulator.stats()
    assert stats["create_requests"] == 0
    assert stats["keys"] == {}  # not a single request of any kind reached the emulator


def test_config_in_body_and_argument_is_a_type_error(api: Api, emulator: EmulatorServer) -> None:
    """Giving the task config twice is a programming mistake, caught before sending."""
    body = {**video(prompt="p"), "config": {"service_mode": "public"}}
    with pytest.raises(TypeError, match="not both"):
        api.submit(body, config=TaskConfig())
    assert emulator.stats()["create_requests"] == 0


def test_request_that_is_not_a_request_is_a_type_error(api: Api) -> None:
    """Passing something other than a KlingRequest or a dict is a TypeError, not an API error."""
    with pytest.raises(TypeError, match="KlingRequest"):
        api.submit("make me a video")
