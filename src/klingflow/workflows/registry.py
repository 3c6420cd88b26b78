"""Published workflows: each version kept by name and content hash (table `kf_workflows`).

Versions are ordered by when they were **last published** (`created_at`), and the newest is
the latest, the one the service runs by name and whose schedules fire:
- a text with a new content hash adds a version, which becomes the latest (`published`);
- the text of an older version makes that version the latest again (`republished`): its
  `created_at` moves to now, so reverting a file really reverts what runs and fires;
- the text of the latest version changes nothing (`unchanged`).

Runs copy their workflow into the run log when they start, so publishing never changes what
a started run does. `PublishedWorkflow.load()` parses through a bounded cache shared by the
process, as pages and the scheduler load the same few versions again and again.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

import sqlalchemy as sa

from klingflow.errors import WorkflowDefinitionError, WorkflowProblem
from klingflow.workflows.loading import load_workflow_text
from klingflow.workflows.schema import create_tables, workflows
from klingflow.workflows.spec import Workflow

__all__ = ["LOAD_CACHE_SIZE", "PublishOutcome", "PublishedWorkflow", "WorkflowRegistry"]

LOAD_CACHE_SIZE: Final = 256
"""How many parsed versions `PublishedWorkflow.load()` keeps (least recently used go first)."""
_ORDER_STEP_SECONDS: Final = 0.001  # the new latest is always after the old one, whatever the clock
_PUBLISH_ATTEMPTS: Final = 3  # a concurrent publish of the same new version makes ours conflict


class PublishOutcome(StrEnum):
    """What publishing a text did to its workflow's versions."""

    PUBLISHED = "published"
    """A new version, now the latest."""
    REPUBLISHED = "republished"
    """A version published before, the latest again (its `created_at` is now)."""
    UNCHANGED = "unchanged"
    """The latest version already: nothing was written."""


@dataclass(frozen=True)
class PublishedWorkflow:
    """One published version: its text as first given, and when it was last published.

    `created_at` (epoch seconds) orders the versions, and a version's schedules fire only
    ticks after it, so a republished version never fires ticks from before it came back.
    """

    name: str
    hash: str
    source: str
    created_at: float

    def load(self) -> Workflow:
        """The workflow this text describes (it was valid when published).

        Cached by text (`LOAD_CACHE_SIZE` versions): callers share the returned workflow and
        must not change it. Raises `WorkflowDefinitionError` when this klingflow no longer
        accepts the text; failures are not cached.
        """
        return _load_source(self.source)


@functools.lru_cache(maxsize=LOAD_CACHE_SIZE)
def _load_source(source: str) -> Workflow:
    return load_workflow_text(source)


class WorkflowRegistry:
    """Reads and writes `kf_workflows` in the run database."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        create_tables(engine)

    def publish(
        self, text: str, *, path: str | None = None
    ) -> tuple[PublishedWorkflow, PublishOutcome]:
        """Validate and store `text` (YAML or JSON): (version, outcome).

        `path` names the file in problems. Raises `WorkflowDefinitionError`.
        """
        [published] = self.publish_all([text], paths=[path])
        return published

    def publish_all(
        self, texts: Sequence[str], *, paths: Sequence[str | None] | None = None
    ) -> list[tuple[PublishedWorkflow, PublishOutcome]]:
        """Publish every text in one transaction, or none: (version, outcome) for each.

        All are validated first; when any is invalid, `WorkflowDefinitionError` lists the
        problems of every text (each named by its `paths` entry) and nothing is written.
        Texts are applied in order, so of two versions of one name the later is the latest.
        """
        names: Sequence[str | None] = [None] * len(texts) if paths is None else paths
        if len(names) != len(texts):
            raise ValueError("paths must name every text")
        loaded: list[tuple[Workflow, str]] = []
        problems: list[WorkflowProblem] = []
        for text, path in zip(texts, names, strict=True):
            try:
                loaded.append((load_workflow_text(text, path=path), text))
            except WorkflowDefinitionError as error:
                problems += error.problems
        if problems:
            raise WorkflowDefinitionError(problems)
        for attempt in range(1, _PUBLISH_ATTEMPTS + 1):
            try:
                with self.engine.begin() as tx:
                    return [_publish_one(tx, workflow, text) for workflow, text in loaded]
            except sa.exc.IntegrityError:
                # Another process inserted one of these versions after we looked: the whole
                # transaction rolled back, and the next attempt finds that version stored.
                if attempt == _PUBLISH_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    def version(self, name: str, hash: str) -> PublishedWorkflow | None:
        """The version of `name` with content hash `hash`, or None."""
        query = workflows.select().where(workflows.c.name == name, workflows.c.hash == hash)
        with self.engine.connect() as c:
            row = c.execute(query).first()
        return None if row is None else _published(row)

    def versions(self, name: str) -> list[PublishedWorkflow]:
        """Every version of `name`, the most recently published first."""
        query = workflows.select().where(workflows.c.name == name).order_by(*_NEWEST_FIRST)
        with self.engine.connect() as c:
            return [_published(row) for row in c.execute(query)]

    def latest(self, name: str) -> PublishedWorkflow | None:
        """The version of `name` published last, or None when it never was."""
        query = workflows.select().where(workflows.c.name == name).order_by(*_NEWEST_FIRST)
        with self.engine.connect() as c:
            row = c.execute(query.limit(1)).first()
        return None if row is None else _published(row)

    def latest_hash(self, name: str) -> str | None:
        """Only the latest version's hash: a cheap check that a version is still current."""
        query = sa.select(workflows.c.hash).where(workflows.c.name == name)
        with self.engine.connect() as c:
            found: str | None = c.execute(query.order_by(*_NEWEST_FIRST).limit(1)).scalar()
        return found

    def names(self) -> list[str]:
        """Every published workflow name, sorted."""
        query = sa.select(workflows.c.name).distinct().order_by(workflows.c.name)
        with self.engine.connect() as c:
            return [row.name for row in c.execute(query)]


_NEWEST_FIRST: Final = (workflows.c.created_at.desc(), workflows.c.hash.desc())


def _publish_one(
    tx: sa.Connection, workflow: Workflow, text: str
) -> tuple[PublishedWorkflow, PublishOutcome]:
    name, hash = workflow.name, workflow.content_hash
    of_name = workflows.c.name == name
    latest = tx.execute(
        sa.select(workflows.c.hash, workflows.c.created_at)
        .where(of_name)
        .order_by(*_NEWEST_FIRST)
        .limit(1)
    ).first()
    if latest is not None and latest.hash == hash:
        found = tx.execute(workflows.select().where(of_name, workflows.c.hash == hash)).one()
        return _published(found), PublishOutcome.UNCHANGED
    now = time.time()
    if latest is not None:  # after it, even when this clock is behind the one that wrote it
        now = max(now, latest.created_at + _ORDER_STEP_SECONDS)
    stored = tx.execute(
        sa.select(workflows.c.source).where(of_name, workflows.c.hash == hash)
    ).first()
    if stored is None:
        tx.execute(workflows.insert().values(name=name, hash=hash, source=text, created_at=now))
        return PublishedWorkflow(name, hash, text, now), PublishOutcome.PUBLISHED
    tx.execute(workflows.update().where(of_name, workflows.c.hash == hash).values(created_at=now))
    return PublishedWorkflow(name, hash, stored.source, now), PublishOutcome.REPUBLISHED


def _published(row: sa.Row[object]) -> PublishedWorkflow:
    return PublishedWorkflow(
        name=row.name, hash=row.hash, source=row.source, created_at=row.created_at
    )
