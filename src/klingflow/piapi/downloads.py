"""Saving task outputs to disk, safely: the bookkeeping of a download, without its I/O.

PiAPI deletes outputs after a while, so they are fetched right away, and a half-written
file must never look like a finished one. A download streams into a hidden temporary file
in the target folder, which is fsynced and renamed over the target only once its length,
type and (optionally) SHA-256 are right. An interrupted transfer resumes with an HTTP
Range request; a server that ignores Range starts over. The clients drive the I/O; this
module decides.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import urllib.parse
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from klingflow.errors import DownloadError, InvalidRequestError
from klingflow.piapi.models import Task

__all__ = [
    "ACCEPTED_CONTENT_TYPES",
    "Download",
    "ProgressCallback",
    "check_destination",
    "next_hop",
    "resolve_destination",
    "source_of",
]

ProgressCallback = Callable[[int, int | None], None]
"""Called as `on_progress(bytes_done, bytes_total)`; the total is None when unknown."""

ACCEPTED_CONTENT_TYPES = ("video/", "image/", "audio/", "application/octet-stream")
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _refuse(message: str, url: str) -> DownloadError:
    return DownloadError(message, url=url, retryable=False)


def source_of(task_or_url: Task | str) -> tuple[str, str | None]:
    """The URL to fetch and the task id (if known); refuses anything but http(s)."""
    if isinstance(task_or_url, Task):
        urls = task_or_url.output_urls
        if not urls:
            raise _refuse(
                f"task {task_or_url.task_id} is {task_or_url.status.value} and has no output "
                "file to download; wait for it to complete first",
                url="",
            )
        url, task_id = urls[0], task_or_url.task_id
    elif isinstance(task_or_url, str):
        url, task_id = task_or_url, None
    else:
        raise TypeError(f"download takes a Task or a URL, not {type(task_or_url).__name__}")
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise _refuse(f"refusing to download {url!r}: only http(s) URLs are fetched", url=url)
    return url, task_id


def _safe_name(name: str) -> str:
    return _UNSAFE.sub("_", name).lstrip("._")


def resolve_destination(
    url: str, dest: Path | str, *, task_id: str | None = None, filename: str | None = None
) -> Path:
    """The file to write: `dest` itself, or a file inside `dest` when it is a folder.

    `dest` is a folder when it exists as one or is written with a trailing slash. The name
    inside it is `filename`, else the URL path's last segment (made safe), else the task id.
    A name that would leave the folder (`..`, a separator, an absolute path) is refused.
    """
    # Checked on the caller's string: Path("videos/") forgets the slash that marks a folder.
    is_folder = str(dest).endswith(("/", os.sep)) or Path(dest).is_dir()
    dest = Path(dest)
    if not is_folder:
        if filename is not None:
            raise TypeError("filename= only applies when dest is a folder")
        return dest
    if filename is not None:
        name = filename
        escapes = Path(name).is_absolute() or "/" in name or "\\" in name or name in ("", ".", "..")
        if escapes:
            raise _refuse(f"refusing filename {name!r}: it must stay inside {dest}", url=url)
    else:
        segment = urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])
        name = _safe_name(segment) or _safe_name(f"{task_id}.mp4" if task_id else "") or "output"
    folder = dest.resolve()
    target = folder / name  # `folder` is resolved: only a symlinked name can lead away
    if target.is_symlink():
        target = target.resolve()
    if target.parent != folder:
        raise _refuse(f"refusing {name!r}: it would be written outside {dest}", url=url)
    return target


MAX_REDIRECTS = 10
"""Redirects a download follows when its caller checks each hop (`check_redirect`)."""


def next_hop(current: str, location: str | None, hops: int) -> str:
    """Where a redirect from `current` leads (absolute); refuses a missing Location, a
    non-http(s) target or more than `MAX_REDIRECTS` hops."""
    if location is None:
        raise _refuse(f"{current} redirected without a Location", url=current)
    if hops >= MAX_REDIRECTS:
        raise _refuse(f"more than {MAX_REDIRECTS} redirects from {current}", url=current)
    target = urllib.parse.urljoin(current, location)
    if urllib.parse.urlsplit(target).scheme.lower() not in ("http", "https"):
        raise _refuse(f"refusing the redirect to {target!r}: only http(s) is fetched", url=target)
    return target


MAX_NAME_BYTES = 255
"""The longest file name most file systems take (ext4, APFS, NTFS: 255)."""


def check_destination(dest: str | Path, *, field: str = "dest") -> None:
    """Before anything is paid for: a destination the download could not be written to.

    The file name (when `dest` names a file) is at most 255 bytes; the nearest folder that
    exists on the way to `dest` is a folder, and a file can be created in it (probed with a
    real temporary file, so a read-only mount is caught even for root). Raises
    `InvalidRequestError` naming `field`.
    """
    text = str(dest)
    try:
        is_folder = text.endswith(("/", os.sep)) or Path(text).is_dir()
        path = Path(text)
        for part in path.parts:
            if len(os.fsencode(part)) > MAX_NAME_BYTES:
                size = len(os.fsencode(part))
                raise InvalidRequestError(
                    [(field, f"a file or folder name is {size} bytes; at most {MAX_NAME_BYTES}")]
                )
        existing = path if is_folder else path.parent
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            raise InvalidRequestError([(field, f"{existing} is a file, not a folder")])
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise InvalidRequestError(
            [(field, f"{text} cannot be written: {error.strerror or error}")]
        ) from None


def _content_type_ok(value: str | None) -> bool:
    if not value:
        return True  # some storage sends none; the length and checksum checks still apply
    kind = value.split(";", 1)[0].strip().lower()
    return kind == "application/octet-stream" or kind.startswith(ACCEPTED_CONTENT_TYPES[:3])


class Download:
    """One file being fetched into `target`: the temporary file and every decision.

    Protocol, for each attempt: `request_headers()`, `start(status, headers)`, `feed(chunk)`
    for each chunk, then `end()`, which is True when the file is whole. On a transport error
    call `interrupted(error)`, which raises once `max_resumes` are used up. Finally
    `commit()`; leaving the `with` block without a commit deletes the temporary file.
    """

    def __init__(
        self,
        url: str,
        target: Path,
        *,
        sha256: str | None = None,
        on_progress: ProgressCallback | None = None,
        max_resumes: int = 5,
    ) -> None:
        self.url = url
        self.target = target
        self.expected_sha256 = sha256.lower() if sha256 else None
        self.on_progress = on_progress
        self.max_resumes = max_resumes
        self.resumes = 0
        self.size = 0
        self.total: int | None = None
        self._hash = self._new_hash()
        self.decodes = False
        """Whether the body came content-encoded (gzip...) although identity was asked: the
        client must decode it, and its Content-Length says nothing of the file's size."""
        self._part = target.parent / f".{target.name}.{uuid.uuid4().hex[:8]}.part"
        self._file: IO[bytes] | None = None
        self._committed = False

    def __enter__(self) -> Self:
        if not self.target.parent.is_dir():  # one stat where mkdir(exist_ok) makes two calls
            self.target.parent.mkdir(parents=True, exist_ok=True)
        self._file = self._part.open("wb")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if not self._committed:  # renamed away otherwise
            self._part.unlink(missing_ok=True)

    @property
    def _out(self) -> IO[bytes]:
        if self._file is None:
            raise RuntimeError("use Download inside a `with` block")
        return self._file

    def request_headers(self) -> dict[str, str]:
        """The body as stored (`Accept-Encoding: identity`: media is compressed already, and
        only then do Range offsets and Content-Length count the bytes written), and
        `Range: bytes=<have>-` once some bytes are on disk (unless the server encoded the
        body anyway: then the offsets are not ours, and it starts over)."""
        headers = {"accept-encoding": "identity"}
        if self.size and not self.decodes:
            headers["range"] = f"bytes={self.size}-"
        return headers

    def _new_hash(self) -> hashlib._Hash | None:
        """A hash only when a digest is to be checked: hashing every byte of every video
        was a third of a download's time on loopback (docs/benchmarks.md)."""
        return hashlib.sha256() if self.expected_sha256 is not None else None

    def _restart(self) -> None:
        self._out.seek(0)
        self._out.truncate()
        self.size = 0
        self._hash = self._new_hash()

    def start(self, status_code: int, headers: Mapping[str, str]) -> None:
        """Check a response's status and headers before its body is read."""
        if status_code == 206 and self.size:
            match = _CONTENT_RANGE.match(headers.get("content-range", ""))
            if match is None or int(match.group(1)) != self.size:
                raise DownloadError(
                    f"the server resumed {self.url} at the wrong offset", url=self.url
                )
            self.total = None if match.group(3) == "*" else int(match.group(3))
        elif status_code in (200, 206):
            if self.size:  # Range ignored: the whole file comes again
                self._restart()
            length = headers.get("content-length")
            self.total = int(length) if length and length.isdigit() else None
            if status_code == 206:  # a 206 we did not ask for: trust only Content-Range
                match = _CONTENT_RANGE.match(headers.get("content-range", ""))
                self.total = int(match.group(3)) if match and match.group(3) != "*" else None
        elif status_code == 416 and self.size:
            self._restart()
            raise DownloadError(f"the server refused to resume {self.url}", url=self.url)
        else:
            final = status_code in (401, 403, 404, 410)
            hint = " (PiAPI deletes outputs after a while)" if status_code in (404, 410) else ""
            raise DownloadError(
                f"downloading {self.url} failed with HTTP {status_code}{hint}",
                url=self.url,
                retryable=not final,
            )
        encoding = headers.get("content-encoding", "identity").strip().lower()
        self.decodes = encoding not in ("", "identity")
        if self.decodes:
            self.total = None
        content_type = headers.get("content-type")
        if not _content_type_ok(content_type):
            raise _refuse(
                f"{self.url} is {content_type}, not a media file; refusing to save it", self.url
            )

    def feed(self, chunk: bytes) -> None:
        """Write a chunk, counting (and, to check it, hashing) it; refuse a body longer than
        announced."""
        self._out.write(chunk)
        if self._hash is not None:
            self._hash.update(chunk)
        self.size += len(chunk)
        if self.total is not None and self.size > self.total:
            raise _refuse(
                f"{self.url} sent more than its announced {self.total} bytes", url=self.url
            )
        if self.on_progress is not None:
            self.on_progress(self.size, self.total)

    def end(self) -> bool:
        """True when the body is complete; False when it stopped short (resume it)."""
        return self.total is None or self.size == self.total

    def interrupted(self, error: BaseException) -> None:
        """Count a failed attempt; raise `DownloadError` when no resume is left."""
        self.resumes += 1
        if self.resumes > self.max_resumes:
            total = "?" if self.total is None else str(self.total)
            raise DownloadError(
                f"downloading {self.url} failed after {self.max_resumes} resumes "
                f"({self.size} of {total} bytes): {type(error).__name__}",
                url=self.url,
            ) from error

    def commit(self) -> Path:
        """fsync, check the SHA-256, and rename the temporary file over the target."""
        out = self._out
        out.flush()
        os.fsync(out.fileno())
        out.close()
        self._file = None
        digest = self._hash.hexdigest() if self._hash is not None else None
        if digest is not None and digest != self.expected_sha256:
            raise _refuse(
                f"{self.url} has SHA-256 {digest}, expected {self.expected_sha256}; not saved",
                url=self.url,
            )
        os.replace(self._part, self.target)
        self._committed = True
        _fsync_folder(self.target.parent)
        return self.target


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened."""
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
