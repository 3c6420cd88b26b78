"""The client against the emulator where PiAPI's own clients found the two apart (issue 9)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from klingflow.emulator import EmulatorServer, FaultRule
from klingflow.piapi import (
    AccountInfo,
    AvatarRequest,
    EffectsRequest,
    InvalidRequestError,
    KlingOmniRequest,
    KlingRequest,
    KlingVideoRequest,
    SoundRequest,
    SubmitUncertainError,
    TaskStatus,
    TryOnRequest,
    WebhookConfig,
    WebhookDelivery,
)

from .adapter import Api, Receiver, eventually

IMAGE = "https://example.com/portrait.png"


@pytest.mark.parametrize(
    ("request_", "field", "value"),
    [
        pytest.param(
            EffectsRequest(image_url=IMAGE, effect="squish", version="2.6"), "version", "2.6",
            id="effects",
        ),
        pytest.param(SoundRequest(prompt="rain", version="2.6"), "version", "2.6", id="sound"),
        pytest.param(
            TryOnRequest(model_input=IMAGE, dress_input=IMAGE, version="2.6"), "version", "2.6",
            id="try-on",
        ),
        pytest.param(
            AvatarRequest(image_url=IMAGE, tts_text="hi", version="2.6"), "version", "2.6",
            id="avatar",
        ),
        pytest.param(KlingOmniRequest(prompt="a fox", mode="pro"), "mode", "pro", id="omni"),
    ],
)  # fmt: skip
def test_fields_piapis_official_client_sends_are_accepted_and_sent(
    api: Api, emulator: EmulatorServer, request_: KlingRequest, field: str, value: str
) -> None:
    """`version` on effects/sound/try-on/avatar and `mode` on omni reach PiAPI as given."""
    task = api.submit(request_)
    assert task.input[field] == value
    assert emulator.stats()["creates"] == 1


def test_a_classic_task_echoes_what_the_client_sent_and_a_public_service_mode(
    api: Api, emulator: EmulatorServer
) -> None:
    """A 2.1 task never shows `enable_audio`/`prefer_multi_shots`; no config reads "public"."""
    task = api.submit(KlingVideoRequest(version="2.1", prompt="a fox"))
    assert task.input == {
        "aspect_ratio": "16:9", "duration": 5, "mode": "std", "prompt": "a fox", "version": "2.1",
    }  # fmt: skip
    assert (task.config or {})["service_mode"] == "public"
    v3 = api.submit(KlingVideoRequest(prompt="a fox"))
    assert (v3.input["enable_audio"], v3.input["prefer_multi_shots"]) == (False, False)


def test_values_piapi_rejects_are_still_refused_before_sending() -> None:
    """Our validation keeps refusing bad values of the newly accepted fields, locally."""
    with pytest.raises(InvalidRequestError) as caught:
        KlingOmniRequest.from_input({"prompt": "a fox", "mode": "ultra"})
    assert [field for field, _ in caught.value.problems] == ["input.mode"]


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(
            {
                "id": "acc-1", "name": "studio", "plan": "creator", "type": "user",
                "is_enable": True, "equivalent_in_usd": 1.5,
                "credit_pack_info": {
                    "available_credits": 15_000_000, "used_credits": 5,
                    "total_credits": 20_000_000, "frozen_credits": 0, "expires_at": "x",
                },
            },
            id="current",
        ),
        pytest.param(
            {"account_name": "studio", "account_id": "acc-1", "credits": 15_000_000,
             "equivalent_in_usd": 1.5},
            id="older",
        ),
        pytest.param(
            {"account_name": "studio", "account_id": "acc-1", "remaining_credits": 15_000_000,
             "equivalent_in_usd": "1.5"},
            id="cli types",
        ),
    ],
)  # fmt: skip
def test_account_info_parses_either_shape(body: dict[str, Any]) -> None:
    """AccountInfo reads PiAPI's current and older `/account/info` shapes alike."""
    info = AccountInfo.model_validate(body)
    assert (info.account_id, info.account_name) == ("acc-1", "studio")
    assert info.credits == 15_000_000
    assert str(info.equivalent_in_usd) == "1.5"


def test_account_through_the_client_reads_the_per_key_balance(
    api: Api, emulator: EmulatorServer
) -> None:
    """The client's `account()` shows the key's balance fall by what the key reserved."""
    emulator.configure(balance_usd="2", time_scale=1e-6)
    api.submit(KlingVideoRequest(prompt="a fox", duration=5))  # reserves $0.50
    info = api.account()
    assert info.credits == 15_000_000
    assert info.credit_pack_info is not None
    assert info.credit_pack_info.frozen_credits == 5_000_000
    assert info.equivalent_in_usd == pytest.approx(1.5)


def test_the_watermarked_url_is_a_different_download(
    api: Api, emulator: EmulatorServer, tmp_path: Path
) -> None:
    """A classic task's `resource` and `resource_without_watermark` download two files."""
    task = api.submit(KlingVideoRequest(version="2.1", prompt="a fox"))
    done = api.wait(task.task_id)
    video = (done.output or {})["works"][0]["video"]
    clean = api.download(video["resource_without_watermark"], tmp_path / "clean.mp4")
    marked = api.download(video["resource"], tmp_path / "marked.mp4")
    assert done.video_url == video["resource_without_watermark"]
    assert clean.read_bytes() != marked.read_bytes()


def test_a_malformed_create_answer_before_the_handler_is_a_5xx_with_no_task(
    api: Api, emulator: EmulatorServer
) -> None:
    """The client cannot tell what a 5xx create did, so it says uncertain; nothing exists."""
    emulator.add_fault(FaultRule(action="malformed", method="POST", path="/api/v1/task"))
    with pytest.raises(SubmitUncertainError):
        api.submit(KlingVideoRequest(prompt="a fox"))
    assert (emulator.stats()["create_requests"], emulator.stats()["creates"]) == (1, 0)


def test_webhook_delivery_parses_the_wire_body(
    api: Api, emulator: EmulatorServer, receiver: Receiver
) -> None:
    """`WebhookDelivery.model_validate` takes the body PiAPI posts, `{"timestamp", "data"}`."""
    hook = WebhookConfig(endpoint=receiver.url, secret=receiver.secret)
    task = api.submit(KlingVideoRequest(prompt="a fox"), webhook=hook)
    assert eventually(lambda: len(receiver.bodies) == 1)
    wire = json.loads(receiver.bodies[0])
    assert set(wire) == {"timestamp", "data"}
    delivery = WebhookDelivery.model_validate(wire)
    assert (delivery.task.task_id, delivery.task.status) == (task.task_id, TaskStatus.COMPLETED)
    assert delivery == receiver.deliveries[0]  # what verify_webhook made of the same body
    by_name = WebhookDelivery.model_validate({"timestamp": wire["timestamp"], "task": wire["data"]})
    assert by_name == delivery
