"""Durable workflows of Kling videos, described in YAML (or JSON) files.

```python
from klingflow.workflows import load_workflow, template_context

workflow = load_workflow("examples/seed-action.yaml")  # raises WorkflowDefinitionError
inputs = workflow.resolve_inputs({"prompt": "a red fox"})  # raises WorkflowInputError
context = template_context(trigger={"prompt": "a red fox"}, inputs=inputs, outputs={})
params = workflow.nodes[0].render_params(context)  # typed, e.g. KlingGenerateVideoParams
```

`spec` holds the workflow's models, `nodes` one module per node kind, `loading` reads files,
`templates` renders `{{ }}` in a sandbox, `validation` finds every problem before a run
spends anything, `estimate` prices a run before it starts, and `schedules` fires the
published workflows' cron schedules.
"""

import typing as _typing

# Loaded on first use (PEP 562), so that reading the run log (`klingflow runs show`, which
# imports `klingflow.workflows.records`) does not pay for every node kind and the templates.
if _typing.TYPE_CHECKING:
    from klingflow.workflows.estimate import NodeEstimate, RunEstimate, estimate_run
    from klingflow.workflows.loading import load_workflow, load_workflow_text
    from klingflow.workflows.nodes import NODE_TYPES, BodyNodeSpec, NodeSpec
    from klingflow.workflows.nodes.ai_chat import AIChatNode, AIChatParams, ChatMessage
    from klingflow.workflows.nodes.base import NodeParams
    from klingflow.workflows.nodes.download import DownloadNode, DownloadParams
    from klingflow.workflows.nodes.http_request import HTTPRequestNode, HTTPRequestParams
    from klingflow.workflows.nodes.kling_generate_video import (
        KlingGenerateVideoNode,
        KlingGenerateVideoParams,
    )
    from klingflow.workflows.nodes.kling_video import KlingVideoNode, KlingVideoParams
    from klingflow.workflows.nodes.kling_wait import KlingWaitNode, KlingWaitParams
    from klingflow.workflows.nodes.loop import LoopNode, LoopParams
    from klingflow.workflows.nodes.piapi_task import PiAPITaskNode, PiAPITaskParams
    from klingflow.workflows.nodes.set import SetNode, SetParams
    from klingflow.workflows.retries import WorkflowRetry
    from klingflow.workflows.spec import InputSpec, ScheduleSpec, Workflow
    from klingflow.workflows.templates import (
        is_template,
        references,
        render,
        template_context,
    )
    from klingflow.workflows.validation import validate_workflow

_HOMES = {
    "klingflow.workflows.estimate": ("NodeEstimate", "RunEstimate", "estimate_run"),
    "klingflow.workflows.loading": ("load_workflow", "load_workflow_text"),
    "klingflow.workflows.nodes": ("NODE_TYPES", "BodyNodeSpec", "NodeSpec"),
    "klingflow.workflows.nodes.ai_chat": ("AIChatNode", "AIChatParams", "ChatMessage"),
    "klingflow.workflows.nodes.base": ("NodeParams",),
    "klingflow.workflows.nodes.download": ("DownloadNode", "DownloadParams"),
    "klingflow.workflows.nodes.http_request": ("HTTPRequestNode", "HTTPRequestParams"),
    "klingflow.workflows.nodes.kling_generate_video": (
        "KlingGenerateVideoNode",
        "KlingGenerateVideoParams",
    ),
    "klingflow.workflows.nodes.kling_video": ("KlingVideoNode", "KlingVideoParams"),
    "klingflow.workflows.nodes.kling_wait": ("KlingWaitNode", "KlingWaitParams"),
    "klingflow.workflows.nodes.loop": ("LoopNode", "LoopParams"),
    "klingflow.workflows.nodes.piapi_task": ("PiAPITaskNode", "PiAPITaskParams"),
    "klingflow.workflows.nodes.set": ("SetNode", "SetParams"),
    "klingflow.workflows.retries": ("WorkflowRetry",),
    "klingflow.workflows.spec": ("InputSpec", "ScheduleSpec", "Workflow"),
    "klingflow.workflows.templates": ("is_template", "references", "render", "template_context"),
    "klingflow.workflows.validation": ("validate_workflow",),
}

_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}

__all__ = [
    "NODE_TYPES",
    "AIChatNode",
    "AIChatParams",
    "BodyNodeSpec",
    "ChatMessage",
    "DownloadNode",
    "DownloadParams",
    "HTTPRequestNode",
    "HTTPRequestParams",
    "InputSpec",
    "KlingGenerateVideoNode",
    "KlingGenerateVideoParams",
    "KlingVideoNode",
    "KlingVideoParams",
    "KlingWaitNode",
    "KlingWaitParams",
    "LoopNode",
    "LoopParams",
    "NodeEstimate",
    "NodeParams",
    "NodeSpec",
    "PiAPITaskNode",
    "PiAPITaskParams",
    "RunEstimate",
    "ScheduleSpec",
    "SetNode",
    "SetParams",
    "Workflow",
    "WorkflowRetry",
    "estimate_run",
    "is_template",
    "load_workflow",
    "load_workflow_text",
    "references",
    "render",
    "template_context",
    "validate_workflow",
]


def __getattr__(name: str) -> _typing.Any:
    import importlib

    if name not in _HOME_OF:
        raise AttributeError(f"module 'klingflow.workflows' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOME_OF[name]), name)
    globals()[name] = value  # once loaded, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
