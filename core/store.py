"""The version store: immutable versions over content-addressed record segments.

Layout of a workspace (any fsspec URL; the default is the local folder `./.assay`):

    catalog.sqlite                      which versions exist (the source of truth for visibility)
    objects/segments/<hash>.parquet     record rows, written once, named by the hash of their bytes
    objects/selections/<hash>.bits      which rows of a segment a version keeps (packed bitmap, zlib)
    manifests/<version id>.json         a version's manifest, named by the hash of its content

A version is an ordered list of *parts*; a part is a segment, optionally narrowed by a selection
bitmap. A filtered child therefore writes one bitmap per segment (about 1 bit per parent row)
instead of copying records, and reading a version never follows a chain of parents.

Commit order makes it atomic: objects first (content-addressed, so a leftover object is invisible
garbage), then, inside one SQLite write transaction, the manifest file and the catalog row. A
process killed before COMMIT leaves at most an unreferenced manifest that `verify` reports as a note.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from . import storage
from .catalog import Catalog
from .errors import AssayError, UnknownVersion
from .manifest import Manifest, Part, check_dataset_name, code_version, hash_bytes, pack_bits, unpack_bits
from .progress import progress
from .records import RECORD_SCHEMA

# 100k rows a segment keeps a segment's memory at tens of MB while writing; 10k rows a row group
# lets a page of 50 records be read without touching the rest of the segment.
SEGMENT_ROWS = 100_000
ROW_GROUP_ROWS = 10_000
DICTIONARY_COLUMNS = ["source", "generator", "template", "model", "sampling_params"]

def default_workspace() -> str:
    return os.environ.get("ASSAY_WORKSPACE") or ".assay"


class Store:
    """A workspace: the catalog plus the object files, reached through fsspec."""

    def __init__(self, root: str | os.PathLike | None = None, catalog_path: str | None = None):
        root = str(root or default_workspace())
        self.fs, self.root, self.local = storage.open_filesystem(root)
        # what a child process (a background job) passes to `assay -w` to reach the same workspace
        self.url = self.root if self.local else root
        catalog_path = catalog_path or os.environ.get("ASSAY_CATALOG")
        if catalog_path is None:
            if not self.local:
                raise AssayError(f"workspace {root} is not a local folder: its catalog must be local; "
                                 "set ASSAY_CATALOG to a local file path")
            catalog_path = os.path.join(self.root, "catalog.sqlite")
        for sub in ("objects/segments", "objects/selections", "manifests"):
            self.makedirs(self.path(sub))
        self.catalog = Catalog(catalog_path)

    @property
    def local_dir(self) -> Path:
        """A local folder for what only a local disk can hold (model caches that runtimes load from
        files): the workspace itself, or ~/.cache/assay for a workspace on object storage."""
        return Path(self.root) if self.local else Path.home() / ".cache" / "assay"

    # ---- paths and atomic writes (also used by the auditors' cache and results) ----------------
    def path(self, *parts: str) -> str:
        """A path inside the workspace (modules keep their files under their own folder)."""
        return "/".join([self.root.rstrip("/"), *parts])

    def segment_path(self, digest: str) -> str:
        return self.path("objects", "segments", f"{digest}.parquet")

    def selection_path(self, digest: str) -> str:
        return self.path("objects", "selections", f"{digest}.bits")

    def manifest_path(self, version_id: str) -> str:
        return self.path("manifests", f"{version_id}.json")

    def makedirs(self, path: str) -> None:
        storage.makedirs(self.fs, self.local, path)

    def listdir(self, path: str) -> list[str]:
        return storage.listdir(self.fs, path)

    def write_atomic(self, path: str, data: bytes) -> None:
        storage.write_atomic(self.fs, self.local, path, data)

    def _put_object(self, path_of, data: bytes) -> str:
        digest = hash_bytes(data)
        path = path_of(digest)
        if not self._exists(path):  # content-addressed: an existing object is the same bytes
            self.write_atomic(path, data)
        return digest

    def _exists(self, path: str) -> bool:
        try:
            return self.fs.exists(path)
        except PermissionError:
            # S3 answers HEAD on a missing key with 403 where the key may not list the bucket (moto
            # 5.2.6 does so even where it may): not known to exist, so write it; a key that may not
            # write either gets the store's one-line error there, and a write-only key succeeds
            return False

    def put_segment(self, table: pa.Table) -> Part:
        """Write record rows (RECORD_SCHEMA) as one segment and return the part that keeps them all."""
        table = table.cast(RECORD_SCHEMA) if table.schema != RECORD_SCHEMA else table
        buf = io.BytesIO()
        # dictionary pages only where values repeat (provenance columns): on free text pyarrow
        # builds a dictionary, finds it useless and falls back, which costs ~15% of the write
        pq.write_table(table, buf, row_group_size=ROW_GROUP_ROWS, compression="zstd",
                       use_dictionary=DICTIONARY_COLUMNS)
        digest = self._put_object(self.segment_path, buf.getvalue())
        return Part(segment=digest, rows=table.num_rows, kept=table.num_rows)

    def put_selection(self, part: Part, mask: np.ndarray) -> Part:
        """Narrow a segment to the rows where `mask` is true (mask is over the segment's rows)."""
        kept = int(mask.sum())
        if kept == part.rows:
            return Part(segment=part.segment, rows=part.rows, kept=kept)
        digest = self._put_object(self.selection_path, pack_bits(mask))
        return Part(segment=part.segment, rows=part.rows, selection=digest, kept=kept)

    # ---- reading objects ----------------------------------------------------------------------
    def open_for_read(self, path: str):
        """What Polars/pyarrow read from: the plain path on a local disk (memory-mapped), else a file object."""
        return path if self.local else self.fs.open(path, "rb")

    def part_mask(self, part: Part) -> np.ndarray | None:
        if part.selection is None:
            return None
        with self.fs.open(self.selection_path(part.selection), "rb") as fh:
            return unpack_bits(fh.read(), part.rows)

    def read_part(self, part: Part, columns: list[str] | None = None) -> pl.DataFrame:
        df = pl.read_parquet(self.open_for_read(self.segment_path(part.segment)), columns=columns)
        mask = self.part_mask(part)
        return df if mask is None else df.filter(pl.Series(mask))

    # ---- commit -------------------------------------------------------------------------------
    def commit(self, dataset: str, parts: list[Part], *, operation: str, params: dict[str, Any],
               parents: list[str] | None = None) -> Manifest:
        """Publish a new version of `dataset` made of `parts` (whose objects are already written)."""
        check_dataset_name(dataset)
        parents = list(parents or [])
        parts = [p for p in parts if p.kept > 0]
        content_hash = self._content_hash(parts)
        code = code_version()  # before taking the write lock: it may run git
        with self.catalog.write() as conn:
            number = conn.execute("SELECT COALESCE(MAX(number), 0) + 1 FROM versions WHERE dataset = ?",
                                  (dataset,)).fetchone()[0]
            manifest = Manifest(
                dataset=dataset, number=number, parents=parents, operation=operation, params=params,
                code_version=code,
                created_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds"),
                records=sum(p.kept for p in parts), content_hash=content_hash, parts=parts)
            manifest.id = manifest.body_hash()
            path = self.manifest_path(manifest.id)
            self.write_atomic(path, manifest.model_dump_json(indent=1).encode("utf-8"))
            conn.execute(
                "INSERT INTO versions (id, dataset, number, created_at, operation, records, content_hash,"
                " parents, manifest_path) VALUES (?,?,?,?,?,?,?,?,?)",
                (manifest.id, dataset, number, manifest.created_at, operation, manifest.records,
                 content_hash, json.dumps(parents), path))
        return manifest

    def _content_hash(self, parts: list[Part]) -> str:
        h = hashlib.blake2b(digest_size=16)
        for part in parts:
            ids = self.read_part(part, ["id"])["id"]
            h.update(("\n".join(ids.to_list()) + "\n").encode("utf-8"))
        return h.hexdigest()

    # ---- resolving references -----------------------------------------------------------------
    def resolve(self, ref: str) -> Manifest:
        """A version by id, unique id prefix, NAME (latest version) or NAME@N."""
        ref = (ref or "").strip()
        if not ref:
            raise UnknownVersion("empty version reference")
        rows: list = []
        if "@" in ref:
            name, _, num = ref.rpartition("@")
            if not num.isdigit():
                raise UnknownVersion(f"unknown version {ref!r}: expected NAME@N with N a number")
            rows = self.catalog.query("SELECT id FROM versions WHERE dataset = ? AND number = ?", (name, int(num)))
            if not rows:
                latest = self.catalog.query("SELECT MAX(number) AS n FROM versions WHERE dataset = ?", (name,))
                known = f"{name} has versions 1..{latest[0]['n']}" if latest[0]["n"] else f"no dataset named {name!r}"
                raise UnknownVersion(f"unknown version {ref!r}: {known}")
        else:
            rows = self.catalog.query(
                "SELECT id FROM versions WHERE dataset = ? ORDER BY number DESC LIMIT 1", (ref,))
            if not rows and re.fullmatch(r"[0-9a-f]{4,32}", ref):
                rows = self.catalog.query("SELECT id FROM versions WHERE id LIKE ? LIMIT 2", (ref + "%",))
                if len(rows) > 1:
                    raise UnknownVersion(f"ambiguous version prefix {ref!r}: give more characters")
            if not rows:
                hint = "" if len(ref) >= 4 else " (an id prefix needs at least 4 characters)"
                raise UnknownVersion(f"unknown version {ref!r}: no dataset, id or id prefix matches{hint}")
        return self.load_manifest(rows[0]["id"])

    def load_manifest(self, version_id: str) -> Manifest:
        with self.fs.open(self.manifest_path(version_id), "rb") as fh:
            return Manifest.model_validate_json(fh.read())

    def versions(self, dataset: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT id, dataset, number, created_at, operation, records, parents FROM versions"
        rows = (self.catalog.query(sql + " WHERE dataset = ? ORDER BY number", (dataset,)) if dataset
                else self.catalog.query(sql + " ORDER BY dataset, number"))
        return [{**Catalog.row_to_summary(r), "ref": f"{r['dataset']}@{r['number']}"} for r in rows]

    # ---- reading versions ---------------------------------------------------------------------
    def iter_frames(self, ref: str | Manifest, columns: list[str] | None = None) -> Iterator[pl.DataFrame]:
        """The version's rows, part by part (at most a segment in memory at a time)."""
        manifest = ref if isinstance(ref, Manifest) else self.resolve(ref)
        for part in manifest.parts:
            yield self.read_part(part, columns)

    def read(self, ref: str | Manifest, columns: list[str] | None = None) -> pl.DataFrame:
        frames = list(self.iter_frames(ref, columns))
        if not frames:  # a version with no records still has the record columns
            return pl.from_arrow(RECORD_SCHEMA.empty_table()).select(columns or RECORD_SCHEMA.names)
        return pl.concat(frames, how="vertical")

    def page(self, ref: str | Manifest, page: int, size: int = 50) -> pl.DataFrame:
        """Rows [page*size, (page+1)*size) of a version, reading only the row groups that hold them."""
        manifest = ref if isinstance(ref, Manifest) else self.resolve(ref)
        if page < 0 or size <= 0:
            raise AssayError("page must be >= 0 and size > 0")
        start, stop = page * size, min((page + 1) * size, manifest.records)
        return self.rows_at(manifest, np.arange(start, max(start, stop))).drop("_pos")

    def rows_at(self, manifest: Manifest, positions: np.ndarray | list[int]) -> pl.DataFrame:
        """The version's rows at `positions` (any order, kept), with `_pos`; reads only their row groups."""
        positions = np.asarray(positions, dtype=np.int64)
        if positions.size and (positions.min() < 0 or positions.max() >= manifest.records):
            raise AssayError(f"row position out of range for {manifest.ref} ({manifest.records} records)")
        pieces: list[pl.DataFrame] = []
        offset = 0
        for part in manifest.parts:
            wanted = positions[(positions >= offset) & (positions < offset + part.kept)]
            if wanted.size:
                mask = self.part_mask(part)
                seg_rows = wanted - offset if mask is None else np.flatnonzero(mask)[wanted - offset]
                pf = pq.ParquetFile(self.open_for_read(self.segment_path(part.segment)))
                # map segment rows to row groups, read just those groups, then take the rows from them
                sizes = np.array([pf.metadata.row_group(i).num_rows for i in range(pf.num_row_groups)])
                bounds = np.concatenate([[0], np.cumsum(sizes)])
                group_of = np.searchsorted(bounds, seg_rows, side="right") - 1
                groups = np.unique(group_of)
                table = pl.from_arrow(pf.read_row_groups(groups.tolist()))
                start_in_table = np.concatenate([[0], np.cumsum(sizes[groups])])[:-1]
                local = seg_rows - bounds[group_of] + start_in_table[np.searchsorted(groups, group_of)]
                # take through polars: pyarrow's take would import pandas on first use (~0.3 s a process)
                pieces.append(table[local.tolist()].with_columns(_pos=pl.Series(wanted, dtype=pl.Int64)))
            offset += part.kept
        if not pieces:
            return pl.from_arrow(RECORD_SCHEMA.empty_table()).with_columns(_pos=pl.Series([], dtype=pl.Int64))
        found = pl.concat(pieces)
        order = pl.DataFrame({"_pos": positions}).with_row_index("_order")
        return (order.join(found.unique("_pos", maintain_order=True), on="_pos", how="left")
                .sort("_order").drop("_order"))

    # ---- operations over versions -------------------------------------------------------------
    def filter(self, ref: str, where: str, name: str | None = None, *,
               extra: pl.DataFrame | None = None) -> Manifest:
        """A child version keeping the rows for which the SQL condition `where` is true.

        `extra` adds columns the condition may use, such as audit scores: keyed by `_pos` (the row's
        position in the version, for results that differ between two rows of one record) or else by
        `id`. The child stores a bitmap per segment, not a copy of the kept rows."""
        parent = self.resolve(ref)
        try:
            predicate = pl.sql_expr(where)
        except pl.exceptions.PolarsError as exc:  # syntax errors, unsupported functions, ...
            raise AssayError(f"invalid --where {where!r}: {exc}") from exc
        parts: list[Part] = []
        offset = 0
        with progress(f"filtering {parent.ref}", total=parent.records) as bar:
            for part in parent.parts:
                parts.append(self._filter_part(part, offset, predicate, where, extra))
                offset += part.kept
                bar.advance(part.kept)
        return self.commit(name or parent.dataset, parts, operation="filter",
                           params={"where": where, "from": parent.ref}, parents=[parent.id])

    def _filter_part(self, part: Part, offset: int, predicate: pl.Expr, where: str,
                     extra: pl.DataFrame | None) -> Part:
        df = pl.read_parquet(self.open_for_read(self.segment_path(part.segment))).with_row_index("_row")
        mask = self.part_mask(part)
        if mask is not None:
            df = df.filter(pl.Series(mask))
        if extra is not None:
            df = df.with_row_index("_pos", offset=offset)
            key = "_pos" if "_pos" in extra.columns else "id"
            df = df.join(extra.drop("id", strict=False) if key == "_pos" else extra, on=key, how="left")
        try:
            kept_rows = df.filter(predicate)["_row"].to_numpy()
        except pl.exceptions.ColumnNotFoundError as exc:
            cols = ", ".join(c for c in df.columns if c not in ("_row", "_pos"))
            raise AssayError(f"invalid --where {where!r}: unknown column ({exc}); columns are: {cols}") from exc
        except pl.exceptions.PolarsError as exc:  # e.g. a condition that is not boolean
            raise AssayError(f"invalid --where {where!r}: {exc}") from exc
        new_mask = np.zeros(part.rows, dtype=bool)
        new_mask[kept_rows] = True
        return self.put_selection(part, new_mask)

    def ids(self, ref: str | Manifest) -> pl.Series:
        frames = [f["id"] for f in self.iter_frames(ref, ["id"])]
        return pl.concat(frames) if frames else pl.Series("id", [], dtype=pl.String)

    def diff(self, a: str, b: str, *, sample: int = 0) -> dict[str, Any]:
        """Records added, removed and unchanged from version a to version b, by record id (a record
        held twice counts once). Reads only the id column."""
        ma, mb = self.resolve(a), self.resolve(b)
        ia, ib = self.ids(ma).unique(), self.ids(mb).unique()
        added, removed = ib.filter(~ib.is_in(ia.implode())), ia.filter(~ia.is_in(ib.implode()))
        out: dict[str, Any] = {"a": ma.summary(), "b": mb.summary(), "added": added.len(),
                               "removed": removed.len(), "unchanged": ib.len() - added.len()}
        if sample:
            out["added_records"] = self._rows_by_id(mb, added.head(sample).to_list())
            out["removed_records"] = self._rows_by_id(ma, removed.head(sample).to_list())
        return out

    def _rows_by_id(self, manifest: Manifest, ids: list[str]) -> list[dict[str, Any]]:
        if not ids:
            return []
        found = pl.concat([f.filter(pl.col("id").is_in(ids)) for f in self.iter_frames(manifest)])
        return found.unique("id", keep="first", maintain_order=True).to_dicts()

    def lineage(self, ref: str) -> list[dict[str, Any]]:
        """The version and its ancestors, newest first, each with its operation and parameters."""
        seen: set[str] = set()
        queue = [self.resolve(ref).id]
        out = []
        while queue:
            vid = queue.pop(0)
            if vid in seen:
                continue
            seen.add(vid)
            m = self.load_manifest(vid)
            out.append({**m.summary(), "params": m.params})
            queue.extend(m.parents)
        return out

    # ---- integrity ----------------------------------------------------------------------------
    def verify(self) -> dict[str, Any]:
        """Check every catalogued version: its manifest against its id, every segment and selection
        against its hash and row counts, and the record count and content hash. Problems make the
        workspace invalid; notes (leftovers of killed writes) do not."""
        problems: list[str] = []
        notes: list[str] = []
        checked_objects: dict[str, str | None] = {}
        rows = self.catalog.query("SELECT * FROM versions ORDER BY dataset, number")

        def check_object(path: str, digest: str) -> str | None:
            if path not in checked_objects:
                if not self.fs.exists(path):
                    checked_objects[path] = "missing"
                else:
                    with self.fs.open(path, "rb") as fh:
                        checked_objects[path] = None if hash_bytes(fh.read()) == digest else "hash mismatch"
            return checked_objects[path]

        with progress("verifying", total=len(rows)) as bar:
            for row in rows:
                self._verify_version(row, problems, check_object)
                bar.advance()
        catalogued = {Path(r["manifest_path"]).name for r in rows}
        for path in self.listdir(self.path("manifests")):
            name = path.rsplit("/", 1)[-1]
            if ".tmp-" in name:
                notes.append(f"leftover temporary file {name} (a killed write; safe to delete)")
            elif name not in catalogued:
                notes.append(f"manifest {name} is not in the catalog (a killed commit; invisible)")
        for sub in ("segments", "selections"):
            for path in self.listdir(self.path("objects", sub)):
                if ".tmp-" in path.rsplit("/", 1)[-1]:
                    notes.append(f"leftover temporary file objects/{sub}/{path.rsplit('/', 1)[-1]}")
        return {"ok": not problems, "versions": len(rows), "problems": problems, "notes": notes}

    def _verify_version(self, row, problems: list[str], check_object) -> None:
        label = f"{row['dataset']}@{row['number']} ({row['id'][:12]})"
        try:
            with self.fs.open(row["manifest_path"], "rb") as fh:
                m = Manifest.model_validate_json(fh.read())
        except Exception as exc:
            problems.append(f"{label}: manifest unreadable: {exc}")
            return
        if m.body_hash() != row["id"] or m.id != row["id"]:
            problems.append(f"{label}: manifest does not match its id (edited or corrupt)")
            return
        if (m.dataset, m.number, m.records, m.content_hash) != (
                row["dataset"], row["number"], row["records"], row["content_hash"]):
            problems.append(f"{label}: catalog row disagrees with the manifest")
        ok_parts = True
        for part in m.parts:
            seg = self.segment_path(part.segment)
            err = check_object(seg, part.segment)
            if err:
                problems.append(f"{label}: segment {part.segment}: {err}")
                ok_parts = False
            elif (n := pq.ParquetFile(self.open_for_read(seg)).metadata.num_rows) != part.rows:
                problems.append(f"{label}: segment {part.segment} has {n} rows, manifest says {part.rows}")
                ok_parts = False
            if part.selection:
                err = check_object(self.selection_path(part.selection), part.selection)
                if err:
                    problems.append(f"{label}: selection {part.selection}: {err}")
                    ok_parts = False
                elif int(self.part_mask(part).sum()) != part.kept:
                    problems.append(f"{label}: selection {part.selection} keeps a different row count")
                    ok_parts = False
        if ok_parts:
            if sum(p.kept for p in m.parts) != m.records:
                problems.append(f"{label}: record count does not add up")
            elif self._content_hash(m.parts) != m.content_hash:
                problems.append(f"{label}: content hash mismatch")


@dataclass
class VersionWriter:
    """Collects new record rows into segments, then commits them as one version.

    Use as a context manager: if the body raises, nothing is committed."""

    store: Store
    dataset: str
    operation: str
    params: dict[str, Any]
    parents: list[str] = field(default_factory=list)
    parts: list[Part] = field(default_factory=list)
    _pending: list[pa.Table] = field(default_factory=list)
    _pending_rows: int = 0
    manifest: Manifest | None = None

    def __post_init__(self):
        check_dataset_name(self.dataset)

    def add_table(self, table: pa.Table) -> None:
        self._pending.append(table)
        self._pending_rows += table.num_rows
        while self._pending_rows >= SEGMENT_ROWS:
            self._flush(SEGMENT_ROWS)

    def add_parts(self, parts: Iterable[Part]) -> None:
        self._flush(None)
        self.parts.extend(parts)

    def _flush(self, rows: int | None) -> None:
        if not self._pending_rows:
            return
        table = pa.concat_tables(self._pending)
        take = table.num_rows if rows is None else rows
        self.parts.append(self.store.put_segment(table.slice(0, take)))
        rest = table.slice(take)
        self._pending = [rest] if rest.num_rows else []
        self._pending_rows = rest.num_rows

    def finish_parts(self) -> list[Part]:
        """Write what is pending as a last segment and give every part, without committing (a Ray
        import task writes its segments this way; the driver commits all the tasks' parts)."""
        self._flush(None)
        return list(self.parts)

    @property
    def records(self) -> int:
        return sum(p.kept for p in self.parts) + self._pending_rows

    def commit(self) -> Manifest:
        self._flush(None)
        self.manifest = self.store.commit(self.dataset, self.parts, operation=self.operation,
                                          params=self.params, parents=self.parents)
        return self.manifest

    def __enter__(self) -> "VersionWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None and self.manifest is None:
            self.commit()
