"""The workflow editor's checks: a draft's problems with their lines, its graph, its price.

The editor page checks the text as it is typed (and again when the form is posted without
JavaScript): the same `load_workflow_text` that `klingflow validate` and publishing use, so
the editor never says yes to a file that publishing would refuse. Sample inputs (JSON) price
one run of the draft, as the start form's Estimate does. Nothing is stored until Publish.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from typing import Any

from klingflow.errors import InvalidRequestError, WorkflowDefinitionError, WorkflowProblem
from klingflow.piapi.pricing import PriceTable
from klingflow.redaction import MASK, redact_values
from klingflow.service.graph import GraphLayout
from klingflow.service.views import workflow_graph
from klingflow.workflows.estimate import RunEstimate, estimate_run
from klingflow.workflows.loading import load_workflow_text
from klingflow.workflows.spec import Workflow

__all__ = [
    "MAX_DRAFT_BYTES",
    "SNIPPETS",
    "STARTER",
    "DraftCheck",
    "Snippet",
    "check_draft",
    "restore_secrets",
    "sample_inputs",
    "stray_mask_problems",
]

MAX_DRAFT_BYTES = 1024 * 1024
"""As the API's publish endpoint: a workflow is at most 1 MB."""


@dataclass(frozen=True)
class Snippet:
    """A node to insert at the cursor, indented as an item of `nodes:`."""

    key: str
    label: str
    text: str


SNIPPETS = [
    Snippet(
        "seed",
        "PiAPI Kling Generate Video (the seed's action)",
        """\
  - id: generate                # returns {code, data: {status, task_id}} at once
    type: kling.generate_video
    with:
      prompt: "{{ inputs.prompt }}"
      duration: 5s
      model_name: Kling V2.1
      aspect_ratio: "16:9"
  - id: wait
    type: kling.wait
    with:
      task_id: "{{ nodes.generate.output.data.task_id }}"
  - id: save
    type: download
    if: "{{ nodes.wait.output.video_url is not none }}"
    with:
      url: "{{ nodes.wait.output.video_url }}"
""",
    ),
    Snippet(
        "video",
        "Kling video (submit, wait, download)",
        """\
  - id: clip
    type: kling.video
    with:
      prompt: "{{ inputs.prompt }}"
      duration: 5
      aspect_ratio: "16:9"
""",
    ),
    Snippet(
        "loop",
        "Loop over rows (one video each)",
        """\
  - id: each
    type: loop
    with:
      items: "{{ inputs.rows }}"
      concurrency: 5
    nodes:
      - id: video
        type: kling.video
        with:
          prompt: "{{ item.prompt }}"
          name: "{{ loop.number }}.mp4"
""",
    ),
    Snippet(
        "http",
        "HTTP request",
        """\
  - id: notify
    type: http.request
    with:
      method: POST
      url: https://example.com/hook
      json: {text: "done"}
""",
    ),
    Snippet(
        "set",
        "Set values",
        """\
  - id: result
    type: set
    with:
      values: {note: "{{ inputs.prompt }}"}
""",
    ),
]

STARTER = """\
name: my-video
description: One Kling clip from a prompt
inputs:
  prompt: {type: string, required: true, description: What happens in the clip}
nodes:
  - id: clip
    type: kling.video
    with:
      prompt: "{{ inputs.prompt }}"
      duration: 5
      aspect_ratio: "16:9"
"""
"""What a new workflow starts from: the smallest useful file."""


@dataclass(frozen=True)
class DraftCheck:
    """What the editor shows for a draft: problems (with lines), or its graph and price."""

    problems: list[WorkflowProblem] = field(default_factory=list)
    workflow: Workflow | None = None
    flow: GraphLayout | None = None
    estimate: RunEstimate | str | None = None

    @property
    def problem_lines(self) -> list[int]:
        """The lines with a problem, each once, for the editor's gutter marks."""
        return sorted({p.line for p in self.problems if p.line is not None})


_SAMPLE_BY_TYPE: dict[str, Any] = {
    "string": "a sample",
    "integer": 1,
    "number": 1.0,
    "boolean": False,
    "array": [],
    "object": {},
}


def sample_inputs(workflow: Workflow) -> dict[str, Any]:
    """Inputs to price a draft with: defaults, the first choice of an enum, else a stand-in
    (a `rows` array gets one row with a prompt, so a loop is priced for one item)."""
    sample: dict[str, Any] = {}
    for name, spec in workflow.inputs.items():
        if spec.has_default:
            sample[name] = spec.default
        elif spec.enum:
            sample[name] = spec.enum[0]
        elif spec.type == "array":
            sample[name] = [{"prompt": "a sample prompt"}]
        else:
            sample[name] = _SAMPLE_BY_TYPE[spec.type]
    return sample


def check_draft(text: str, sample_text: str, *, prices: PriceTable) -> DraftCheck:
    """The draft's problems, or its workflow, graph and the estimate of one run with the
    sample inputs (JSON; empty: `sample_inputs`)."""
    if len(text.encode()) > MAX_DRAFT_BYTES:
        return DraftCheck([WorkflowProblem(f"is over {MAX_DRAFT_BYTES // 2**20} MB")])
    try:
        workflow = load_workflow_text(text)
    except WorkflowDefinitionError as error:
        return DraftCheck(error.problems)
    estimate: RunEstimate | str
    try:
        sample = json.loads(sample_text) if sample_text.strip() else sample_inputs(workflow)
        if not isinstance(sample, dict):
            raise ValueError("the sample inputs must be a JSON object")
        estimate = estimate_run(workflow, sample, prices=prices)
    except (ValueError, InvalidRequestError) as error:  # JSON, or inputs that do not fit
        estimate = f"cannot price these sample inputs: {error}"
    return DraftCheck([], workflow, workflow_graph(workflow), estimate)


def restore_secrets(draft: str, published: str, secrets: tuple[str, ...]) -> tuple[str, list[int]]:
    """`draft`, as posted from the editor of `published`, with its secrets put back.

    Pages show a known secret written into a workflow file as `***`, so the editor's text
    has `***` where the file has the key; published as posted, the key would be lost. Every
    line the draft kept from the masked view gets its published text back; a line the user
    changed keeps what was typed. Returns the text, and the (1-based) lines of the draft
    that still hold `***` while the published file had a secret masked: publishing those
    would store the mask in place of the secret, so the editor refuses them.
    """
    shown = redact_values(published, secrets)
    if shown == published:
        return draft, []
    original, masked, lines = published.split("\n"), shown.split("\n"), draft.split("\n")
    if len(original) != len(masked):  # a secret spanning lines: keep the draft as it is
        return draft, [n for n, line in enumerate(lines, 1) if MASK in line]
    restored: list[str] = []
    stray: list[int] = []
    matcher = difflib.SequenceMatcher(a=masked, b=lines, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            restored += original[i1:i2]
            continue
        restored += lines[j1:j2]
        stray += [j + 1 for j in range(j1, j2) if MASK in lines[j]]
    return "\n".join(restored), stray


def stray_mask_problems(lines: list[int]) -> list[WorkflowProblem]:
    """The editor's refusal of lines that would publish `***` in place of a secret."""
    return [
        WorkflowProblem(
            f"holds {MASK} where the published file has a secret (pages mask it): type the "
            "secret again, or leave the line as it was and it is kept",
            line=line,
        )
        for line in lines
    ]
