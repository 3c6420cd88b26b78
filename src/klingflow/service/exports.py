"""A run as a download: its files in a zip, streamed, and a manifest a spreadsheet can take.

The manifest has one row per paid or file-making node (a loop's items by row number, in
order): row, item label, node, status, PiAPI task id, file (its name in the zip), cost. The
zip is written while it is sent, never assembled on disk or in memory, so a batch of 1,000
videos starts downloading at once; videos are stored, not deflated (MP4 is compressed
already). Only files inside the run's folder are ever read.
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from klingflow.workflows.loop_items import item_label
from klingflow.workflows.records import NodeRun, RunRecord

__all__ = [
    "MANIFEST_COLUMNS",
    "ManifestRow",
    "manifest",
    "manifest_csv",
    "manifest_json",
    "node_files",
    "run_files",
    "stream_zip",
]

MANIFEST_COLUMNS = ("row", "item", "node", "status", "task_id", "file", "cost_usd")
_PAID_PREFIXES = ("kling.", "piapi.")
_CHUNK_BYTES = 1024 * 1024


@dataclass(frozen=True)
class ManifestRow:
    """One line of the manifest; `row` is the item's 1-based number (None: not in a loop)."""

    row: int | None
    item: str
    node: str
    status: str
    task_id: str
    file: str
    cost_usd: str


def node_files(output: Any) -> list[str]:
    """The local files a node output names (`path`, `paths`)."""
    if not isinstance(output, dict):
        return []
    found = [output["path"]] if isinstance(output.get("path"), str) else []
    return found + [p for p in output.get("paths") or [] if isinstance(p, str)]


def run_files(run: RunRecord, node: NodeRun) -> list[tuple[str, Path]]:
    """(name in the zip, path) of each file a node made inside the run's folder."""
    root = Path(run.output_dir).resolve()
    found = []
    for name in node_files(node.output):
        path = Path(name).resolve()
        if path.is_relative_to(root) and path.is_file():
            found.append((str(PurePosixPath(*path.relative_to(root).parts)), path))
    return found


def manifest(
    run: RunRecord,
    nodes: list[NodeRun],
    items: dict[str, list[Any]],
    labels: dict[str, str | None] | None = None,
) -> list[ManifestRow]:
    """The manifest's rows: `items` are each loop's items and `labels` its `label:` template
    (by loop id), for the items' names."""
    labels = labels or {}
    rows: list[ManifestRow] = []
    ordered = sorted(nodes, key=lambda n: (n.item_index is not None, n.item_index or 0))
    for node in ordered:
        files = run_files(run, node)
        if not node.node_type.startswith(_PAID_PREFIXES) and not files:
            continue
        loop_id = node.node_path.split("[", 1)[0]
        loop_items = items.get(loop_id, [])
        index = node.item_index
        label = (
            item_label(
                loop_items[index],
                template=labels.get(loop_id),
                index=index,
                length=len(loop_items),
                inputs=run.inputs,
                trigger=run.trigger,
            )
            if index is not None and index < len(loop_items)
            else ""
        )
        rows.append(
            ManifestRow(
                row=None if index is None else index + 1,
                item=label,
                node=node.node_path,
                status=node.status.value,
                task_id=node.task_id or "",
                file=" ".join(name for name, _ in files),
                cost_usd="" if node.cost_usd is None else str(node.cost_usd),
            )
        )
    return rows


def manifest_csv(rows: list[ManifestRow]) -> str:
    """The manifest as CSV, one row per item node, for a spreadsheet."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in asdict(row).items()})
    return out.getvalue()


def manifest_json(rows: list[ManifestRow]) -> str:
    """The manifest as a JSON array, for scripts."""
    return json.dumps([asdict(row) for row in rows], indent=2, ensure_ascii=False)


class _Pipe(io.RawIOBase):
    """Where `zipfile` writes; what it wrote is taken out as the next chunk of the answer.
    Not seekable, so `zipfile` writes sizes after each file (data descriptors)."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._chunks.append(chunk)
        return len(chunk)

    def take(self) -> bytes:
        data = b"".join(self._chunks)
        self._chunks.clear()
        return data


def stream_zip(files: list[tuple[str, Path]], extra: list[tuple[str, str]]) -> Iterator[bytes]:
    """A zip of `files` ((name, path)) and `extra` ((name, text)), chunk by chunk."""
    pipe = _Pipe()
    with zipfile.ZipFile(pipe, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, path in files:
            with path.open("rb") as source, archive.open(name, "w", force_zip64=True) as target:
                while chunk := source.read(_CHUNK_BYTES):
                    target.write(chunk)
                    yield pipe.take()
            yield pipe.take()
        for name, text in extra:
            archive.writestr(name, text, compress_type=zipfile.ZIP_DEFLATED)
    yield pipe.take()
