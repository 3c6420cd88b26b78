"""Downloads: atomic, resumable, checked; nothing half-written, nothing outside the folder."""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest

from klingflow.emulator import EmulatorServer, FaultRule
from klingflow.piapi import DownloadError, KlingVideoRequest, Task
from klingflow.piapi.downloads import resolve_destination

from .adapter import Api

PAYLOAD = bytes(range(256)) * 400  # 102,400 bytes


def completed_video(api: Api) -> Task:
    return api.wait(api.submit(KlingVideoRequest(prompt="a kite", duration=3)).task_id)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part"))


def test_download_saves_the_output_in_the_folder_with_progress(api: Api, tmp_path: Path) -> None:
    """A completed task's video lands in the folder as `<task_id>.mp4`; progress counts up."""
    task = completed_video(api)
    progress: list[tuple[int, int | None]] = []
    path = api.download(
        task, tmp_path, on_progress=lambda done, total: progress.append((done, total))
    )
    assert path == tmp_path / f"{task.task_id}.mp4"
    size = path.stat().st_size
    assert progress[-1] == (size, size)
    assert [done for done, _ in progress] == sorted(done for done, _ in progress)
    assert leftovers(tmp_path) == []


def test_download_resumes_after_truncated_transfers(
    api: Api, emulator: EmulatorServer, tmp_path: Path
) -> None:
    """Two bodies cut short are resumed with Range; the file equals an uninterrupted copy."""
    task = completed_video(api)
    clean = api.download(task, tmp_path / "clean.mp4")
    emulator.add_fault(FaultRule(action="truncate", path="/files/", fraction=0.3, times=2))
    progress: list[int] = []
    resumed = api.download(
        task, tmp_path / "resumed.mp4", on_progress=lambda done, _total: progress.append(done)
    )
    assert resumed.read_bytes() == clean.read_bytes()
    assert progress == sorted(progress)  # resumed, never restarted from zero
    assert leftovers(tmp_path) == []


def test_download_gives_up_after_max_resumes_and_leaves_nothing(
    api: Api, emulator: EmulatorServer, tmp_path: Path
) -> None:
    """A file that is always cut short fails with DownloadError, without a partial file."""
    task = completed_video(api)
    emulator.add_fault(FaultRule(action="truncate", path="/files/", fraction=0.5, times=None))
    with pytest.raises(DownloadError, match="resumes"):
        api.download(task, tmp_path, max_resumes=2)
    assert list(tmp_path.iterdir()) == []


def test_download_checks_the_sha256(api: Api, tmp_path: Path) -> None:
    """The right SHA-256 passes; a wrong one refuses the file and leaves nothing behind."""
    task = completed_video(api)
    good = api.download(task, tmp_path / "a.mp4")
    digest = hashlib.sha256(good.read_bytes()).hexdigest()
    assert api.download(task, tmp_path / "b.mp4", sha256=digest.upper()).exists()
    with pytest.raises(DownloadError, match="SHA-256") as caught:
        api.download(task, tmp_path / "c.mp4", sha256="0" * 64)
    assert not caught.value.retryable
    assert not (tmp_path / "c.mp4").exists()
    assert leftovers(tmp_path) == []


def test_download_to_a_file_path_creates_its_folders(api: Api, tmp_path: Path) -> None:
    """A destination file in folders that do not exist yet is written there."""
    target = tmp_path / "out" / "nested" / "clip.mp4"
    assert api.download(completed_video(api), target) == target
    assert target.stat().st_size > 0


@pytest.mark.parametrize("name", ["../evil.mp4", "/tmp/abs.mp4", "sub/x.mp4", ".."])
def test_download_refuses_names_that_escape_the_folder(
    api: Api, emulator: EmulatorServer, tmp_path: Path, name: str
) -> None:
    """A filename with `..`, a separator or an absolute path is refused before any request."""
    folder = tmp_path / "videos"
    folder.mkdir()
    with pytest.raises(DownloadError, match="refusing"):
        api.download(f"{emulator.url}/files/x.mp4", folder, filename=name)
    assert list(tmp_path.rglob("*.mp4")) == []


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://example.com/a.mp4", "javascript:alert(1)", "/files/a"]
)
def test_download_refuses_urls_that_are_not_http(api: Api, tmp_path: Path, url: str) -> None:
    """Only http(s) URLs are fetched."""
    with pytest.raises(DownloadError, match="only http"):
        api.download(url, tmp_path)


def test_download_of_an_unfinished_task_says_to_wait(api: Api, emulator: EmulatorServer) -> None:
    """A task without output cannot be downloaded; the error says to wait for it."""
    emulator.configure(pending_seconds=10_000)
    task = api.submit(KlingVideoRequest(prompt="p"))
    with pytest.raises(DownloadError, match="wait for it"):
        api.download(task, Path("."))


def test_download_of_an_expired_output_is_final(
    api: Api, emulator: EmulatorServer, tmp_path: Path
) -> None:
    """A 404 (PiAPI deleted the output) is a non-retryable DownloadError."""
    with pytest.raises(DownloadError, match="404") as caught:
        api.download(f"{emulator.url}/files/00000000-0000-4000-8000-000000000000.mp4", tmp_path)
    assert not caught.value.retryable
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://cdn.example/v/clip%20one.mp4?sig=1", "clip_one.mp4"),
        ("https://cdn.example/v/..%2F..%2Fetc%2Fpasswd", "etc_passwd"),
        ("https://cdn.example/v/.hidden.mp4", "hidden.mp4"),
        ("https://cdn.example/", "task-7.mp4"),
    ],
)
def test_folder_destination_names_come_from_the_url_made_safe(
    tmp_path: Path, url: str, expected: str
) -> None:
    """The URL's last segment (decoded and sanitised) or the task id names the file."""
    target = resolve_destination(url, tmp_path, task_id="task-7")
    assert target == tmp_path / expected


def test_a_name_that_is_a_symlink_out_of_the_folder_is_refused(tmp_path: Path) -> None:
    """The file's name already in the folder as a symlink to a file elsewhere: refused, not
    written through; a symlink to a file in the folder itself is that file; a symlinked
    folder is the folder it points to."""
    folder, elsewhere = tmp_path / "videos", tmp_path / "elsewhere"
    folder.mkdir()
    elsewhere.mkdir()
    (elsewhere / "secret.txt").write_text("keep")
    (folder / "clip.mp4").symlink_to(elsewhere / "secret.txt")
    with pytest.raises(DownloadError, match="outside"):
        resolve_destination("https://cdn.example/v/clip.mp4", f"{folder}/")
    (folder / "same.mp4").write_bytes(b"")
    (folder / "alias.mp4").symlink_to(folder / "same.mp4")
    assert resolve_destination("https://cdn.example/alias.mp4", folder) == folder / "same.mp4"
    (tmp_path / "link").symlink_to(folder)
    target = resolve_destination("https://cdn.example/new.mp4", f"{tmp_path / 'link'}/")
    assert target == folder / "new.mp4"
    assert (elsewhere / "secret.txt").read_text() == "keep"


# -- byte-level faults the emulator cannot produce: httpx.MockTransport ------------------------


def serve(handler: Callable[[httpx.Request], httpx.Response]) -> httpx.MockTransport:
    return httpx.MockTransport(handler)


class _CutStream(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A body that yields some bytes, then fails as a dropped connection does."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __iter__(self) -> Iterator[bytes]:
        yield self.data
        raise httpx.RemoteProtocolError("peer closed connection")

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.data
        raise httpx.RemoteProtocolError("peer closed connection")


def test_download_restarts_when_the_server_ignores_range(
    make_api: Callable[..., Api], tmp_path: Path
) -> None:
    """A 200 answer to a Range request starts the file over; the result is still exact."""
    seen_ranges: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen_ranges.append(request.headers.get("range"))
        headers = {"content-type": "video/mp4", "content-length": str(len(PAYLOAD))}
        if len(seen_ranges) == 1:
            return httpx.Response(200, headers=headers, stream=_CutStream(PAYLOAD[:1000]))
        return httpx.Response(200, headers=headers, content=PAYLOAD)

    api = make_api(base_url="http://piapi.test", transport=serve(handler))
    path = api.download("http://files.test/v/a.mp4", tmp_path)
    assert path.read_bytes() == PAYLOAD
    assert seen_ranges == [None, "bytes=1000-"]


def test_download_asks_for_the_file_as_stored_and_decodes_a_body_encoded_anyway(
    make_api: Callable[..., Api], tmp_path: Path
) -> None:
    """Downloads ask for `identity`; a server that gzips the body anyway (its Content-Length
    then counts compressed bytes) still yields the exact file, and a cut transfer of it
    starts over rather than resuming at an offset that is not the server's."""
    packed = gzip.compress(PAYLOAD)
    seen: list[tuple[str | None, str | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.headers.get("accept-encoding"), request.headers.get("range")))
        headers = {
            "content-type": "video/mp4",
            "content-encoding": "gzip",
            "content-length": str(len(packed)),
        }
        if len(seen) == 1:
            return httpx.Response(200, headers=headers, stream=_CutStream(packed[:100]))
        return httpx.Response(200, headers=headers, content=packed)

    api = make_api(base_url="http://piapi.test", transport=serve(handler))
    path = api.download("http://files.test/v/a.mp4", tmp_path)
    assert path.read_bytes() == PAYLOAD
    assert seen == [("identity", None), ("identity", None)]


def test_download_resumes_a_body_that_ends_short(
    make_api: Callable[..., Api], tmp_path: Path
) -> None:
    """A body shorter than its Content-Range total is completed with a Range request."""

    def handler(request: httpx.Request) -> httpx.Response:
        start = int(request.headers.get("range", "bytes=0-")[6:-1])
        end = min(start + 40_000, len(PAYLOAD))  # at most 40 kB per answer
        headers = {
            "content-type": "application/octet-stream",
            "content-range": f"bytes {start}-{end - 1}/{len(PAYLOAD)}",
        }
        return httpx.Response(206, headers=headers, content=PAYLOAD[start:end])

    api = make_api(base_url="http://piapi.test", transport=serve(handler))
    totals: set[int | None] = set()
    path = api.download(
        "http://files.test/a.bin", tmp_path, on_progress=lambda _d, total: totals.add(total)
    )
    assert path.read_bytes() == PAYLOAD
    assert totals == {len(PAYLOAD)}


@pytest.mark.parametrize("content_type", ["text/html", "application/json; charset=utf-8"])
def test_download_refuses_a_body_that_is_not_media(
    make_api: Callable[..., Api], tmp_path: Path, content_type: str
) -> None:
    """An HTML error page or JSON served instead of the file is refused, not saved."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": content_type}, content=b"<html>")

    api = make_api(base_url="http://piapi.test", transport=serve(handler))
    with pytest.raises(DownloadError, match="not a media file"):
        api.download("http://files.test/a.mp4", tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("content_type", ["video/mp4", "image/png", "audio/mpeg", None])
def test_download_accepts_media_types(
    make_api: Callable[..., Api], tmp_path: Path, content_type: str | None
) -> None:
    """Video, image, audio, octet-stream and an absent Content-Type are accepted."""

    def handler(request: httpx.Request) -> httpx.Response:
        headers = {"content-type": content_type} if content_type else {}
        return httpx.Response(200, headers=headers, content=b"media")

    api = make_api(base_url="http://piapi.test", transport=serve(handler))
    assert api.download("http://files.test/a", tmp_path).read_bytes() == b"media"


def test_download_never_sends_the_api_key(make_api: Callable[..., Api], tmp_path: Path) -> None:
    """The key is for PiAPI's API: file requests go without it, even on PiAPI's own host."""
    sent: list[httpx.Headers] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.headers)
        return httpx.Response(200, headers={"content-type": "video/mp4"}, content=b"x")

    api = make_api(base_url="http://piapi.test", transport=serve(handler))
    api.download("http://piapi.test/files/a.mp4", tmp_path)
    api.download("http://elsewhere.test/a.mp4", tmp_path)
    assert all("x-api-key" not in headers for headers in sent)


def test_folder_given_as_a_string_with_a_slash_is_created(api: Api, tmp_path: Path) -> None:
    """`"videos/"` (a str ending in a slash) names a folder, created if missing."""
    task = completed_video(api)
    path = api.download(task, f"{tmp_path}/videos/")
    assert path == tmp_path / "videos" / f"{task.task_id}.mp4"
