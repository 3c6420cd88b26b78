"""Folder fsyncs shared by downloads that finish together.

A finished download is renamed over its target, and the rename is durable only once its
folder is fsynced. A batch saves many files into one folder at once, and each used to fsync
the folder itself: a journal commit each, most of a saved file's kernel CPU on a fast link.
Here a file's commit waits for an fsync of its folder that *began after its rename*: the one
under way if it began later, else the next one, which the first waiter runs for all who
wait. So no commit returns before an fsync covering its rename has completed, as before,
and renames made together share one fsync.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

__all__ = ["sync_folder"]


@dataclass
class _Folder:
    renamed: int = 0
    """Renames announced so far (each caller's ticket)."""
    synced: int = 0
    """Every ticket up to this one is covered by a completed fsync."""
    running: bool = False


_changed = threading.Condition()
_folders: dict[str, _Folder] = {}


def sync_folder(folder: str) -> None:
    """Return once an fsync of `folder` that began after this call has completed (a no-op
    where folders cannot be opened); call it after the rename it must make durable."""
    with _changed:
        state = _folders.setdefault(folder, _Folder())
        state.renamed += 1
        ticket = state.renamed
        while state.synced < ticket:
            if state.running:  # began before our rename, or covers it: wait for its end
                _changed.wait()
                continue
            state.running = True
            covers = state.renamed
            _changed.release()
            try:
                _fsync(folder)
            finally:
                _changed.acquire()
                state.running = False
                state.synced = max(state.synced, covers)
                _changed.notify_all()
        if not state.running and state.synced == state.renamed:
            _folders.pop(folder, None)  # nobody waits on it: forget it


def _fsync(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
