"""PiAPI and AsyncPiAPI against the emulator: every task type, cancel, account, config."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from klingflow.emulator import EmulatorServer
from klingflow.piapi import (
    AsyncPiAPI,
    AvatarRequest,
    EffectsRequest,
    Element,
    ExtendVideoRequest,
    InvalidRequestError,
    KlingOmniRequest,
    KlingRequest,
    KlingTurboRequest,
    KlingVideoRequest,
    LipSyncRequest,
    MotionControlRequest,
    PiAPI,
    Shot,
    SoundRequest,
    Task,
    TaskFailedError,
    TaskNotFoundError,
    TaskStatus,
    TryOnRequest,
    estimate_cost,
)

from .adapter import Api

IMAGE = "https://example.com/portrait.png"

STANDALONE = [
    pytest.param(KlingVideoRequest(prompt="a red fox in snow", duration=3), True, id="video-3.0"),
    pytest.param(
        KlingVideoRequest(
            multi_shots=[Shot(prompt="dawn", duration=2), Shot(prompt="dusk", duration=2)]
        ),
        True,
        id="video-3.0-multi-shot",
    ),
    pytest.param(KlingVideoRequest(version="2.1", image_url=IMAGE), True, id="video-2.1-image"),
    pytest.param(
        KlingVideoRequest(version="1.6", prompt="p", elements=[Element(image_url=IMAGE)]),
        True,
        id="video-1.6-elements",
    ),
    pytest.param(KlingTurboRequest(prompt="a fast car"), True, id="turbo-2.5"),
    pytest.param(
        KlingOmniRequest(prompt="@image_1 waves", images=[IMAGE], duration=3), True, id="omni-3.0"
    ),
    pytest.param(EffectsRequest(image_url=IMAGE, effect="squish"), True, id="effects"),
    pytest.param(
        MotionControlRequest(image_url=IMAGE, preset_motion="Heart Gesture Dance"),
        True,
        id="motion-control",
    ),
    pytest.param(AvatarRequest(image_url=IMAGE, tts_text="hello there"), True, id="avatar"),
    pytest.param(SoundRequest(prompt="rain on a tin roof", duration=5), False, id="sound"),
    pytest.param(
        TryOnRequest(model_input=IMAGE, dress_input=IMAGE, batch_size=2), False, id="try-on"
    ),
]


@pytest.mark.parametrize(("request_", "is_video"), STANDALONE)
def test_every_task_type_completes_with_its_output(
    api: Api, request_: KlingRequest, is_video: bool
) -> None:
    """Each task type goes submit -> wait -> completed and shows its output files."""
    task = api.submit(request_)
    assert task.status in (TaskStatus.PENDING, TaskStatus.STAGED)
    assert task.task_type == request_.task_type
    done = api.wait(task.task_id)
    assert done.status is TaskStatus.COMPLETED
    assert done.output_urls
    if is_video:
        assert done.video_url is not None
        assert done.video_url.endswith(".mp4")


@pytest.mark.parametrize(
    "follow_up",
    [
        ExtendVideoRequest(origin_task_id="{origin}", prompt="and then it snows"),
        LipSyncRequest(origin_task_id="{origin}", tts_text="hello"),
        SoundRequest(origin_task_id="{origin}"),
    ],
    ids=["extend", "lip-sync", "sound-for-video"],
)
def test_follow_up_task_types_complete_on_an_earlier_video(
    api: Api, follow_up: KlingRequest
) -> None:
    """Extend, lip sync and sound run on a finished video of the same key."""
    origin = api.wait(api.submit(KlingVideoRequest(prompt="a fox", duration=5)).task_id)
    request = follow_up.model_copy(update={"origin_task_id": origin.task_id})
    done = api.wait(api.submit(request).task_id)
    assert done.status is TaskStatus.COMPLETED
    assert done.output_urls


def test_raw_dict_body_is_validated_and_submitted(api: Api, emulator: EmulatorServer) -> None:
    """A raw `{model, task_type, input}` body is accepted, loose types ("5s") included."""
    body = {
        "model": "kling",
        "task_type": "video_generation",
        "input": {"prompt": "a boat", "duration": "5s", "model_name": "Kling V2.1"},
    }
    task = api.submit(body)
    assert task.input["version"] == "2.1"
    assert task.input["duration"] == 5
    assert emulator.stats()["creates"] == 1


def test_failed_task_raises_task_failed_error_with_its_reason(
    api: Api, emulator: EmulatorServer
) -> None:
    """A task that fails at PiAPI ends the wait with TaskFailedError carrying PiAPI's reason."""
    emulator.configure(fail_probability=1.0)
    task = api.submit(KlingVideoRequest(prompt="doomed"))
    with pytest.raises(TaskFailedError) as caught:
        api.wait(task.task_id)
    assert caught.value.task.status is TaskStatus.FAILED
    assert "failed to generate video" in str(caught.value)
    assert task.task_id in str(caught.value)


def test_failed_task_is_returned_when_raise_on_failure_is_false(
    api: Api, emulator: EmulatorServer
) -> None:
    """`raise_on_failure=False` returns the failed task instead of raising."""
    emulator.configure(fail_probability=1.0)
    task = api.submit(KlingVideoRequest(prompt="doomed"))
    done = api.wait(task.task_id, raise_on_failure=False)
    assert done.status is TaskStatus.FAILED
    assert done.error.is_error


def test_cancel_stops_a_pending_task(api: Api, emulator: EmulatorServer) -> None:
    """Cancelling a pending task returns it terminal, and waiting on it raises TaskFailedError."""
    emulator.configure(pending_seconds=10_000)
    task = api.submit(KlingVideoRequest(prompt="never mind"))
    cancelled = api.cancel(task.task_id)
    assert cancelled.is_terminal
    assert emulator.stats()["cancels"] == 1
    with pytest.raises(TaskFailedError, match="cancelled"):
        api.wait(task.task_id)


def test_cancel_of_a_finished_task_returns_it_unchanged(api: Api) -> None:
    """Cancel is idempotent on terminal tasks: a completed task comes back as it is."""
    done = api.wait(api.submit(KlingVideoRequest(prompt="quick")).task_id)
    assert api.cancel(done.task_id).status is TaskStatus.COMPLETED


def test_get_of_an_unknown_task_raises_task_not_found(api: Api) -> None:
    """An unknown task id maps to TaskNotFoundError (404) naming the id."""
    with pytest.raises(TaskNotFoundError, match="no-such-task"):
        api.get("no-such-task")


def test_account_and_active_tasks_are_read(api: Api, emulator: EmulatorServer) -> None:
    """Account info and per-provider active task counts parse, extra fields kept."""
    emulator.configure(balance_usd="10", pending_seconds=10_000)
    api.submit(KlingVideoRequest(prompt="one"))
    info = api.account()
    assert info.account_name == "klingflow-emulator"
    assert info.equivalent_in_usd is not None
    assert info.equivalent_in_usd < Decimal(10)
    assert "spent_usd" in (info.model_extra or {})
    counts = api.active_tasks()
    assert counts["kling"].pending_count == 1
    assert counts["kling"].active_tasks == 1


def test_generate_submits_waits_and_downloads(api: Api, tmp_path: Path) -> None:
    """`generate` returns the completed task and the downloaded MP4 inside the folder."""
    progress: list[TaskStatus] = []
    task, path = api.generate(
        KlingVideoRequest(prompt="a lighthouse", duration=3),
        tmp_path,
        on_progress=lambda t: progress.append(t.status),
    )
    assert task.status is TaskStatus.COMPLETED
    assert path.parent == tmp_path
    assert path.name == f"{task.task_id}.mp4"
    assert path.read_bytes()[4:8] == b"ftyp"  # an MP4 container
    assert progress[-1] is TaskStatus.COMPLETED


def test_estimate_cost_matches_pricing_and_sends_nothing(
    emulator: EmulatorServer, api_key: str
) -> None:
    """The client's estimate is pricing.estimate_cost, for typed and raw requests alike."""
    request = KlingVideoRequest(prompt="p", duration=10, mode="pro", enable_audio=True)
    with PiAPI(api_key=api_key, base_url=emulator.url) as client:
        assert client.estimate_cost(request) == estimate_cost(request) == Decimal("2.00")
        assert client.estimate_cost(request.to_body()) == Decimal("2.00")
        with pytest.raises(InvalidRequestError):
            client.estimate_cost({"model": "kling", "task_type": "video_generation", "input": {}})
    assert emulator.stats()["gets"] == 0


def test_client_reads_key_and_url_from_the_environment(
    emulator: EmulatorServer, api_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PIAPI_API_KEY and PIAPI_BASE_URL configure a client built with no arguments."""
    monkeypatch.setenv("PIAPI_API_KEY", api_key)
    monkeypatch.setenv("PIAPI_BASE_URL", emulator.url)
    with PiAPI() as client:
        assert client.base_url == emulator.url
        assert client.account().account_name == "klingflow-emulator"
    assert client.is_closed


def test_client_without_a_key_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """No key anywhere is a configuration mistake reported at construction."""
    monkeypatch.delenv("PIAPI_API_KEY", raising=False)
    with pytest.raises(ValueError, match="PIAPI_API_KEY"):
        PiAPI()


def test_default_base_url_is_piapi(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without PIAPI_BASE_URL the client talks to https://api.piapi.ai."""
    monkeypatch.delenv("PIAPI_BASE_URL", raising=False)
    client = PiAPI(api_key="k")
    assert client.base_url == "https://api.piapi.ai"
    client.close()


def test_async_client_is_an_async_context_manager(emulator: EmulatorServer, api_key: str) -> None:
    """`async with AsyncPiAPI()` opens and closes the client."""

    async def main() -> tuple[str, bool]:
        async with AsyncPiAPI(api_key=api_key, base_url=emulator.url) as client:
            info = await client.account()
        return info.account_name, client.is_closed

    assert asyncio.run(main()) == ("klingflow-emulator", True)


def test_both_clients_offer_the_same_methods() -> None:
    """PiAPI and AsyncPiAPI have the same public method names, except close/aclose."""

    def names(cls: type[Any]) -> set[str]:
        return {n for n in dir(cls) if not n.startswith("_")} - {"close", "aclose"}

    assert names(PiAPI) == names(AsyncPiAPI)
    for name in ("submit", "get", "wait", "cancel", "account", "active_tasks", "download"):
        assert asyncio.iscoroutinefunction(getattr(AsyncPiAPI, name))
    assert asyncio.iscoroutinefunction(AsyncPiAPI.generate)


def test_per_call_timeout_applies_to_one_request(
    make_api: Callable[..., Api], emulator: EmulatorServer
) -> None:
    """A per-call `timeout_seconds` overrides the client's for that call only."""
    from klingflow.emulator import FaultRule
    from klingflow.piapi import PiAPITimeoutError

    api = make_api(timeout_seconds=5.0)
    emulator.add_fault(FaultRule(action="slow", path="/account/info", delay_seconds=0.3, times=1))
    with pytest.raises(PiAPITimeoutError):
        api.account(timeout_seconds=0.05, max_retries=0)
    assert api.account().account_name  # the client's own 5 s timeout is untouched


def test_task_is_a_task_model(api: Api) -> None:
    """Submit returns a `Task` model with usage reserved (`frozen`) for point-priced tasks."""
    task = api.submit(KlingVideoRequest(prompt="p", duration=5))
    assert isinstance(task, Task)
    assert task.meta.usage.frozen == 5_000_000  # 5 s x $0.10 at 1e7 points per USD
