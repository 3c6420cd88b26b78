"""Every input rule of the spec, per task type: bad bodies get 400 naming the field, good ones 200.

The rules live in `klingflow.piapi.kling`; these tests check that the emulator applies them
over HTTP exactly as PiAPI would answer: 400, the envelope, a message `<field>: <rule>`, and
nothing created or charged.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from klingflow.emulator import EmulatorServer

IMG = "https://example.com/portrait.png"
IMG2 = "https://example.com/garment.png"
LONG = "x" * 2501


def _body(task_type: str, model: str = "kling", **input_: Any) -> dict[str, Any]:
    return {"model": model, "task_type": task_type, "input": input_}


def video(**input_: Any) -> dict[str, Any]:
    return _body("video_generation", **input_)


def classic(**input_: Any) -> dict[str, Any]:
    return video(**{"prompt": "a fox", "version": "2.6", "duration": 5, **input_})


def v3(**input_: Any) -> dict[str, Any]:
    return video(**{"prompt": "a fox", "version": "3.0", **input_})


def turbo(**input_: Any) -> dict[str, Any]:
    return _body("video_generation", "kling-turbo", **{"prompt": "a car", **input_})


def omni(**input_: Any) -> dict[str, Any]:
    return _body("omni_video_generation", **{"prompt": "a fox @image_1", **input_})


def shots(*seconds: int) -> list[dict[str, Any]]:
    return [{"prompt": f"shot {n}", "duration": s} for n, s in enumerate(seconds)]


ORIGIN = "0b9f8d2e-0000-4000-8000-000000000000"

# (body, the field the message must name, a fragment of the rule)
BAD: list[tuple[str, dict[str, Any], str, str]] = [
    # -- the body itself
    ("no model", {"task_type": "video_generation", "input": {}}, "model", "required"),
    ("unknown model", {**v3(), "model": "sora"}, "model", "unknown model"),
    ("no task_type", {"model": "kling", "input": {}}, "task_type", "required"),
    ("unknown task_type", _body("dance"), "task_type", "is not a kling task type"),
    ("turbo task_type", _body("effects", "kling-turbo"), "task_type", "kling-turbo"),
    ("no input", {"model": "kling", "task_type": "video_generation"}, "input", "object"),
    ("input not object", {**v3(), "input": ["a"]}, "input", "object"),
    ("service_mode", {**v3(), "config": {"service_mode": "vip"}}, "config.service_mode", ""),
    (
        "webhook endpoint",
        {**v3(), "config": {"webhook_config": {"endpoint": "ftp://x", "secret": ""}}},
        "config.webhook_config.endpoint",
        "http(s) URL",
    ),
    # -- video_generation, classic versions
    ("prompt length", classic(prompt=LONG), "input.prompt", "2500"),
    ("negative_prompt length", classic(negative_prompt=LONG), "input.negative_prompt", "2500"),
    ("cfg_scale high", classic(cfg_scale=1.5), "input.cfg_scale", "less than or equal to 1"),
    ("cfg_scale low", classic(cfg_scale=-0.1), "input.cfg_scale", "greater than or equal to 0"),
    ("classic duration", classic(duration=7), "input.duration", "5 or 10"),
    ("duration text", classic(duration="long"), "input.duration", "integer"),
    ("aspect_ratio", classic(aspect_ratio="4:3"), "input.aspect_ratio", "16:9"),
    ("mode", classic(mode="ultra"), "input.mode", "'std' or 'pro'"),
    ("version", classic(version="9.9"), "input.version", "'2.6'"),
    ("image_url", classic(image_url="not a url"), "input.image_url", "http(s) URL"),
    ("tail url", classic(image_url=IMG, image_tail_url="x"), "input.image_tail_url", "URL"),
    ("tail alone", classic(image_tail_url=IMG), "input.image_tail_url", "needs image_url"),
    ("no prompt", video(version="2.6", duration=5), "input.prompt", "required"),
    ("audio on 2.5", classic(version="2.5", enable_audio=True), "input.enable_audio", "2.6"),
    ("multi-shot hint", classic(prefer_multi_shots=True), "input.prefer_multi_shots", "3.0"),
    ("shots on 2.6", classic(multi_shots=shots(3, 2)), "input.multi_shots", "needs version 3.0"),
    ("elements on 2.6", classic(elements=[{"image_url": IMG}]), "input.elements", "1.6"),
    (
        "elements too many",
        classic(version="1.6", elements=[{"image_url": IMG}] * 5),
        "input.elements",
        "1 to 4",
    ),
    ("elements none", classic(version="1.6", elements=[]), "input.elements", "1 to 4"),
    (
        "elements and image",
        classic(version="1.6", elements=[{"image_url": IMG}], image_url=IMG),
        "input.elements",
        "image_url",
    ),
    (
        "element url",
        classic(version="1.6", elements=[{"image_url": "nope"}]),
        "input.elements.0.image_url",
        "URL",
    ),
    (
        "element extra",
        classic(version="1.6", elements=[{"url": IMG}]),
        "input.elements.0.url",
        "not a known field",
    ),
    ("1.5 std", classic(version="1.5", mode="std"), "input.mode", "pro mode only"),
    ("1.5 10 s", classic(version="1.5", mode="pro", duration=10), "input.duration", "5 s"),
    (
        "1.5 tail",
        classic(version="1.5", mode="pro", image_url=IMG, image_tail_url=IMG2),
        "input.image_tail_url",
        "1.5",
    ),
    ("model_name", video(prompt="a", model_name="Kling V9"), "input.model_name", "unknown"),
    (
        "model_name clash",
        video(prompt="a", model_name="Kling V2.1", version="2.6", duration=5),
        "input.model_name",
        "version says 2.6",
    ),
    # camera_control
    (
        "camera with image",
        classic(image_url=IMG, camera_control={"type": "simple", "config": {"pan": 5}}),
        "input.camera_control",
        "text-to-video only",
    ),
    (
        "camera on 3.0",
        v3(camera_control={"type": "simple", "config": {"pan": 5}}),
        "input.camera_control",
        "classic",
    ),
    (
        "camera two axes",
        classic(camera_control={"type": "simple", "config": {"pan": 5, "zoom": 2}}),
        "input.camera_control.config",
        "exactly one axis",
    ),
    (
        "camera no config",
        classic(camera_control={"type": "simple"}),
        "input.camera_control.config",
        "required",
    ),
    (
        "camera range",
        classic(camera_control={"type": "simple", "config": {"pan": 11}}),
        "input.camera_control.config.pan",
        "10",
    ),
    (
        "camera preset with config",
        classic(camera_control={"type": "down_back", "config": {"pan": 1}}),
        "input.camera_control.config",
        "must be empty",
    ),
    (
        "camera type",
        classic(camera_control={"type": "orbit"}),
        "input.camera_control.type",
        "simple",
    ),
    # -- video_generation, Kling 3.0
    ("3.0 too short", v3(duration=2), "input.duration", "3 to 15"),
    ("3.0 too long", v3(duration=16), "input.duration", "3 to 15"),
    ("shots count", v3(multi_shots=shots(1, 1, 1, 1, 1, 1, 1)), "input.multi_shots", "1 to 6"),
    ("shots empty", v3(multi_shots=[]), "input.multi_shots", "1 to 6"),
    ("shots total low", v3(multi_shots=shots(1, 1)), "input.multi_shots", "3-15"),
    ("shots total high", v3(multi_shots=shots(8, 8)), "input.multi_shots", "3-15"),
    ("shot zero", v3(multi_shots=shots(0, 4)), "input.multi_shots.0.duration", "1"),
    ("shot too long", v3(multi_shots=shots(15)), "input.multi_shots.0.duration", "14"),
    (
        "shot prompt",
        v3(multi_shots=[{"prompt": "", "duration": 3}]),
        "input.multi_shots.0.prompt",
        "at least 1",
    ),
    # -- kling-turbo
    ("turbo no prompt", _body("video_generation", "kling-turbo"), "input.prompt", "required"),
    ("turbo 2.5 duration", turbo(duration=7), "input.duration", "5 or 10"),
    ("turbo 3.0 duration", turbo(version="3.0-turbo", duration=20), "input.duration", "3 to 15"),
    ("turbo version", turbo(version="2.6"), "input.version", "2.5-turbo"),
    ("turbo tail", turbo(image_tail_url=IMG), "input.image_tail_url", "needs image_url"),
    # -- omni_video_generation
    ("omni no prompt", _body("omni_video_generation"), "input.prompt", "required"),
    ("omni resolution", omni(resolution="4k"), "input.resolution", "720p"),
    ("omni version", omni(version="2.6"), "input.version", "'o1'"),
    ("o1 duration", omni(version="o1", duration=7), "input.duration", "5 or 10"),
    ("omni duration", omni(duration=20), "input.duration", "3 to 15"),
    ("omni images", omni(images=[IMG] * 8), "input.images", "at most 7"),
    ("omni image url", omni(images=["nope"]), "input.images", "URL"),
    ("omni shots", omni(multi_shots=shots(1, 1)), "input.multi_shots", "3-15"),
    # -- extend_video
    ("extend origin", _body("extend_video"), "input.origin_task_id", "required"),
    (
        "extend cfg",
        _body("extend_video", origin_task_id=ORIGIN, cfg_scale=2),
        "input.cfg_scale",
        "",
    ),
    (
        "extend unknown origin",
        _body("extend_video", origin_task_id=ORIGIN),
        "input.origin_task_id",
        "not a completed Kling video",
    ),
    # -- lip_sync
    ("lip origin", _body("lip_sync", tts_text="hi"), "input.origin_task_id", "required"),
    ("lip speech", _body("lip_sync", origin_task_id=ORIGIN), "input.tts_text", "tts_text or"),
    (
        "lip speed low",
        _body("lip_sync", origin_task_id=ORIGIN, tts_text="hi", tts_speed=0.5),
        "input.tts_speed",
        "0.8",
    ),
    (
        "lip speed high",
        _body("lip_sync", origin_task_id=ORIGIN, tts_text="hi", tts_speed=2.5),
        "input.tts_speed",
        "2",
    ),
    (
        "lip dubbing url",
        _body("lip_sync", origin_task_id=ORIGIN, local_dubbing_url="file.mp3"),
        "input.local_dubbing_url",
        "URL",
    ),
    # -- effects
    ("effects image", _body("effects", effect="squish"), "input.image_url", "required"),
    ("effects effect", _body("effects", image_url=IMG), "input.effect", "required"),
    ("effects unknown", _body("effects", image_url=IMG, effect="explode"), "input.effect", ""),
    (
        "effects prompt",
        _body("effects", image_url=IMG, effect="rocket"),
        "input.prompt",
        "'rocket' effect",
    ),
    ("effects url", _body("effects", image_url="x", effect="jelly"), "input.image_url", "URL"),
    # -- sound
    ("sound source", _body("sound", duration=5), "input.prompt", "origin_task_id"),
    ("sound duration", _body("sound", prompt="rain", duration=7), "input.duration", "5 or 10"),
    # -- motion_control
    ("motion image", _body("motion_control", preset_motion="Wave"), "input.image_url", ""),
    ("motion none", _body("motion_control", image_url=IMG), "input.video_url", "exactly one"),
    (
        "motion both",
        _body("motion_control", image_url=IMG, video_url=IMG2, preset_motion="Wave"),
        "input.video_url",
        "exactly one",
    ),
    (
        "motion direction",
        _body("motion_control", image_url=IMG, preset_motion="Wave", motion_direction="left"),
        "input.motion_direction",
        "'video' or 'image'",
    ),
    (
        "motion version",
        _body("motion_control", image_url=IMG, preset_motion="Wave", version="2.5"),
        "input.version",
        "'2.6' or '3.0'",
    ),
    (
        "motion video url",
        _body("motion_control", image_url=IMG, video_url="clip.mp4"),
        "input.video_url",
        "URL",
    ),
    # -- avatar
    ("avatar image", _body("avatar", tts_text="hello"), "input.image_url", "required"),
    ("avatar speech", _body("avatar", image_url=IMG), "input.audio_url", "audio_url or tts_text"),
    ("avatar mode", _body("avatar", image_url=IMG, tts_text="hi", mode="max"), "input.mode", ""),
    ("avatar audio", _body("avatar", image_url=IMG, audio_url="a.mp3"), "input.audio_url", "URL"),
    # -- ai_try_on
    ("try-on person", _body("ai_try_on", dress_input=IMG2), "input.model_input", "required"),
    ("try-on garment", _body("ai_try_on", model_input=IMG), "input.dress_input", "not both"),
    (
        "try-on both",
        _body("ai_try_on", model_input=IMG, dress_input=IMG2, upper_input=IMG2),
        "input.dress_input",
        "not both",
    ),
    (
        "try-on batch low",
        _body("ai_try_on", model_input=IMG, dress_input=IMG2, batch_size=0),
        "input.batch_size",
        "1",
    ),
    (
        "try-on batch high",
        _body("ai_try_on", model_input=IMG, dress_input=IMG2, batch_size=5),
        "input.batch_size",
        "4",
    ),
    (
        "try-on url",
        _body("ai_try_on", model_input="me.png", dress_input=IMG2),
        "input.model_input",
        "URL",
    ),
]

GOOD: list[tuple[str, dict[str, Any]]] = [
    ("3.0 text", v3(duration=5, aspect_ratio="16:9", mode="std", enable_audio=False)),
    ("3.0 pro audio 15 s", v3(duration=15, mode="pro", enable_audio=True)),
    ("3.0 multi-shot", v3(prefer_multi_shots=True, multi_shots=shots(3, 2))),
    ("3.0 six shots", v3(multi_shots=shots(1, 1, 1, 1, 1, 1))),
    ("3.0 image frames", video(version="3.0", image_url=IMG, image_tail_url=IMG2)),
    ("1.0", classic(version="1.0", negative_prompt="blur", cfg_scale=0.5)),
    ("1.5 pro", classic(version="1.5", mode="pro")),
    ("1.6 elements", classic(version="1.6", elements=[{"image_url": IMG}] * 4)),
    (
        "1.6 camera",
        classic(version="1.6", camera_control={"type": "simple", "config": {"pan": -10}}),
    ),
    ("1.6 camera preset", classic(version="1.6", camera_control={"type": "forward_up"})),
    ("2.0 10 s", classic(version="2.0", duration=10, aspect_ratio="9:16")),
    ("2.1 frames", classic(version="2.1", image_url=IMG, image_tail_url=IMG2, prompt="")),
    ("2.1-master", classic(version="2.1-master", mode="pro")),
    ("2.5 1:1", classic(version="2.5", aspect_ratio="1:1")),
    ("2.6 audio", classic(version="2.6", enable_audio=True, mode="pro")),
    ("seed model_name", video(prompt="a", model_name="Kling V2.1", duration="5s")),
    ("hya professional_mode", classic(version="1.6", professional_mode=True)),
    ("cfg_scale as string", classic(cfg_scale="0.5")),
    ("turbo example", turbo(negative_prompt="", image_url="", duration=5, mode="pro")),
    ("3.0 turbo", turbo(version="3.0-turbo", duration=12, aspect_ratio="9:16")),
    ("omni example", omni(version="3.0", resolution="720p", duration=3, enable_audio=False)),
    ("omni images", omni(images=[IMG, IMG2], resolution="1080p", enable_audio=True)),
    ("omni shots", _body("omni_video_generation", multi_shots=shots(2, 2))),
    ("o1", omni(version="o1", duration=10)),
    ("effects squish", _body("effects", image_url=IMG, effect="squish")),
    ("effects rocket", _body("effects", image_url=IMG, effect="rocket", prompt="to the moon")),
    ("effects pro", _body("effects", image_url=IMG, effect="jelly", professional_mode=True)),
    ("sound", _body("sound", prompt="rain on a tin roof", duration=5)),
    (
        "motion example",
        _body(
            "motion_control",
            image_url=IMG,
            video_url="",
            preset_motion="Heart Gesture Dance",
            motion_direction="video",
            keep_original_sound=True,
            mode="std",
            version="2.6",
        ),
    ),
    ("motion video", _body("motion_control", image_url=IMG, video_url=IMG2, version="3.0")),
    ("avatar tts", _body("avatar", image_url=IMG, tts_text="hello there", mode="pro")),
    ("avatar audio", _body("avatar", image_url=IMG, audio_url="https://example.com/a.mp3")),
    ("try-on dress", _body("ai_try_on", model_input=IMG, dress_input=IMG2)),
    (
        "try-on separates",
        _body("ai_try_on", model_input=IMG, upper_input=IMG2, lower_input=IMG2, batch_size=4),
    ),
]


@pytest.mark.parametrize(
    ("body", "field", "rule"), [pytest.param(b, f, r, id=i) for i, b, f, r in BAD]
)
def test_bad_input_is_400_naming_the_field_and_creates_nothing(
    emulator: EmulatorServer, client: httpx.Client, body: dict[str, Any], field: str, rule: str
) -> None:
    """A body breaking a rule gets 400 `<field>: <rule>` in the envelope and no task."""
    response = client.post("/api/v1/task", json=body)
    assert response.status_code == 400, response.text
    payload = response.json()
    assert payload["code"] == 400
    assert payload["data"] is None
    problems = dict(part.split(": ", 1) for part in payload["message"].split("; "))
    assert field in problems, payload["message"]
    assert rule in problems[field]
    stats = emulator.stats()
    assert (stats["creates"], stats["create_requests"]) == (0, 1)
    assert emulator.tasks() == []


# Keys PiAPI's gateway passes through: refused only with `strict_inputs`.
UNKNOWN: list[tuple[str, dict[str, Any], str]] = [
    ("extra top-level", {**v3(), "webhook": {}}, "webhook"),
    ("config extra", {**v3(), "config": {"retries": 3}}, "config.retries"),
    ("unknown input", classic(style="anime"), "input.style"),
    ("turbo cfg", turbo(cfg_scale=0.5), "input.cfg_scale"),
    ("omni unknown", omni(style="anime"), "input.style"),
]


@pytest.mark.parametrize(("body", "field"), [pytest.param(b, f, id=i) for i, b, f in UNKNOWN])
def test_unknown_keys_are_refused_with_strict_inputs(
    emulator: EmulatorServer, client: httpx.Client, body: dict[str, Any], field: str
) -> None:
    """With `strict_inputs`, a key the task type does not know is 400 naming it, no task."""
    emulator.configure(strict_inputs=True)
    response = client.post("/api/v1/task", json=body)
    assert response.status_code == 400, response.text
    assert f"{field}: is not a known field" in response.json()["message"]
    assert emulator.stats()["creates"] == 0


@pytest.mark.parametrize(("body", "field"), [pytest.param(b, f, id=i) for i, b, f in UNKNOWN])
def test_unknown_keys_are_ignored_and_echoed_as_piapi_does(
    emulator: EmulatorServer, client: httpx.Client, body: dict[str, Any], field: str
) -> None:
    """By default an unknown key is accepted and ignored; an unknown input key is echoed."""
    response = client.post("/api/v1/task", json=body)
    assert response.status_code == 200, response.text
    task = response.json()["data"]
    where, _, name = field.partition(".")
    if where == "input":
        assert task["input"][name] == body["input"][name]
    assert emulator.stats()["creates"] == 1


# What PiAPI's official client sends: `version` on these types, `mode` on omni.
OFFICIAL_CLIENT: list[tuple[str, dict[str, Any]]] = [
    ("effects", _body("effects", image_url=IMG, effect="squish", version="2.6")),
    ("sound", _body("sound", prompt="rain", version="2.6")),
    ("try-on", _body("ai_try_on", model_input=IMG, dress_input=IMG2, version="2.6")),
    ("avatar", _body("avatar", image_url=IMG, tts_text="hello", version="2.6")),
    ("omni mode", omni(mode="pro")),
]


@pytest.mark.parametrize("body", [pytest.param(b, id=i) for i, b in OFFICIAL_CLIENT])
@pytest.mark.parametrize("strict", [False, True])
def test_the_official_clients_fields_are_accepted_even_when_strict(
    emulator: EmulatorServer, client: httpx.Client, body: dict[str, Any], strict: bool
) -> None:
    """`version` on effects/sound/try-on/avatar and `mode` on omni are known, echoed fields."""
    emulator.configure(strict_inputs=strict)
    response = client.post("/api/v1/task", json=body)
    assert response.status_code == 200, response.text
    echo = response.json()["data"]["input"]
    assert {k: echo[k] for k in body["input"]} == body["input"]


@pytest.mark.parametrize("body", [pytest.param(b, id=i) for i, b in GOOD])
def test_good_input_creates_a_task(
    emulator: EmulatorServer, client: httpx.Client, body: dict[str, Any]
) -> None:
    """A body within every rule gets 200 and exactly one task of its model and type."""
    response = client.post("/api/v1/task", json=body)
    assert response.status_code == 200, response.text
    task = response.json()["data"]
    assert (task["model"], task["task_type"]) == (body["model"], body["task_type"])
    assert emulator.stats()["creates"] == 1


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{not json", "request body must be JSON"),
        (b"", "request body must be JSON"),
        (b"[1, 2]", "request body must be a JSON object"),
    ],
)
def test_unparsable_body_is_400(
    emulator: EmulatorServer, client: httpx.Client, raw: bytes, message: str
) -> None:
    """A body that is not a JSON object gets 400 with a message saying so, and no task."""
    response = client.post(
        "/api/v1/task", content=raw, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json() == {"code": 400, "data": None, "message": message}
    assert emulator.stats()["creates"] == 0


def test_every_problem_of_a_body_is_named_once(client: httpx.Client) -> None:
    """Field-level problems of one body are all reported, separated by "; "."""
    response = client.post("/api/v1/task", json=classic(aspect_ratio="4:3", mode="ultra"))
    assert response.status_code == 400
    fields = [part.split(": ", 1)[0] for part in response.json()["message"].split("; ")]
    assert fields == ["input.aspect_ratio", "input.mode"]


@pytest.mark.parametrize(
    "input_",
    [
        {"origin_task_id": "", "tts_text": "hi"},
        {"tts_text": "hi"},
    ],
)
def test_lip_sync_without_origin_names_origin_task_id(
    client: httpx.Client, input_: dict[str, Any]
) -> None:
    """An empty origin_task_id counts as missing (templates render unset values as "")."""
    response = client.post("/api/v1/task", json=_body("lip_sync", **input_))
    assert response.status_code == 400
    assert response.json()["message"].startswith("input.origin_task_id: ")


@pytest.mark.parametrize(
    ("task_type", "extra"),
    [
        ("extend_video", {"prompt": "keep walking"}),
        ("lip_sync", {"tts_text": "hello", "tts_timbre": "Sunny", "tts_speed": 1.2}),
        ("lip_sync", {"local_dubbing_url": "https://example.com/voice.mp3"}),
        ("sound", {"duration": 5}),
    ],
)
def test_follow_up_tasks_accept_a_completed_video_of_the_key(
    paused: EmulatorServer, client: httpx.Client, task_type: str, extra: dict[str, Any]
) -> None:
    """extend_video, lip_sync and sound take the id of this key's completed video task."""
    origin = client.post("/api/v1/task", json=classic(version="2.1")).json()["data"]["task_id"]
    body = _body(task_type, origin_task_id=origin, **extra)
    early = client.post("/api/v1/task", json=body)
    assert early.status_code == 400  # not completed yet
    assert early.json()["message"].startswith("input.origin_task_id: ")
    paused.advance(100)
    response = client.post("/api/v1/task", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["data"]["input"]["origin_task_id"] == origin
