"""Published workflows: each version kept by name and content hash (table `kf_workflows`).

Publishing the same text twice is a no-op; a changed text adds a version and becomes the
latest. Runs copy their workflow into the run log when they start, so a new version never
changes what an older run does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import sqlalchemy as sa

from klingflow.workflows.loading import load_workflow_text
from klingflow.workflows.spec import Workflow

__all__ = ["PublishedWorkflow", "WorkflowRegistry"]

metadata = sa.MetaData()

workflows = sa.Table(
    "kf_workflows",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("hash", sa.String(64), primary_key=True),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)


@dataclass(frozen=True)
class PublishedWorkflow:
    """One published version: its text as given, and when it was first published."""

    name: str
    hash: str
    source: str
    created_at: float

    def load(self) -> Workflow:
        """The workflow this text describes (it was valid when published)."""
        return load_workflow_text(self.source)


class WorkflowRegistry:
    """Reads and writes `kf_workflows` in the run database."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        metadata.create_all(engine)

    def publish(self, text: str) -> tuple[PublishedWorkflow, bool]:
        """Validate and store `text`: (version, created). Raises `WorkflowDefinitionError`."""
        workflow = load_workflow_text(text)
        existing = self.version(workflow.name, workflow.content_hash)
        if existing is not None:
            return existing, False
        values = {
            "name": workflow.name,
            "hash": workflow.content_hash,
            "source": text,
            "created_at": time.time(),
        }
        try:
            with self.engine.begin() as tx:
                tx.execute(workflows.insert().values(**values))
        except sa.exc.IntegrityError:  # published concurrently: the same version
            found = self.version(workflow.name, workflow.content_hash)
            assert found is not None
            return found, False
        return PublishedWorkflow(**values), True  # type: ignore[arg-type]

    def version(self, name: str, hash: str) -> PublishedWorkflow | None:
        query = workflows.select().where(workflows.c.name == name, workflows.c.hash == hash)
        with self.engine.connect() as c:
            row = c.execute(query).first()
        return None if row is None else _published(row)

    def versions(self, name: str) -> list[PublishedWorkflow]:
        """Every version of `name`, newest first."""
        query = (
            workflows.select()
            .where(workflows.c.name == name)
            .order_by(workflows.c.created_at.desc())
        )
        with self.engine.connect() as c:
            return [_published(row) for row in c.execute(query)]

    def latest(self, name: str) -> PublishedWorkflow | None:
        versions = self.versions(name)
        return versions[0] if versions else None

    def names(self) -> list[str]:
        """Every published workflow name, sorted."""
        query = sa.select(workflows.c.name).distinct().order_by(workflows.c.name)
        with self.engine.connect() as c:
            return [row.name for row in c.execute(query)]


def _published(row: sa.Row[object]) -> PublishedWorkflow:
    return PublishedWorkflow(
        name=row.name, hash=row.hash, source=row.source, created_at=row.created_at
    )
