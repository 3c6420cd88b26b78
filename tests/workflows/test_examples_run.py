"""Every example in examples/ runs to completion on the engine against the emulator."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import av
import pytest

from klingflow.emulator import EmulatorServer
from klingflow.workflows import load_workflow
from klingflow.workflows.records import RunStatus

from .harness import Harness

EXAMPLES = Path(__file__).parents[2] / "examples"


def prompts() -> list[dict[str, str]]:
    with (EXAMPLES / "prompts.csv").open() as handle:
        return list(csv.DictReader(handle))


PAYLOADS: dict[str, dict[str, Any]] = {
    "seed-action.yaml": {"prompt": "a red fox", "duration": "5s", "model_name": "Kling V1.6"},
    "batch-from-csv.yaml": {"rows": prompts()},
    "multi-shot-audio.yaml": {},
    "ai-prompt.yaml": {"idea": "a cat learning to surf"},
    "image-to-video-extend.yaml": {"image_url": "https://example.com/first-frame.png"},
}


def test_every_example_has_a_payload_here() -> None:
    """A new example cannot be added without being run by this module."""
    assert sorted(PAYLOADS) == sorted(p.name for p in EXAMPLES.glob("*.yaml"))


@pytest.mark.parametrize("name", sorted(PAYLOADS))
def test_example_runs_to_completion(harness: Harness, emulator: EmulatorServer, name: str) -> None:
    """The example completes, pays once per video, and its files are real MP4s."""
    run = harness.run(load_workflow(EXAMPLES / name), PAYLOADS[name])
    assert run.status == RunStatus.COMPLETED, run.message
    files = sorted(Path(run.output_dir).glob("*.mp4"))
    assert files, "every example keeps at least one video"
    for path in files:
        with av.open(str(path)) as container:
            assert container.streams.video
    creates = emulator.stats()["creates"]
    assert creates == len(emulator.tasks())
    assert run.spent_usd > 0


def test_ai_step_writes_the_prompt_the_video_uses(
    harness: Harness, emulator: EmulatorServer
) -> None:
    """The AI step's answer is the prompt of the Kling task, and a run output."""
    run = harness.run(load_workflow(EXAMPLES / "ai-prompt.yaml"), PAYLOADS["ai-prompt.yaml"])
    assert run.status == RunStatus.COMPLETED, run.message
    [task] = emulator.tasks()
    assert "cat" in run.outputs["prompt"]
    assert task["input"]["prompt"] == run.outputs["prompt"].strip()
    assert emulator.stats()["chat_requests"] == 1
    assert task["input"]["aspect_ratio"] == "9:16"


def test_multi_shot_example_has_audio_and_every_shot(harness: Harness) -> None:
    """The three shots of 4 + 4 + 5 s make one 13 s video with an audio track."""
    run = harness.run(load_workflow(EXAMPLES / "multi-shot-audio.yaml"))
    assert run.status == RunStatus.COMPLETED, run.message
    with av.open(run.outputs["path"]) as container:
        assert container.duration is not None
        assert round(container.duration / av.time_base) == 13
        assert len(container.streams.audio) == 1
    assert run.outputs["cost_usd"] == "2.6"


def test_extend_example_extends_the_first_video(harness: Harness, emulator: EmulatorServer) -> None:
    """The extend task names the first task as its origin; the kept clip is 5 s longer."""
    payload = PAYLOADS["image-to-video-extend.yaml"]
    run = harness.run(load_workflow(EXAMPLES / "image-to-video-extend.yaml"), payload)
    assert run.status == RunStatus.COMPLETED, run.message
    tasks = {t["task_type"]: t for t in emulator.tasks()}
    assert tasks["extend_video"]["input"]["origin_task_id"] == run.outputs["first_task_id"]
    [kept] = Path(run.output_dir).glob("*.mp4")
    with av.open(str(kept)) as container:
        assert container.duration is not None
        assert round(container.duration / av.time_base) == 10
