"""What a run would cost, before it starts: priced as the run reserves, unknowns said."""

from __future__ import annotations

import csv
from decimal import Decimal
from pathlib import Path

import pytest

from klingflow.emulator import EmulatorServer
from klingflow.errors import InvalidRequestError, WorkflowInputError
from klingflow.workflows import estimate_run, load_workflow, load_workflow_text
from klingflow.workflows.records import RunStatus

from .harness import Harness

EXAMPLES = Path(__file__).parents[2] / "examples"


def rows() -> list[dict[str, str]]:
    with (EXAMPLES / "prompts.csv").open() as handle:
        return list(csv.DictReader(handle))


def test_the_estimate_is_what_the_run_then_spends(
    emulator: EmulatorServer, tmp_path: Path, api_key: str
) -> None:
    """A batch is priced item by item, and the run that follows spends exactly that."""
    workflow = load_workflow(EXAMPLES / "batch-from-csv.yaml")
    estimate = estimate_run(workflow, {"rows": rows()})
    assert [n.node_path for n in estimate.nodes] == [f"each[{i}].video" for i in range(5)]
    assert emulator.stats()["creates"] == 0
    harness = Harness(emulator=emulator, home=tmp_path, api_key=api_key)
    run = harness.run(workflow, {"rows": rows()})
    assert run.status == RunStatus.COMPLETED, run.message
    assert estimate.total_usd == run.spent_usd == Decimal("2.5")
    assert (estimate.unknown, estimate.over_budget) == (0, False)


def test_a_prompt_from_an_earlier_node_is_still_priced() -> None:
    """The chat model writes the prompt; the price does not depend on it, so it is known."""
    estimate = estimate_run(load_workflow(EXAMPLES / "ai-prompt.yaml"), {"idea": "a cat"})
    [film] = estimate.nodes
    assert (film.node_path, film.usd) == ("film", Decimal("0.5"))
    assert film.note == "its prompt comes from an earlier node"


def test_what_an_earlier_node_decides_is_unknown_not_guessed() -> None:
    """A duration or a loop's items read from an earlier output cannot be priced yet; an
    `if` false on the inputs leaves its node out; a budget the known part passes is said."""
    workflow = load_workflow_text(
        "name: later\nbudget_usd: 0.5\n"
        "inputs: {hd: {type: boolean, default: false}}\nnodes:\n"
        "  - {id: plan, type: set, with: {values: {seconds: 10, shots: [a, b]}}}\n"
        "  - {id: sized, type: kling.video,"
        " with: {prompt: x, duration: '{{ nodes.plan.output.seconds }}'}}\n"
        "  - {id: hd, type: kling.video, if: '{{ inputs.hd }}', with: {prompt: x, mode: pro}}\n"
        "  - {id: maybe, type: kling.video, if: '{{ nodes.plan.output.seconds > 5 }}',"
        " with: {prompt: x, duration: 10}}\n"
        "  - id: each\n    type: loop\n    with: {items: '{{ nodes.plan.output.shots }}'}\n"
        "    nodes:\n      - {id: shot, type: kling.video, with: {prompt: '{{ item }}'}}\n"
    )
    estimate = estimate_run(workflow, {})
    found = {n.node_path: (n.usd, n.note) for n in estimate.nodes}
    assert found == {
        "sized": (None, "its price depends on an earlier node"),
        "maybe": (Decimal("1.0"), "only if its `if` holds, which depends on an earlier node"),
        "each[*].shot": (None, "the loop's items depend on an earlier node"),
    }
    assert (estimate.total_usd, estimate.unknown, estimate.over_budget) == (Decimal(1), 2, True)
    assert "hd" in {n.node_path for n in estimate_run(workflow, {"hd": True}).nodes}


def test_bad_inputs_and_requests_are_refused_as_the_run_would_refuse_them() -> None:
    """Inputs that do not fit, or a request Kling would refuse, are errors, not prices."""
    seed = load_workflow(EXAMPLES / "seed-action.yaml")
    with pytest.raises(WorkflowInputError, match=r"inputs\.prompt"):
        estimate_run(seed, {})
    sized = load_workflow_text(
        "name: sized\ninputs: {seconds: {type: integer, required: true}}\nnodes:\n"
        "  - {id: clip, type: kling.video, with: {prompt: x, duration: '{{ inputs.seconds }}'}}\n"
    )
    assert estimate_run(sized, {"seconds": 10}).total_usd == 1
    with pytest.raises(InvalidRequestError, match="must be 3 to 15 seconds"):
        estimate_run(sized, {"seconds": 99})


def test_a_fixed_price_task_of_an_earlier_video_is_priced() -> None:
    """Extending the video an earlier node makes costs $0.26 whatever that video is."""
    estimate = estimate_run(
        load_workflow(EXAMPLES / "image-to-video-extend.yaml"),
        {"image_url": "https://example.com/first.png"},
    )
    found = {n.node_path: n.usd for n in estimate.nodes}
    assert found == {"animate": Decimal("0.46"), "extend": Decimal("0.26")}
    assert (estimate.total_usd, estimate.unknown) == (Decimal("0.72"), 0)
