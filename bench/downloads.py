"""Item 7 of issue 16: download throughput on loopback, and a resumed download after a cut.

    .venv/bin/python bench/run.py --only downloads [--quick]

A file server in its own process (`python bench/downloads.py serve ...`, HTTP/1.1 on a bare
socket sending the file with `os.sendfile`, `Range: bytes=N-` honoured, counting the bytes it
sends) serves one file of S MB. Measured, each the best of 5: `PiAPI.download` (stream to a
temporary file, fsync, rename), a bare httpx stream (`iter_raw`, pooled client) written to a
file and fsynced, the same GET on a bare socket read with `recv_into` (what loopback TCP
allows with no HTTP library at all), and a plain copy of the same bytes
(`shutil.copyfile` + fsync, page cache warm). Then the server cuts the first transfer at
half the file: the client resumes with a Range request; the bytes the server sent, over S,
say whether only the rest came again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import socketserver
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
RAW_BUFFER = 1 << 20
"""The raw socket's reads: as large as the client's largest (piapi/_pool.py, `READ_BYTES_MAX`),
so the ceiling is not held back by smaller reads than the client makes."""
ROUNDS = 5
"""Each figure is the best of 5: loopback on a shared machine varies by 2x run to run."""


class FileHandler(socketserver.StreamRequestHandler):
    """HTTP/1.1 on a bare socket: `/file` (with `Range: bytes=N-`) through `os.sendfile`, and
    `/stats`. The kernel sends the bytes, so the server is never what limits a download on
    loopback: an ASGI app on uvicorn, as first used here, spent more CPU per byte than the
    client it served, and capped every variant alike (bench/notes.md, section 7)."""

    server: FileHTTPServer

    def handle(self) -> None:
        while True:
            request = self.rfile.readline()
            if not request:
                return
            headers: dict[str, str] = {}
            while (line := self.rfile.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            path = request.split()[1].decode()
            if path == "/stats":
                self.send(200, {"content-type": "application/json"}, json.dumps(self.server.state))
            elif not self.send_file(headers.get("range")):
                return  # cut on purpose: the connection is closed

    def send(self, status: int, headers: dict[str, str], body: str = "") -> None:
        data = body.encode()
        lines = [f"HTTP/1.1 {status} OK", f"content-length: {len(data)}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode() + data)

    def send_file(self, range_header: str | None) -> bool:
        state, size = self.server.state, self.server.size
        state["requests"] += 1
        start = int(range_header.split("=")[1].split("-")[0]) if range_header else 0
        headers = {"content-type": "video/mp4", "accept-ranges": "bytes"}
        if range_header:
            headers["content-range"] = f"bytes {start}-{size - 1}/{size}"
        lines = [f"HTTP/1.1 {206 if range_header else 200} OK", f"content-length: {size - start}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.wfile.flush()
        stop_at = size
        if state["cut"] is not None:
            stop_at, state["cut"] = int(size * state["cut"]), None
        with self.server.path.open("rb") as file:
            position = start
            while position < stop_at:
                sent = os.sendfile(self.connection.fileno(), file.fileno(), position,
                                   min(CHUNK * 16, stop_at - position))  # fmt: skip
                position += sent
                state["bytes_sent"] += sent
        return stop_at == size


class FileHTTPServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int, path: Path, cut_first: float | None) -> None:
        self.path, self.size = path, path.stat().st_size
        self.state: dict[str, Any] = {"bytes_sent": 0, "requests": 0, "cut": cut_first}
        super().__init__(("127.0.0.1", port), FileHandler)


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


def timed(action: Any) -> tuple[float, float]:
    """Wall seconds and this process's CPU seconds (user + system; the plain copy's is the
    kernel's copy): CPU varies far less than wall time with the machine's load."""
    began, cpu = time.perf_counter(), time.process_time()
    action()
    return time.perf_counter() - began, time.process_time() - cpu


def copy_fsync(source: Path, dest: Path) -> None:
    shutil.copyfile(source, dest)
    with dest.open("rb+") as file:
        os.fsync(file.fileno())


def httpx_fsync(http: httpx.Client, url: str, dest: Path) -> None:
    """The least httpx can do: one pooled client (as `PiAPI` has), the body as it comes off
    the socket (`iter_raw`: no decoder, no re-chunking), one write per chunk, one fsync."""
    with http.stream("GET", url) as response, dest.open("wb") as file:
        for chunk in response.iter_raw():
            file.write(chunk)
        file.flush()
        os.fsync(file.fileno())


def socket_fsync(port: int, dest: Path, size: int) -> None:
    """The loopback's own ceiling, no HTTP library: one GET on a bare socket, the body read
    with `recv_into` into one reused buffer and written as it comes, one fsync. What any
    HTTP client pays on top of this is its parser's per-byte and per-chunk cost."""
    with socket.create_connection(("127.0.0.1", port)) as sock, dest.open("wb") as file:
        sock.sendall(b"GET /file HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(4096)
        body = head.partition(b"\r\n\r\n")[2]
        file.write(body)
        received, view = len(body), memoryview(bytearray(RAW_BUFFER))
        while received < size:
            count = sock.recv_into(view)
            if not count:
                raise RuntimeError("the file server closed the connection early")
            file.write(view[:count])
            received += count
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
            cpu: dict[str, float] = {}
            http = httpx.Client()
            for attempt in range(ROUNDS):
                for label, action in (
                    ("plain copy + fsync", lambda: copy_fsync(source, folder / "copy.mp4")),
                    (
                        "raw socket + fsync (no HTTP library)",
                        lambda: socket_fsync(server.port, folder / "raw.mp4", size),
                    ),
                    (
                        "bare httpx stream + fsync",
                        lambda: httpx_fsync(http, url, folder / "bare.mp4"),
                    ),
                    (
                        "klingflow `PiAPI.download`",
                        lambda n=attempt: client.download(url, folder / f"kf-{n}.mp4"),
                    ),
                ):
                    seconds, used = timed(action)
                    best[label] = min(best.get(label, seconds), seconds)
                    cpu[label] = min(cpu.get(label, used), used)
                for extra in folder.glob("kf-*.mp4"):
                    extra.unlink()
        finally:
            http.close()
            server.close()
        cut = FileServer(source, cut_first=0.5)
        try:
            resumed = client.download(cut.url + "/file", folder / "resumed.mp4")
            served = cut.stats()
        finally:
            cut.close()
        intact = sha256(resumed) == sha256(source)
        client.close()
    copy, bare = best["plain copy + fsync"], best["bare httpx stream + fsync"]
    rows = [
        [
            label,
            round(seconds, 3),
            f"**{size / seconds / 1e6:.0f}**",
            round(copy / seconds, 2),
            round(bare / seconds, 2),
            round(cpu[label], 3),
        ]
        for label, seconds in best.items()
    ]
    share = round(copy / best["klingflow `PiAPI.download`"], 2)
    to_bare = round(bare / best["klingflow `PiAPI.download`"], 2)
    ceiling = round(copy / best["raw socket + fsync (no HTTP library)"], 2)
    resent = round(served["bytes_sent"] / size, 3)
    figure = bar_chart(
        "downloads.png",
        list(best),
        [size / s / 1e6 for s in best.values()],
        f"MB/s (best of {ROUNDS})",
        marks={"0.8 x plain copy": 0.8 * size / copy / 1e6},
        height=2.4,
    )
    text = (
        f"One file of {megabytes} MB of random bytes, served on loopback by a small server in "
        f"another process that sends it with `os.sendfile`; best of {ROUNDS}. CPU is the "
        "downloading process's (user + system), the least of the rounds. The raw socket row "
        "is the loopback's own ceiling: the same GET with no HTTP library, the body read "
        f"with `recv_into` into one buffer of {RAW_BUFFER >> 20} MiB (the most the client "
        "reads at a time).\n\n"
        + table(
            ["how", "seconds", "MB/s", "/ plain copy", "/ bare httpx", "CPU s"],
            rows,
        )
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
                "raw socket / plain copy throughput",
                ceiling,
                "(loopback TCP's own ceiling)",
                None,
            ),
            Target(
                "download / bare httpx stream throughput",
                to_bare,
                "(the HTTP stack's share)",
                None,
            ),
            Target(
                "bytes sent / file size, resumed after a cut at 50%",
                resent,
                "<= 1.01",
                ratio(resent, 1.01, at_most=True) and intact,
            ),
        ],
        figures=[figure],
        raw={
            "megabytes": megabytes,
            "best_seconds": best,
            "cpu_seconds": cpu,
            "resumed": served,
            "intact": intact,
        },
    )


if __name__ == "__main__" and sys.argv[1:2] == ["serve"]:
    port, file_path, cut_arg = int(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
    FileHTTPServer(port, file_path, None if cut_arg == "None" else float(cut_arg)).serve_forever()
