"""`KlingRequest`: what every task request shares, and how it becomes PiAPI's body.

Building a request validates it: a broken rule raises `InvalidRequestError` listing every
problem, fields named as in the request body (`input.duration`), before any money is spent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Self

from pydantic import ValidationError, model_validator

from klingflow.errors import InvalidRequestError
from klingflow.piapi.kling.config import TaskConfig
from klingflow.piapi.kling.inputs import Resolution, Strict
from klingflow.problems import problems_from

__all__ = ["KlingRequest"]

_UNKNOWN_INPUT = "is not a known field for this task type"


class KlingRequest(Strict):
    """Base of every task request. Building one validates it; errors list every problem."""

    model: ClassVar[str] = "kling"
    task_type: ClassVar[str]
    input_aliases: ClassVar[frozenset[str]] = frozenset()
    """Input keys a validator turns into fields (the seed action's `model_name`)."""

    if not TYPE_CHECKING:  # hidden from mypy so the pydantic plugin keeps typed signatures

        def __init__(self, /, **data: Any) -> None:
            try:
                super().__init__(**data)
            except ValidationError as error:
                raise InvalidRequestError(
                    problems_from(error, prefix="input", unknown_field=_UNKNOWN_INPUT)
                ) from None

    @classmethod
    def from_input(cls, data: Mapping[str, Any]) -> Self:
        """Build from an `input` mapping (loose types such as "5s" allowed), as PiAPI would."""
        return cls(**data)

    @classmethod
    def input_names(cls) -> frozenset[str]:
        """Every `input` key this task type knows; PiAPI's gateway ignores the others."""
        names = {field.alias or name for name, field in cls.model_fields.items()}
        return frozenset(names | set(cls.model_fields) | cls.input_aliases)

    def sent_input_names(self) -> frozenset[str]:
        """The `input` keys (as in the body) the caller gave, not filled in by defaults."""
        fields = type(self).model_fields
        return frozenset(fields[name].alias or name for name in self.model_fields_set)

    @model_validator(mode="before")
    @classmethod
    def _drop_unset(cls, data: Any) -> Any:
        # Templates render a missing optional value as "" or None: both mean "not given".
        if isinstance(data, Mapping):
            return {k: v for k, v in data.items() if v is not None and v != ""}
        return data

    def to_input(self) -> dict[str, Any]:
        """The `input` object as PiAPI expects it (unset fields left out)."""
        return self.model_dump(mode="json", exclude_none=True)

    def to_body(self, config: TaskConfig | None = None) -> dict[str, Any]:
        """The whole create-task body."""
        body: dict[str, Any] = {
            "model": self.model,
            "task_type": self.task_type,
            "input": self.to_input(),
        }
        if config is not None:
            body["config"] = config.model_dump(mode="json", exclude_none=True)
        return body

    @property
    def duration_seconds(self) -> int:
        """Seconds of media the task produces (what per-second prices multiply)."""
        return 5

    @property
    def resolution(self) -> Resolution:
        """The output's resolution, which prices depend on (720p unless a mode says more)."""
        return "720p"

    @property
    def has_audio(self) -> bool:
        """Whether the output has sound, which prices depend on."""
        return False
