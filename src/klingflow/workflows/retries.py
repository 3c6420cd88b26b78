"""How a node retries after a retryable error: the workflow's policy, a loop's and a node's.

Its own module because both the workflow (`retry:` at the top) and every node (`retry:` on
the node) carry one, and the node kinds must not import the workflow model.
"""

from __future__ import annotations

from pydantic import Field

from klingflow.workflows._strict import Strict

__all__ = ["WorkflowRetry"]


class WorkflowRetry(Strict):
    """How a node retries after a retryable error: capped exponential backoff.

    The pause after failed attempt n is `min(max_delay_seconds, initial_delay_seconds *
    factor ** (n - 1))`. Only errors whose `retryable` flag is set are retried; a generation
    that PiAPI reports as failed is resubmitted (and paid again) only with
    `retry_failed_generations: true`. A node's own `retry:` overrides the fields it sets.
    """

    attempts: int = Field(default=3, ge=1, le=5)
    initial_delay_seconds: float = Field(default=2.0, ge=0, le=3600)
    factor: float = Field(default=2.0, ge=1, le=10)
    max_delay_seconds: float = Field(default=60.0, ge=0, le=3600)
    retry_failed_generations: bool = False

    def delay_seconds(self, attempt: int) -> float:
        """Seconds to wait after failed attempt `attempt` (1-based) before the next one."""
        return min(
            self.max_delay_seconds, self.initial_delay_seconds * self.factor ** (attempt - 1)
        )

    def merged(self, override: WorkflowRetry | None) -> WorkflowRetry:
        """This policy with the fields `override` set explicitly replaced."""
        if override is None:
            return self
        return self.model_copy(
            update={name: getattr(override, name) for name in override.model_fields_set}
        )
