"""The Ray engine of `assay import`: a file cut into pieces, each parsed and written as segments by a
Ray task on a local or remote cluster; the driver commits every task's parts as one version.

How a file is cut:
- JSON Lines: byte ranges of `RANGE_CHUNKS` import chunks each. A range owns the lines that start in
  it (the one that starts before it and crosses into it belongs to the range before), as Hadoop's
  line reader does, so no line is read twice or lost wherever a cut falls. Line numbers must be
  those of the whole file, for provenance (`source_row`) and for errors, so a first round of tasks
  counts each range's lines (a byte scan, far cheaper than parsing) and the second round parses
  with its first line number known.
- Parquet: whole row groups, read by each task from the file's footer offsets.
Other sources (JSON arrays, CSV, whose quoted fields may hold line ends, compressed files, Hugging
Face datasets, seed-task rows) cannot be cut this way and are imported by the local engine.

What runs where: workers open the source by its path or URL (a file every node sees, or `s3://`),
parse it, and write segments straight into the workspace storage; the driver reads no record. The
first bad line in file order is the one reported, as locally, and nothing is committed: segments
written before it are unreferenced objects, as after a failed local import.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Callable

import fsspec

from assay.core.errors import BadInput
from assay.core.ray_cluster import connect, gather
from assay.core.sources import Source
from assay.core.store import Part, Store, VersionWriter

from .columnar import jsonl_stream_batches, parquet_batches

RETRIES = 3  # attempts after a worker dies mid-task (Ray's own default for tasks)
RANGE_CHUNKS = 4  # import chunks (chunk_mb) per task: 128 MB of JSON Lines by default
RAY_FORMATS = ("jsonl", "parquet")
COMPRESSED = (".gz", ".bz2", ".xz", ".zst")


def ray_refusal(path: str, fmt: str, seed_tasks: bool) -> str | None:
    """Why this source cannot be split among Ray tasks, or None when it can."""
    if fmt not in RAY_FORMATS:
        return f"{fmt} files are not split (JSON Lines and Parquet are)"
    if path.lower().endswith(COMPRESSED):
        return "a compressed file cannot be cut into byte ranges"
    if seed_tasks:
        return "seed-task rows (one record per instance) are imported row by row"
    return None


def _where(path: str) -> str:
    """The source as every worker can open it: a URL as given, a local path made absolute."""
    return path if "://" in path else str(Path(path).resolve())


def import_parts_on_ray(store: Store, path: str, fmt: str, *, layout: Any, source: Source, provenance_source: str,
                        chunk_bytes: int, address: str | None, show_progress: bool | None,
                        to_table: Callable) -> list[Part]:
    """Every piece of `path` parsed and written by a Ray task; the parts of all of them, in file order."""
    ray = connect(address)
    where = _where(path)
    # what a task needs of the source to name its errors; its open reader stays here
    named = Source(source.label, source.unit, iter(()), source.format)
    work = ray.remote(max_retries=RETRIES)(_import_piece)
    if fmt == "jsonl":
        size = fsspec.filesystem(fsspec.utils.infer_storage_options(where)["protocol"]).size(where)
        step = max(1, chunk_bytes * RANGE_CHUNKS)
        ranges = [(a, min(a + step, size)) for a in range(0, size, step)]
        count = ray.remote(max_retries=RETRIES)(_count_range_lines)
        counts = gather(ray, [count.remote(where, a, b) for a, b in ranges], f"counting the lines of {path}")
        firsts, line = [], 1
        for n in counts:
            firsts.append(line)
            line += n
        pieces = [("jsonl", a, b, first) for (a, b), first in zip(ranges, firsts, strict=True)]
    else:
        pieces = [("parquet", groups, None, first) for groups, first in _row_group_pieces(where, chunk_bytes)]
    refs = [work.remote(store.url, str(store.catalog.path), where, path, piece, chunk_bytes, layout, named,
                        provenance_source, to_table) for piece in pieces]
    results = gather(ray, refs, f"importing {path}", show_progress=show_progress)
    errors = [r for r in results if isinstance(r, BadInput)]
    if errors:
        raise errors[0]  # the first piece in file order with a bad row: its first bad row
    return [part for parts in results for part in parts]


def _range_bytes(where: str, start: int, end: int) -> bytes:
    """The lines that start in [start, end) of the file: from the first line start at or after
    `start` through the line end that closes the line holding byte end - 1."""
    with fsspec.open(where, "rb") as fh:
        if start > 0:
            fh.seek(start - 1)
            head = fh.readline()  # ends at the first line end at or after start - 1
            begin = start - 1 + len(head)
        else:
            begin = 0
        if begin >= end:
            return b""  # one line runs through the whole range: the range before owns it
        fh.seek(begin)
        data = fh.read(end - begin)
        if data and not data.endswith(b"\n"):
            data += fh.readline()  # the last line, to its end
        return data


def _line_count(data: bytes) -> int:
    """Lines in `data`, counted as the local reader counts them (a last line without an end counts)."""
    return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)


def _count_range_lines(where: str, start: int, end: int) -> int:
    return _line_count(_range_bytes(where, start, end))


def _row_group_pieces(where: str, chunk_bytes: int) -> list[tuple[list[int], int]]:
    """Row groups in tasks of about RANGE_CHUNKS import chunks of rows, with each task's first row number."""
    import pyarrow.parquet as pq

    with fsspec.open(where, "rb") as fh:
        meta = pq.ParquetFile(fh).metadata
    want = max(1, chunk_bytes // 512) * RANGE_CHUNKS
    pieces, groups, rows, first = [], [], 0, 1
    for g in range(meta.num_row_groups):
        groups.append(g)
        rows += meta.row_group(g).num_rows
        if rows >= want:
            pieces.append((groups, first))
            first, groups, rows = first + rows, [], 0
    if groups:
        pieces.append((groups, first))
    return pieces


def _import_piece(url: str, catalog_path: str, where: str, path: str, piece: tuple, chunk_bytes: int, layout: Any,
                  source: Source, provenance_source: str, to_table: Callable) -> list[Part] | BadInput:
    """On a worker: one piece of the source parsed batch by batch (as the local import does) and
    written as segments; its parts, or the first bad row's error (returned, not raised, so the
    driver can report the first one in file order)."""
    kind, a, b, first = piece
    store = Store(url, catalog_path)
    # a VersionWriter that never commits: segments of SEGMENT_ROWS, the last one partial
    writer = VersionWriter(store, "ray-import-piece", "import", {})
    if kind == "jsonl":
        # errors name the file as the user gave it, as a local import's do
        batches = jsonl_stream_batches(io.BytesIO(_range_bytes(where, a, b)), path, chunk_bytes, first)
    else:
        batches = parquet_batches(where, max(1, chunk_bytes // 512), row_groups=a, first=first)
    try:
        for batch in batches:
            writer.add_table(to_table(batch, layout, source, provenance_source))
    except BadInput as exc:
        return exc
    return writer.finish_parts()
