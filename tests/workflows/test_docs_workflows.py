"""docs/workflows.md: every workflow on the page is valid, and the page keeps up with the code."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from klingflow.cli._run_inputs import build_payloads, parse_input
from klingflow.cli.exit_codes import RUN_NOT_COMPLETED, exit_code_for
from klingflow.emulator import EmulatorServer
from klingflow.errors import (
    WorkflowDefinitionError,
    WorkflowInputError,
    WorkflowProblem,
)
from klingflow.piapi import KlingVideoRequest
from klingflow.settings import Settings
from klingflow.workflows import (
    NODE_TYPES,
    InputSpec,
    KlingVideoParams,
    PiAPITaskParams,
    ScheduleSpec,
    Workflow,
    WorkflowRetry,
    load_workflow_text,
)
from klingflow.workflows.records import RunStatus

from .harness import Harness

DOC = Path(__file__).parents[2] / "docs" / "workflows.md"
TEXT = DOC.read_text(encoding="utf-8")
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```$", re.DOTALL | re.MULTILINE)


def blocks(kind: str) -> list[str]:
    """The fenced code blocks of one language, in page order."""
    return [code for language, code in BLOCK.findall(TEXT) if language == kind]


def workflow_name(text: str) -> str:
    match = re.search(r'^\s*"?name"?:\s*"?([\w-]+)', text, re.MULTILINE)
    return match.group(1) if match else "unnamed"


YAML_WORKFLOWS = [code for code in blocks("yaml") if "name:" in code and "nodes:" in code]
JSON_WORKFLOWS = [code for code in blocks("json") if '"name"' in code and '"nodes"' in code]


def doc_workflow(name: str) -> Workflow:
    """The page's YAML workflow called `name`, loaded."""
    [text] = [code for code in YAML_WORKFLOWS if workflow_name(code) == name]
    return load_workflow_text(text, path=f"docs/workflows.md ({name})")


def test_the_page_shows_whole_workflows() -> None:
    """The extraction finds the page's nine YAML workflows and its JSON one, named apart."""
    names = [workflow_name(code) for code in YAML_WORKFLOWS]
    assert len(names) >= 9
    assert len(set(names)) == len(names)
    assert len(JSON_WORKFLOWS) >= 1


@pytest.mark.parametrize("text", YAML_WORKFLOWS, ids=workflow_name)
def test_every_yaml_workflow_in_the_doc_loads(text: str) -> None:
    """Each YAML workflow block loads and validates without a single problem."""
    workflow = load_workflow_text(text, path=f"docs/workflows.md ({workflow_name(text)})")
    assert workflow.name == workflow_name(text)


@pytest.mark.parametrize("text", JSON_WORKFLOWS, ids=workflow_name)
def test_every_json_workflow_in_the_doc_loads(text: str) -> None:
    """Each JSON workflow block loads as JSON (a `.json` path) without a problem."""
    workflow = load_workflow_text(text, path="docs-workflow.json")
    assert workflow.name == workflow_name(text)


def test_the_quick_start_runs_and_returns_the_seed_shape(
    harness: Harness, emulator: EmulatorServer
) -> None:
    """The quick start pays once, returns `{code, data: {status, task_id}}` and saves the file."""
    run = harness.run(doc_workflow("quick-start"), {"prompt": "a red fox in the snow"})
    assert run.status == RunStatus.COMPLETED, run.message
    assert emulator.stats()["creates"] == 1
    assert str(run.spent_usd) == "0.26"
    video = Path(run.outputs["video"])
    assert video.name == "a-red-fox-in-the-snow.mp4"
    assert video.parent == harness.settings().outputs_dir / run.run_id
    assert video.stat().st_size > 0
    runlog = harness.runlog()
    nodes = {node.node_id: node for node in runlog.nodes(run.run_id)}
    assert nodes["generate"].output == {
        "code": 200,
        "data": {"status": "pending", "task_id": run.outputs["task_id"]},
    }


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("duration=10s", "10s"),
        ("duration=5", 5),
        ('duration="5"', "5"),
        ("aspect_ratio=16:9", "16:9"),
        ("audio=true", True),
        ('tags=["a","b"]', ["a", "b"]),
        ("prompt=a red fox", "a red fox"),
    ],
)
def test_input_values_parse_as_documented(text: str, value: Any) -> None:
    """`-i KEY=VALUE` is JSON when it parses, else text."""
    assert parse_input(text)[1] == value


def test_csv_cells_are_text_and_do_not_fill_integer_inputs(tmp_path: Path) -> None:
    """A CSV column is a string, so an `integer` input fed from it is refused."""
    rows = tmp_path / "rows.csv"
    rows.write_text("prompt,duration\na red fox,5\n")
    [payload] = build_payloads(None, None, rows)
    workflow = doc_workflow("file-format")
    with pytest.raises(WorkflowInputError, match="must be an integer, got '5'"):
        workflow.resolve_inputs(payload)


def test_every_setting_is_documented() -> None:
    """Each `Settings` field has a row `| KLINGFLOW_<NAME> |` in the settings table."""
    for name in Settings.model_fields:
        assert f"| `KLINGFLOW_{name.upper()}` |" in TEXT, f"KLINGFLOW_{name.upper()}"


def test_every_file_key_is_documented() -> None:
    """Each key of a workflow, an input and a retry policy has a table row."""
    node_keys = ["id", "type", "with", "if", "retry", "nodes"]
    models: list[type[Workflow | InputSpec | WorkflowRetry | ScheduleSpec]] = [
        Workflow,
        InputSpec,
        WorkflowRetry,
        ScheduleSpec,
    ]
    keys = [name for model in models for name in model.model_fields] + node_keys
    for key in keys:
        assert f"| `{key}` |" in TEXT, key


def test_every_node_type_and_parameter_is_documented() -> None:
    """Each node type has a section, and each of its parameters is named on the page."""
    for node_type, node_class in NODE_TYPES.items():
        assert f"### `{node_type}`" in TEXT, node_type
        params = node_class.params_model
        names = [field.alias or name for name, field in params.model_fields.items()]
        if params is PiAPITaskParams:
            names += sorted(PiAPITaskParams.REQUEST_KEYS)
        if issubclass(params, KlingVideoParams):
            names += [*KlingVideoRequest.model_fields, "model_name"]
        for name in names:
            if name != "request":
                assert f"`{name}`" in TEXT, f"{node_type}: {name}"


def test_documented_exit_codes_match_the_cli() -> None:
    """The quick start's exit codes 15, 3 and 16 are the ones the CLI uses."""
    rows = dict(re.findall(r"^\| (\d+) \| (.+) \|$", TEXT, re.MULTILINE))
    assert "invalid" in rows["15"]
    assert exit_code_for(WorkflowDefinitionError([WorkflowProblem("bad")])) == 15
    assert "inputs" in rows["3"]
    assert exit_code_for(WorkflowInputError([("inputs.prompt", "is required")])) == 3
    assert "paused, crashed or was cancelled" in rows[str(RUN_NOT_COMPLETED)]


def test_the_schedule_problems_shown_are_what_validate_prints() -> None:
    """The Schedules section's problem lines come from breaking its example as described."""
    [shown] = [code for code in blocks("text") if "schedules[0].cron" in code]
    example = next(code for code in YAML_WORKFLOWS if workflow_name(code) == "daily-teaser")
    broken_shape = example.replace('"0 7 * * *"', '"0 25 * * *"').replace(
        "timezone: Europe/Berlin", "timezone: europe/berlin"
    )
    broken_payload = example.replace("duration: 10}", 'duration: "10"}')
    printed = []
    for text in (broken_shape, broken_payload):
        with pytest.raises(WorkflowDefinitionError) as caught:
            load_workflow_text(text, path="daily-teaser.yaml")
        printed += [str(problem) for problem in caught.value.problems]
    assert printed == shown.splitlines()
