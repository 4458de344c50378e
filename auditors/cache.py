"""The per-record cache: results that depend only on a record's content (signatures, embeddings,
n-gram hits, flags), keyed by record id in Parquet chunks under the workspace, so auditing a child
version recomputes nothing for the records it shares with an audited parent."""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import Callable

import numpy as np
import polars as pl

from assay.core.errors import AssayError
from assay.core.progress import progress
from assay.core.store import Manifest, Store

# Records computed (and saved) per step. Bounds a step's memory, and is what a killed audit loses at
# most: the next run finds the finished chunks in the cache. ASSAY_AUDIT_CHUNK_ROWS overrides it.
COMPUTE_CHUNK_ROWS = 50_000


def compute_chunk_rows() -> int:
    value = os.environ.get("ASSAY_AUDIT_CHUNK_ROWS", "")
    if not value:
        return COMPUTE_CHUNK_ROWS
    if not value.isdigit() or int(value) < 1:
        raise AssayError(f"ASSAY_AUDIT_CHUNK_ROWS must be a positive whole number of records, not {value!r}")
    return int(value)

# (segment digest, rows in the segment, the segment rows the part keeps) per part, in version order
Layout = list[tuple[str, int, np.ndarray]]


def version_layout(store: Store, manifest: Manifest) -> Layout:
    out = []
    for part in manifest.parts:
        mask = store.part_mask(part)
        out.append((part.segment, part.rows, np.arange(part.rows) if mask is None else np.flatnonzero(mask)))
    return out


class RecordCache:
    """Per-record results keyed by record id, in Parquet chunks under `<workspace>/cache/<namespace>/`.

    Two kinds of chunk, both only ever added (atomically), so concurrent audits at worst compute a
    record twice:
    - `seg/<segment digest>/<first row>-<uuid>.parquet`: results for rows of one stored segment,
      with their row numbers (`_row`). A version is segments plus selection bitmaps, and a filtered child keeps its
      parent's segments, so a child's results are its parent's chunks indexed by the child's bitmap:
      no hash join of record ids, which was most of a cached re-audit's time.
    - `<uuid>.parquet` (and the segment chunks too): found by record id, for records whose content
      is stored in another segment (the same record imported twice, a merge) or for callers without
      a version (`layout` None).
    """

    def __init__(self, store: Store, namespace: str, layout: Layout | None = None,
                 known_ids: pl.Series | None = None):
        self.store = store
        self.namespace = namespace
        self.dir = store.path("cache", namespace)
        store.makedirs(self.dir)
        self.layout = layout
        # every id cached when the audit began (`cached_ids`), when the caller read them once: an id
        # not among them is not looked up in every chunk, which would make a cold audit that runs
        # part by part read the chunks of all earlier parts again for each part
        self.known_ids = known_ids
        self.hits = 0
        self.misses = 0
        self._segments: dict[str, tuple[pl.DataFrame | None, np.ndarray, bool]] = {}  # read once

    def _chunks(self) -> list[str]:
        return sorted(p for p in self.store.fs.find(self.dir) if p.endswith(".parquet"))

    def _segment_dir(self, segment: str) -> str:
        return f"{self.dir}/seg/{segment}"

    def cached_ids(self) -> pl.Series:
        """Every record id this cache holds results for (reads only the id column of each chunk)."""
        chunks = self._chunks()
        if not chunks:
            return pl.Series("id", [], dtype=pl.String)
        scans = [pl.scan_parquet(self.store.open_for_read(c)).select("id") for c in chunks]
        return pl.concat(scans).unique().collect()["id"]

    def lookup(self, ids: pl.Series) -> pl.DataFrame | None:
        if self.known_ids is not None:
            ids = ids.filter(ids.is_in(self.known_ids.implode()))
            if ids.is_empty():
                return None
        chunks = self._chunks()
        if not chunks:
            return None
        wanted = ids.unique().implode()
        scans = [pl.scan_parquet(self.store.open_for_read(c)).select(pl.exclude("_row")) for c in chunks]
        return (pl.concat(scans, how="vertical_relaxed").filter(pl.col("id").is_in(wanted))
                .unique("id", keep="first").collect())

    def add(self, frame: pl.DataFrame, segment: str | None = None) -> None:
        if frame.height:
            buf = io.BytesIO()
            # lz4: reading is a cached re-audit's main cost, and signatures are random bits that
            # zstd cannot shrink but takes 4x longer to decode
            frame.write_parquet(buf, compression="lz4")
            name = f"{uuid.uuid4().hex}.parquet"
            where = self.dir
            if segment is not None:
                where = self._segment_dir(segment)
                self.store.makedirs(where)
                # named by first row, so a segment's chunks listed by name are usually in row order
                name = f"{int(frame['_row'].min()):012d}-{name}"
            self.store.write_atomic(f"{where}/{name}", buf.getvalue())

    def covers(self) -> bool:
        """Whether every row of the layout has its result cached by segment row: then get_or_compute
        reads no field of `records` but `id`, and the caller need not read the texts at all."""
        if self.layout is None:
            return False
        for segment, segment_rows, rows in self.layout:
            if segment not in self._segments:
                self._segments[segment] = self._segment_results(segment, segment_rows)
            frame, where, _ = self._segments[segment]
            if frame is None or not (where[rows] >= 0).all():
                return False
        return True

    def get_or_compute(self, records: pl.DataFrame, compute: Callable[[pl.DataFrame], pl.DataFrame]) -> pl.DataFrame:
        """Results for every row of `records` (same order), computing only records not yet cached.
        `compute` gets unique uncached rows and returns a frame with `id` plus result columns.
        With a layout (the rows are a stored version's, in order) results are found by segment row."""
        layout = self.layout
        if layout is None or sum(rows.size for _, _, rows in layout) != records.height:
            return self._by_id(records, compute, self.add)
        return self._by_segment(records, compute, layout)

    def _by_id(self, records: pl.DataFrame, compute: Callable[[pl.DataFrame], pl.DataFrame],
               save: Callable[[pl.DataFrame], None]) -> pl.DataFrame:
        first = records["id"].is_first_distinct()
        unique = records if first.all() else records.filter(first)  # no copy when ids are distinct
        found = self.lookup(unique["id"])
        missing = unique if found is None else unique.join(found.select("id"), on="id", how="anti")
        self.misses += missing.height
        self.hits += unique.height - missing.height
        # in chunks: per-record work (regexes, n-gram lists, signatures) builds intermediates many
        # times the size of the text, so a million records at once would need tens of GB; each
        # chunk is saved as it is done, so an interrupted audit keeps its work
        parts = [] if found is None else [found]
        step = compute_chunk_rows()
        # the namespace is "<auditor>/<config hash>" (or "embeddings/<model>/<column>")
        label = "computing " + self.namespace.split("/")[0]
        with progress(label, total=missing.height, enabled=None if missing.height > step else False) as bar:
            for start in range(0, missing.height, step):
                computed = compute(missing.slice(start, step))
                save(computed)
                parts.append(computed)
                bar.advance(computed.height)
        if parts:
            found = pl.concat(parts, how="vertical_relaxed") if len(parts) > 1 else parts[0]
        if missing.height == records.height and found["id"].equals(records["id"]):
            return found  # all computed, once each, in the records' order: no join needed
        return records.select("id").join(found, on="id", how="left", maintain_order="left")

    def _segment_results(self, segment: str, rows: int) -> tuple[pl.DataFrame | None, np.ndarray, bool]:
        """The cached results of one segment's rows and, per segment row, its row in them (-1: none)."""
        where = -np.ones(rows, dtype=np.int64)
        folder = self._segment_dir(segment)
        files = sorted(p for p in self.store.listdir(folder) if p.endswith(".parquet"))
        if not files:
            return None, where, False
        frame = pl.concat([pl.read_parquet(self.store.open_for_read(f)) for f in files], how="vertical_relaxed")
        rows_cached = frame["_row"].to_numpy()
        where[rows_cached] = np.arange(frame.height)  # a row cached twice: the later chunk
        # in row order, each row once (the usual case): a part's rows can then be taken by a boolean
        # filter, which shares string buffers, instead of a gather, which copies them (8x slower)
        in_order = bool((rows_cached[1:] > rows_cached[:-1]).all())
        return frame.drop("_row"), where, in_order

    def _by_segment(self, records: pl.DataFrame, compute: Callable[[pl.DataFrame], pl.DataFrame],
                    layout: Layout) -> pl.DataFrame:
        n = records.height
        segments = self._segments
        found, found_pos = [], []
        names = [segment for segment, _, _ in layout]
        miss_part, miss_row, miss_pos = [], [], []
        offset = 0
        for k, (segment, segment_rows, rows) in enumerate(layout):
            if segment not in segments:
                segments[segment] = self._segment_results(segment, segment_rows)
            frame, where, in_order = segments[segment]
            index = where[rows]
            hit = index >= 0
            if frame is not None and hit.any():
                if in_order:  # rows ascend, so the kept chunk rows are in the part's order
                    keep = np.zeros(frame.height, dtype=bool)
                    keep[index[hit]] = True
                    found.append(frame.filter(pl.Series(keep)))
                else:
                    found.append(frame[index[hit]])
                found_pos.append(offset + np.flatnonzero(hit))
            if not hit.all():
                miss_part.append(np.full(int((~hit).sum()), k, dtype=np.int64))
                miss_row.append(rows[~hit])
                miss_pos.append(offset + np.flatnonzero(~hit))
            offset += rows.size
        if miss_pos:
            pos = np.concatenate(miss_pos)
            missing = records[pos]
            where_rows = pl.DataFrame({"id": missing["id"], "_part": np.concatenate(miss_part),
                                       "_row": np.concatenate(miss_row).astype(np.int64)})
            written: list[pl.Series] = []

            def save(computed: pl.DataFrame) -> None:
                # computed rows go to every segment row holding that record
                written.append(computed["id"])
                save_by_segment(where_rows.join(computed, on="id", how="inner"))

            def save_by_segment(rows: pl.DataFrame) -> None:
                for (k,), part in rows.group_by("_part"):
                    self.add(part.drop("_part").select("_row", pl.exclude("_row")), names[k])

            resolved = self._by_id(missing, compute, save)
            # records found by id in other chunks: saved under this version's segments for next time
            done = pl.concat(written) if written else pl.Series("id", [], dtype=pl.String)
            save_by_segment(where_rows.with_columns(resolved.drop("id")).filter(~pl.col("id").is_in(done.implode())))
            found.append(resolved)
            found_pos.append(pos)
        self.hits += sum(f.height for f in found[:len(found) - bool(miss_pos)])  # rows read by segment
        result = pl.concat(found, how="vertical_relaxed") if len(found) > 1 else found[0]
        order = np.concatenate(found_pos)
        if not (order[1:] > order[:-1]).all():
            inverse = np.empty(n, dtype=np.int64)
            inverse[order] = np.arange(n)
            result = result[inverse]
        return result
