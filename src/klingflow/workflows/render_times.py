"""Render times kept in KLINGFLOW_HOME, so the next process's waits look at the right time.

The client learns how long each kind of render takes (piapi.waiting.RenderTimes); a new
process starting from defaults would poll too early or too late for its first tasks. So the
engine loads what earlier processes of this home learned at launch and saves it at close.
"""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path

from klingflow.piapi.waiting import RenderTimes

__all__ = ["RENDER_TIMES_FILE", "load_render_times", "save_render_times"]

RENDER_TIMES_FILE = "render-times.json"
"""In KLINGFLOW_HOME: how long each kind of render took."""

logger = logging.getLogger("klingflow.workflows.engine")  # its name before it moved here


def load_render_times(home: Path) -> RenderTimes:
    """What earlier processes of this home learned about render times (none: defaults)."""
    try:
        data = json.loads((home / RENDER_TIMES_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return RenderTimes()
    return RenderTimes.from_json(data)


def save_render_times(home: Path, times: RenderTimes) -> None:
    """Keep what this process learned for the next one (atomically; best effort)."""
    path = home / RENDER_TIMES_FILE
    part = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        part.write_text(json.dumps(times.to_json()), encoding="utf-8")
        part.replace(path)
    except OSError as error:
        logger.warning("could not save %s: %s", path, error)
        part.unlink(missing_ok=True)
