"""The base of every model of a workflow file, and the error a cross-field rule raises.

Frozen, so a loaded workflow cannot change under a running engine; `extra="forbid"`, so a
misspelt key is reported (with a "did you mean") instead of being silently ignored.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic_core import PydanticCustomError

from klingflow.problems import RELATIVE_RULE

__all__ = ["Strict", "rule"]


class Strict(BaseModel):
    """A frozen model that refuses unknown keys and accepts fields by name or alias."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


def rule(field: str, message: str) -> PydanticCustomError:
    """A cross-field rule violation that names the field it is about, relative to the model
    raising it (`klingflow.problems` turns it into a problem)."""
    return PydanticCustomError(RELATIVE_RULE, "{message}", {"field": field, "message": message})
