"""Downloads finishing together into one folder share its fsync, and each is still durable:
no download returns before an fsync of its folder that began after its rename completed."""

from __future__ import annotations

import os
import stat
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from klingflow.emulator import EmulatorServer
from klingflow.piapi import KlingVideoRequest, PiAPI

from ..policies import FAST_RETRY, FAST_WAIT

FILES = 16
SLOW_FSYNC_SECONDS = 0.3
"""The first folder fsync is held this long, so the other downloads finish meanwhile (a
batch's downloads on a fast link do; this makes it so on a loaded test machine)."""


def test_downloads_finishing_together_share_folder_fsyncs_and_each_is_durable(
    emulator: EmulatorServer, api_key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    renamed: dict[str, float] = {}
    syncs: list[tuple[float, float]] = []  # (began, ended) of each fsync of a folder
    lock = threading.Lock()
    real_replace, real_fsync = os.replace, os.fsync

    def replace(source: Any, target: Any) -> None:
        real_replace(source, target)
        with lock:
            renamed[str(target)] = time.monotonic()

    def fsync(fd: int) -> None:
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            real_fsync(fd)
            return
        began = time.monotonic()
        if not syncs:
            time.sleep(SLOW_FSYNC_SECONDS)
        real_fsync(fd)
        with lock:
            syncs.append((began, time.monotonic()))

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "fsync", fsync)
    with PiAPI(
        api_key=api_key, base_url=emulator.url, wait_policy=FAST_WAIT, retry_policy=FAST_RETRY
    ) as api:
        task = api.wait(api.submit(KlingVideoRequest(prompt="a kite", duration=3)).task_id)

        def save(number: int) -> tuple[Path, float]:
            path = api.download(task, tmp_path, filename=f"{number}.mp4")
            return path, time.monotonic()

        with ThreadPoolExecutor(FILES) as pool:
            saved = list(pool.map(save, range(FILES)))

    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{n}.mp4" for n in range(FILES))
    for path, returned in saved:  # durable: a folder fsync began after its rename, and ended
        moment = renamed[str(path)]
        assert any(moment <= began and ended <= returned for began, ended in syncs), path
    assert len(syncs) <= FILES // 2, f"{len(syncs)} folder fsyncs for {FILES} downloads"
