"""Export a version to a training file: JSONL, JSON, Parquet, a `datasets.Dataset` on disk, or the Hub.

Rows come out as a user's training code expects them: Alpaca records as instruction/input/output,
chat records as `messages`, with the metadata columns they were imported with. Files are written
beside their target and renamed into place, so a failed export leaves no half-written file.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from assay.core.errors import AssayError
from assay.core.progress import progress
from assay.core.ray_cluster import connect, resolve_engine, wait_next
from assay.core.records import export_row
from assay.core.store import Manifest, Part, Store

EXPORT_FORMATS = ("jsonl", "json", "parquet", "hf-disk", "hf")
EXPORT_BATCH_ROWS = 50_000  # rows converted to Arrow at a time: bounds an export's memory


@dataclass
class ExportConfig:
    format: str | None = field(default=None, metadata={
        "help": f"one of {', '.join(EXPORT_FORMATS)}; default: from the path ('hf:OWNER/NAME' pushes to the "
                "Hub, a path without extension is a saved HF dataset)"})
    provenance: bool = field(default=False, metadata={
        "help": "add '_id' and '_provenance' to every row (source, generator, model, parents)"})
    engine: str | None = field(default=None, metadata={
        "help": "local, or ray: each part's rows turned into JSON lines by a Ray task (jsonl and json only); "
                "default $ASSAY_ENGINE (formats ray cannot write then run locally), else local"})
    ray_address: str | None = field(default=None, metadata={
        "help": "the Ray cluster's head (host:port); default $RAY_ADDRESS, else a local cluster"})


def _format_of(path: str) -> str:
    if path.startswith("hf:"):
        return "hf"
    name = path.lower().removesuffix(".gz")
    if name.endswith((".jsonl", ".ndjson")):
        return "jsonl"
    if name.endswith(".json"):
        return "json"
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    if not Path(path).suffix:
        return "hf-disk"
    raise AssayError(f"{path}: cannot tell the export format from the extension; use --format "
                     f"({', '.join(EXPORT_FORMATS)})")


def iter_export_rows(store: Store, ref: str, provenance: bool = False, bar=None) -> Iterator[dict[str, Any]]:
    for frame in store.iter_frames(ref):
        if bar is not None:
            bar.advance(frame.height)
        yield from _export_rows(frame, provenance)


def _export_rows(frame, provenance: bool) -> Iterator[dict[str, Any]]:
    for row in frame.iter_rows(named=True):
        out = export_row(row)
        if provenance:
            out["_id"] = row["id"]
            out["_provenance"] = {k: row[k] for k in ("source", "source_row", "generator", "template",
                                                     "model", "parent_ids")}
            out["_provenance"]["sampling_params"] = json.loads(row["sampling_params"] or "{}")
        yield out


def _json_line(row: dict[str, Any]) -> str:
    return json.dumps(row, ensure_ascii=False)


def _part_lines(url: str, catalog_path: str, part: Part, provenance: bool) -> list[str]:
    """On a Ray worker: one part's rows as JSON lines, read straight from the workspace storage."""
    return [_json_line(row) for row in _export_rows(Store(url, catalog_path).read_part(part), provenance)]


def _lines_on_ray(store: Store, manifest: Manifest, provenance: bool, address: str | None, bar) -> Iterator[str]:
    """The version's JSON lines in order, each part converted by a Ray task; a few parts in flight
    at a time (twice the cluster's CPUs), so the driver holds a bounded number of parts."""
    ray = connect(address)
    task = ray.remote(max_retries=3)(_part_lines)
    window = 2 * max(1, int(ray.cluster_resources().get("CPU", 1)))
    parts, refs = manifest.parts, {}
    submitted = 0  # parts 0..submitted-1 have a task; those not yet yielded are in refs
    try:
        for k in range(len(parts)):
            while submitted < min(k + window, len(parts)):
                refs[submitted] = task.remote(store.url, str(store.catalog.path), parts[submitted], provenance)
                submitted += 1
            # the part in version order, however long it takes (the head is probed meanwhile)
            lines = ray.get(wait_next(ray, [refs.pop(k)], f"exporting {manifest.ref}"))
            bar.advance(len(lines))
            yield from lines
    except ray.exceptions.RayError as exc:
        raise AssayError(f"the Ray engine failed exporting {manifest.ref}: {exc}") from exc


def _tmp_beside(path: str) -> str:
    return f"{path}.tmp-{uuid.uuid4().hex}"


def export_version(store: Store, ref: str, path: str, config: ExportConfig | None = None) -> dict[str, Any]:
    config = config or ExportConfig()
    manifest = store.resolve(ref)
    fmt = config.format or _format_of(path)
    if fmt not in EXPORT_FORMATS:
        raise AssayError(f"unknown export format {fmt!r}: formats are {', '.join(EXPORT_FORMATS)}")
    if fmt != "hf":
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if fmt == "hf-disk" and os.path.exists(path):
        raise AssayError(f"{path}: already exists; choose a new folder for a saved dataset")

    engine = resolve_engine(config.engine)
    if engine == "ray" and fmt not in ("jsonl", "json"):
        if config.engine:
            raise AssayError(f"the ray engine exports jsonl and json, not {fmt}: use --engine local")
        engine = "local"  # ASSAY_ENGINE=ray names where work may go, not a format the user cannot get

    def rows(bar=None) -> Iterator[dict[str, Any]]:
        return iter_export_rows(store, manifest.id, config.provenance, bar)

    with progress(f"exporting {manifest.ref}", total=manifest.records) as bar:
        if fmt in ("jsonl", "json"):
            lines = (_lines_on_ray(store, manifest, config.provenance, config.ray_address, bar) if engine == "ray"
                     else map(_json_line, rows(bar)))
            _write_json(path, fmt, lines)
        elif fmt == "parquet":
            _write_parquet(path, rows, bar)
        else:
            _write_hf(path, fmt, rows, bar)
    return {"version": manifest.id, "ref": manifest.ref, "path": path, "format": fmt, "records": manifest.records}


def _write_json(path: str, fmt: str, lines: Iterator[str]) -> None:
    """`lines`: each row already as one line of JSON."""
    tmp = _tmp_beside(path)
    try:
        with fsspec.open(tmp, "wt", compression="gzip" if path.endswith(".gz") else None,
                         encoding="utf-8") as fh:
            if fmt == "jsonl":
                for line in lines:
                    fh.write(line + "\n")
            else:
                fh.write("[\n")
                for i, line in enumerate(lines):
                    fh.write((",\n" if i else "") + line)
                fh.write("\n]\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _batches(rows: Iterator[dict[str, Any]], path: str) -> Iterator[pa.Table]:
    while batch := list(itertools.islice(rows, EXPORT_BATCH_ROWS)):
        yield _table(batch, path)


def _write_parquet(path: str, rows, bar) -> None:
    """Two streaming passes, so memory stays flat: the first finds the one schema that holds every
    row's columns (metadata keys differ between rows), the second writes batch by batch in it."""
    schema = None
    for table in _batches(rows(), path):
        try:
            schema = table.schema if schema is None else pa.unify_schemas([schema, table.schema],
                                                                          promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise AssayError(f"{path}: metadata columns mix types across rows, which Parquet cannot hold "
                             f"({exc}); export to JSONL instead") from None
    tmp = _tmp_beside(path)
    try:
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            for table in _batches(rows(bar), path):
                missing = [f for f in schema if f.name not in table.column_names]
                for f in missing:
                    table = table.append_column(f, pa.nulls(table.num_rows, f.type))
                writer.write_table(table.select(schema.names).cast(schema))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _write_hf(path: str, fmt: str, rows, bar) -> None:
    """A `datasets.Dataset` built from a streamed Parquet file (memory-mapped, never held whole)."""
    import datasets

    with tempfile.TemporaryDirectory(prefix="assay-export-") as work:
        parquet = os.path.join(work, "rows.parquet")
        _write_parquet(parquet, rows, bar)
        ds = datasets.Dataset.from_parquet(parquet, cache_dir=os.path.join(work, "cache"))
        if fmt == "hf":
            try:
                ds.push_to_hub(path.removeprefix("hf:"))
            except Exception as exc:  # no network, no token, no rights: say which and why
                raise AssayError(f"{path}: cannot push to the Hugging Face Hub ({exc})") from None
            return
        tmp = _tmp_beside(path.rstrip("/"))
        try:
            ds.save_to_disk(tmp)
            os.replace(tmp, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _table(rows: list[dict[str, Any]], path: str) -> pa.Table:
    try:
        # pa.array infers one struct type from every row (from_pylist would look at the first only,
        # and drop the columns of chat rows that follow an Alpaca row)
        return pa.Table.from_struct_array(pa.array(rows))
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise AssayError(f"{path}: metadata columns mix types across rows, which Parquet cannot hold "
                         f"({exc}); export to JSONL instead") from None
