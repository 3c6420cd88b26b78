"""Item 7 of issue 16: download throughput on loopback, and a resumed download after a cut.

    .venv/bin/python bench/run.py --only downloads [--quick]

A file server in its own process (`python bench/downloads.py serve ...`, plain ASGI on
uvicorn, `Range: bytes=N-` honoured, counting the bytes it sends) serves one file of S MB.
Measured, each the best of 3: `PiAPI.download` (stream to a temporary file, fsync, rename),
a bare httpx stream written to a file and fsynced, and a plain copy of the same bytes
(`shutil.copyfile` + fsync, page cache warm). Then the server cuts the first transfer at
half the file: the client resumes with a Range request; the bytes the server sent, over S,
say whether only the rest came again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from common import Options, Section, Target, bar_chart, ratio, table, wait_for
from engine import _free_port

from klingflow.piapi import PiAPI

CHUNK = 256 * 1024


def server_app(path: Path, cut_first: float | None) -> Any:
    """An ASGI app serving `path` at /file (with Range) and its byte counts at /stats."""
    size = path.stat().st_size
    state = {"bytes_sent": 0, "requests": 0, "cut": cut_first}

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/stats":
            body = json.dumps(state).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        state["requests"] += 1
        headers = dict(scope["headers"])
        start = 0
        status = 200
        if b"range" in headers:
            start = int(headers[b"range"].decode().split("=")[1].split("-")[0])
            status = 206
        out = [
            (b"content-type", b"video/mp4"),
            (b"content-length", str(size - start).encode()),
            (b"accept-ranges", b"bytes"),
        ]
        if status == 206:
            out.append((b"content-range", f"bytes {start}-{size - 1}/{size}".encode()))
        await send({"type": "http.response.start", "status": status, "headers": out})
        stop_at = size
        if state["cut"] is not None:
            stop_at = int(size * state["cut"])
            state["cut"] = None
        with path.open("rb") as file:
            file.seek(start)
            position = start
            while position < stop_at:
                chunk = file.read(min(CHUNK, stop_at - position))
                position += len(chunk)
                state["bytes_sent"] += len(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        if stop_at < size:
            raise ConnectionAbortedError("cut on purpose")  # uvicorn drops the connection
        await send({"type": "http.response.body", "body": b""})

    return app


class FileServer:
    def __init__(self, path: Path, cut_first: float | None = None) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, __file__, "serve", str(self.port), str(path), str(cut_first)]
        self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and script
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

        def up() -> bool:
            try:
                return httpx.get(self.url + "/stats").status_code == 200
            except httpx.TransportError:
                return False

        if not wait_for(up, timeout_seconds=30):
            raise RuntimeError("the file server did not start")

    def stats(self) -> dict[str, Any]:
        answer: dict[str, Any] = httpx.get(self.url + "/stats").json()
        return answer

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def timed(action: Any) -> float:
    began = time.perf_counter()
    action()
    return time.perf_counter() - began


def copy_fsync(source: Path, dest: Path) -> None:
    shutil.copyfile(source, dest)
    with dest.open("rb+") as file:
        os.fsync(file.fileno())


def httpx_fsync(url: str, dest: Path) -> None:
    with httpx.stream("GET", url) as response, dest.open("wb") as file:
        for chunk in response.iter_bytes(CHUNK):
            file.write(chunk)
        file.flush()
        os.fsync(file.fileno())


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def measure(quick: bool, options: Options) -> Section:
    megabytes = 64 if quick else 256
    with tempfile.TemporaryDirectory(prefix="klingflow-downloads-") as name:
        folder = Path(name)
        source = folder / "source.mp4"
        with source.open("wb") as file:
            for _ in range(megabytes):
                file.write(os.urandom(1 << 20))
        size = source.stat().st_size
        client = PiAPI(api_key="bench-downloads")
        server = FileServer(source)
        try:
            url = server.url + "/file"
            best: dict[str, float] = {}
            for attempt in range(3):
                for label, action in (
                    ("plain copy + fsync", lambda: copy_fsync(source, folder / "copy.mp4")),
                    ("bare httpx stream + fsync", lambda: httpx_fsync(url, folder / "bare.mp4")),
                    (
                        "klingflow `PiAPI.download`",
                        lambda n=attempt: client.download(url, folder / f"kf-{n}.mp4"),
                    ),
                ):
                    seconds = timed(action)
                    best[label] = min(best.get(label, seconds), seconds)
                for extra in folder.glob("kf-*.mp4"):
                    extra.unlink()
        finally:
            server.close()
        cut = FileServer(source, cut_first=0.5)
        try:
            resumed = client.download(cut.url + "/file", folder / "resumed.mp4")
            served = cut.stats()
        finally:
            cut.close()
        intact = sha256(resumed) == sha256(source)
        client.close()
    copy = best["plain copy + fsync"]
    rows = [
        [label, round(seconds, 3), f"**{size / seconds / 1e6:.0f}**", round(copy / seconds, 2)]
        for label, seconds in best.items()
    ]
    share = round(copy / best["klingflow `PiAPI.download`"], 2)
    resent = round(served["bytes_sent"] / size, 3)
    figure = bar_chart(
        "downloads.png",
        list(best),
        [size / s / 1e6 for s in best.values()],
        "MB/s (best of 3)",
        marks={"0.8 x plain copy": 0.8 * size / copy / 1e6},
        height=2.4,
    )
    text = (
        f"One file of {megabytes} MB of random bytes, served on loopback by a plain ASGI app on "
        "uvicorn in another process; best of 3.\n\n"
        + table(["how", "seconds", "MB/s", "/ plain copy"], rows)
        + "\n\n**Resumed download.** The server cut the first transfer at half the file; "
        f"`PiAPI.download` made {served['requests']} requests and the server sent "
        f"{served['bytes_sent']} bytes for a {size}-byte file (**{resent} x the file**); the "
        f"result is {'byte for byte the source' if intact else '**not** the source'}."
    )
    return Section(
        name="downloads",
        title="7. Downloads",
        command="bench/run.py --only downloads",
        text=text,
        targets=[
            Target(
                "download / plain copy throughput",
                share,
                ">= 0.8",
                ratio(share, 0.8, at_most=False),
            ),
            Target(
                "bytes sent / file size, resumed after a cut at 50%",
                resent,
                "<= 1.01",
                ratio(resent, 1.01, at_most=True) and intact,
            ),
        ],
        figures=[figure],
        raw={"megabytes": megabytes, "best_seconds": best, "resumed": served, "intact": intact},
    )


if __name__ == "__main__" and sys.argv[1:2] == ["serve"]:
    import uvicorn

    port, file_path, cut_arg = int(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
    uvicorn.run(
        server_app(file_path, None if cut_arg == "None" else float(cut_arg)),
        host="127.0.0.1",
        port=port,
        log_level="error",
    )
