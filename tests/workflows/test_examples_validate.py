"""Every workflow in examples/ is valid, and renders into the requests it promises."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from klingflow.piapi import ExtendVideoRequest
from klingflow.workflows import (
    KlingGenerateVideoNode,
    KlingVideoNode,
    LoopNode,
    PiAPITaskNode,
    load_workflow,
    template_context,
)

EXAMPLES = Path(__file__).parents[2] / "examples"
WORKFLOW_FILES = sorted(EXAMPLES.glob("*.yaml"))


def test_the_examples_folder_has_the_documented_workflows() -> None:
    """The five documented examples exist."""
    names = {path.name for path in WORKFLOW_FILES}
    assert {
        "seed-action.yaml",
        "batch-from-csv.yaml",
        "multi-shot-audio.yaml",
        "ai-prompt.yaml",
        "image-to-video-extend.yaml",
    } <= names


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda path: path.name)
def test_example_workflow_is_valid(path: Path) -> None:
    """Each example loads without a single problem."""
    workflow = load_workflow(path)
    assert workflow.node_count >= 1
    assert len(workflow.content_hash) == 64


def test_seed_action_renders_the_seed_sample_request() -> None:
    """The seed's sample trigger becomes a Kling V2.1 request with the seed's fields."""
    workflow = load_workflow(EXAMPLES / "seed-action.yaml")
    trigger = {"prompt": "a red fox", "duration": "10s", "model_name": "Kling V1.6"}
    inputs = workflow.resolve_inputs(trigger)
    node = workflow.nodes[0]
    assert isinstance(node, KlingGenerateVideoNode)
    params = node.render_params(template_context(trigger=trigger, inputs=inputs, outputs={}))
    assert params.request.prompt == "a red fox"
    assert params.request.version == "1.6"
    assert params.request.duration == 10
    assert params.request.aspect_ratio == "16:9"


def test_seed_action_wait_reads_the_task_id_of_the_seed_return_shape() -> None:
    """`kling.wait` takes the task id from the seed's `{code, data: {task_id}}` output."""
    workflow = load_workflow(EXAMPLES / "seed-action.yaml")
    context = template_context(
        trigger={"prompt": "x"},
        inputs=workflow.resolve_inputs({"prompt": "x"}),
        outputs={"generate": {"code": 200, "data": {"status": "pending", "task_id": "task_abc"}}},
    )
    wait = workflow.node("wait")
    assert wait.render_params(context).model_dump() == {
        "task_id": "task_abc",
        "deadline_seconds": 1800.0,
    }


def test_batch_example_renders_one_named_request_per_csv_row() -> None:
    """Each row of prompts.csv gives a request with its prompt and a numbered file name."""
    workflow = load_workflow(EXAMPLES / "batch-from-csv.yaml")
    with (EXAMPLES / "prompts.csv").open(newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 5
    inputs = workflow.resolve_inputs({"rows": rows})
    loop = workflow.nodes[0]
    assert isinstance(loop, LoopNode)
    context = template_context(trigger={"rows": rows}, inputs=inputs, outputs={})
    loop_params = loop.render_params(context)
    assert loop_params.items == rows
    assert loop_params.concurrency == 5
    video = loop.nodes[0]
    assert isinstance(video, KlingVideoNode)
    names = []
    for index, row in enumerate(loop_params.items):
        item_context = template_context(
            trigger={}, inputs=inputs, outputs={}, item=row, index=index, length=len(rows)
        )
        params = video.render_params(item_context)
        assert params.request.prompt == row["prompt"]
        names.append(params.name)
    assert names[0] == "1-red-fox.mp4"
    assert names[-1] == "5-mars-garden.mp4"
    assert workflow.budget_usd is not None
    assert workflow.retry_for(video).attempts == 5


def test_image_to_video_example_extends_the_first_task() -> None:
    """The extend node builds an extend_video request from the first node's task id."""
    workflow = load_workflow(EXAMPLES / "image-to-video-extend.yaml")
    trigger = {"image_url": "https://example.com/leaf.png"}
    inputs = workflow.resolve_inputs(trigger)
    extend = workflow.node("extend")
    assert isinstance(extend, PiAPITaskNode)
    context = template_context(
        trigger=trigger, inputs=inputs, outputs={"animate": {"task_id": "task_1"}}
    )
    params = extend.render_params(context)
    assert isinstance(params.request, ExtendVideoRequest)
    assert params.request.origin_task_id == "task_1"
    assert params.wait is True


def test_multi_shot_example_is_a_kling_3_request_with_audio() -> None:
    """Three literal shots with audio make one 13-second Kling 3.0 request."""
    workflow = load_workflow(EXAMPLES / "multi-shot-audio.yaml")
    inputs = workflow.resolve_inputs({})
    scene = workflow.node("scene")
    assert isinstance(scene, KlingVideoNode)
    params = scene.render_params(template_context(trigger={}, inputs=inputs, outputs={}))
    assert params.request.version == "3.0"
    assert params.request.enable_audio
    assert params.request.duration_seconds == 13
    assert params.request.multi_shots is not None
    assert "old lighthouse keeper" in params.request.multi_shots[0].prompt


def test_ai_prompt_example_films_what_the_chat_wrote() -> None:
    """The chat node's text, trimmed, becomes the Kling prompt."""
    workflow = load_workflow(EXAMPLES / "ai-prompt.yaml")
    inputs = workflow.resolve_inputs({"idea": "a cat learning to surf"})
    context = template_context(
        trigger={}, inputs=inputs, outputs={"write": {"text": "  A tabby on a board.  "}}
    )
    film = workflow.node("film")
    assert isinstance(film, KlingVideoNode)
    params = film.render_params(context)
    assert params.request.prompt == "A tabby on a board."
    assert params.name == "a-cat-learning-to-surf.mp4"
