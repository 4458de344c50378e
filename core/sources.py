"""Where records come from: reading a file, a saved Hugging Face dataset or a Hub dataset id as
numbered rows, so that every problem can name its file and line (or row, or element).

The importer, the generators' seeds, the benchmark loader and the trainer's reference set all read
their sources through here, so they accept the same formats and name rows the same way.
`read_seeds` is the one "a version, a file or hf:OWNER/NAME" reader every generator starts from.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import fsspec

from assay.core.errors import AssayError, BadInput
from assay.core.records import export_row, record_id

if TYPE_CHECKING:
    from assay.core.store import Store

FORMATS = ("jsonl", "json", "csv", "tsv", "parquet", "hf-disk", "hf")
# Tried in order when the canonical column is absent and --map does not name one.
ALIASES = {
    "instruction": ("prompt", "question", "query", "problem"),
    "input": ("context",),
    "output": ("response", "completion", "answer", "solution"),
    "messages": ("conversations",),
}

@dataclass
class Source:
    label: str  # how errors and provenance name it
    unit: str  # "line", "row" or "element"
    rows: Iterator[tuple[int, Any]]  # (1-based position, parsed row)
    format: str


def detect_format(path: str) -> str:
    if path.startswith("hf:"):
        return "hf"
    if os.path.isdir(path):
        return "hf-disk"
    name = path.lower()
    for suffix in (".gz", ".bz2", ".xz", ".zst"):
        name = name.removesuffix(suffix)
    for fmt, exts in (("jsonl", (".jsonl", ".ndjson")), ("json", (".json",)), ("csv", (".csv",)),
                      ("tsv", (".tsv",)), ("parquet", (".parquet", ".pq"))):
        if name.endswith(exts):
            return fmt
    raise AssayError(f"{path}: cannot tell the format from the extension; use --format "
                     f"({', '.join(FORMATS)})")


def open_source(path: str, fmt: str | None, split: str | None) -> Source:
    fmt = fmt or detect_format(path)
    if fmt not in FORMATS:
        raise AssayError(f"unknown format {fmt!r}: formats are {', '.join(FORMATS)}")
    if fmt == "hf":
        return _hf_hub(path.removeprefix("hf:"), split)
    if "://" not in path and not os.path.exists(path):
        hint = (f" (for a Hugging Face Hub dataset, write hf:{path})"
                if re.fullmatch(r"[\w.-]+/[\w.-]+", path) and "." not in Path(path).suffix else "")
        raise AssayError(f"{path}: no such file or folder{hint}")
    if fmt == "hf-disk":
        return _hf_disk(path, split)
    if fmt in ("jsonl", "json"):
        return Source(path, "line", _json_rows(path, fmt), fmt)
    if fmt in ("csv", "tsv"):
        return Source(path, "row", _csv_rows(path, "\t" if fmt == "tsv" else ","), fmt)
    return Source(path, "row", _parquet_rows(path), fmt)


def _json_rows(path: str, fmt: str) -> Iterator[tuple[int, Any]]:
    with fsspec.open(path, "rt", compression="infer", encoding="utf-8") as fh:
        line_no = 0
        try:
            if fmt == "json":
                text = fh.read()
                first = text.lstrip()[:1]
                if first == "[":
                    yield from _json_array(path, text)
                    return
                if not first:
                    return
                # A .json file that is not an array is, in practice, JSON Lines (many Hub datasets
                # ship them so); a single object is one record.
                lines = iter(text.split("\n"))
            else:
                lines = fh
            for line_no, line in enumerate(lines, 1):
                if line.strip():
                    yield line_no, parse_json_line(path, line, line_no)
        except UnicodeDecodeError as exc:
            raise BadInput(path, f"not UTF-8 text ({exc.reason})", line=line_no + 1) from None
        except (OSError, EOFError) as exc:  # e.g. a .gz that is not gzip
            raise BadInput(path, f"cannot read: {exc}") from None


def parse_json_line(path: str, line: str, line_no: int) -> Any:
    """One line of a JSON Lines file; a bad one names its file, line and column (of the line without
    its line end, so that a line cut short reads 'at column <its length + 1>', not at column 1 of
    the next)."""
    try:
        return json.loads(line.rstrip("\r\n"))
    except json.JSONDecodeError as exc:
        raise BadInput(path, f"not valid JSON ({exc.msg} at column {exc.colno})", line=line_no) from None


def _json_array(path: str, text: str) -> Iterator[tuple[int, Any]]:
    """Elements of a JSON array with the line each starts on (json.load would lose that)."""
    decoder = json.JSONDecoder()
    ws = re.compile(r"[ \t\n\r]*")
    pos, line, counted = text.index("[") + 1, 1, 0

    def line_at(p: int) -> int:
        nonlocal line, counted
        line += text.count("\n", counted, p)
        counted = p
        return line

    pos = ws.match(text, pos).end()
    if text[pos:pos + 1] == "]":
        return
    while True:
        try:
            value, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise BadInput(path, f"not valid JSON ({exc.msg} at column {exc.colno})", line=exc.lineno) from None
        yield line_at(pos), value
        pos = ws.match(text, end).end()
        if text[pos:pos + 1] == ",":
            pos = ws.match(text, pos + 1).end()
        elif text[pos:pos + 1] == "]":
            if text[pos + 1:].strip():
                raise BadInput(path, "unexpected text after the JSON array", line=line_at(pos + 1))
            return
        else:
            raise BadInput(path, "not valid JSON (expected ',' or ']' between array elements)", line=line_at(pos))


def _csv_rows(path: str, separator: str) -> Iterator[tuple[int, Any]]:
    import polars as pl

    i = 0
    try:
        # every cell as text: a record is text, and type guessing would turn "007" into 7;
        # CSV has no null, so an empty cell is the empty string. In batches: memory stays flat.
        for frame in pl.scan_csv(path, separator=separator, infer_schema=False).collect_batches(chunk_size=50_000):
            for row in frame.fill_null("").iter_rows(named=True):
                i += 1
                yield i, row
    except (pl.exceptions.PolarsError, UnicodeDecodeError, OSError) as exc:
        raise BadInput(path, f"not a readable CSV file ({str(exc).splitlines()[0]})") from None


def _parquet_rows(path: str) -> Iterator[tuple[int, Any]]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(fsspec.open(path, "rb").open())
    except Exception as exc:
        raise BadInput(path, f"not a Parquet file ({exc})") from None
    i = 0
    for batch in pf.iter_batches(batch_size=10_000):
        for row in batch.to_pylist():
            i += 1
            yield i, row


def dataset_rows(ds) -> Iterator[tuple[int, Any]]:
    i = 0
    for batch in ds.with_format("arrow").iter(batch_size=10_000):
        for row in batch.to_pylist():
            i += 1
            yield i, row


def _pick_split(label: str, obj, split: str | None):
    import datasets

    if isinstance(obj, datasets.DatasetDict):
        names = list(obj.keys())
        chosen = split or ("train" if "train" in obj else names[0] if len(names) == 1 else None)
        if chosen not in obj:
            raise AssayError(f"{label}: choose a split with --split ({', '.join(names)})")
        return obj[chosen], chosen
    if split:
        raise AssayError(f"{label}: has no splits, drop --split")
    return obj, None


def _hf_disk(path: str, split: str | None) -> Source:
    import datasets

    try:
        obj = datasets.load_from_disk(path)
    except FileNotFoundError as exc:
        raise BadInput(path, f"not a Hugging Face dataset saved with save_to_disk ({exc})") from None
    ds, chosen = _pick_split(path, obj, split)
    return Source(path if not chosen else f"{path}[{chosen}]", "row", dataset_rows(ds), "hf-disk")


def _hf_hub(dataset_id: str, split: str | None) -> Source:
    import datasets

    try:
        obj = datasets.load_dataset(dataset_id, split=split)
    except Exception as exc:  # no network, unknown id, gated dataset: say which and why
        raise AssayError(f"hf:{dataset_id}: cannot load from the Hugging Face Hub ({exc})") from None
    ds, chosen = _pick_split(f"hf:{dataset_id}", obj, None if split else split)
    return Source(f"hf:{dataset_id}" + (f"[{split or chosen}]" if (split or chosen) else ""), "row",
                  dataset_rows(ds), "hf")


# ---- seeds: a version, a file or a Hub dataset, as rows ------------------------------------------

def is_external(ref: str) -> bool:
    """True for a file, a URL or a Hub dataset id (hf:OWNER/NAME); False for a dataset version ref."""
    return os.path.exists(ref) or "://" in ref or ref.startswith("hf:")


@dataclass
class SeedRow:
    pos: int  # 1-based row (line, element) in the source
    fields: dict[str, Any]  # the row's fields; instruction/input/output filled in from their ALIASES
    record_id: str | None  # the record's id: a version's own, or the one `assay import` would give the row


@dataclass
class Seeds:
    label: str  # the file as given, or the version's ref
    unit: str  # how rows are counted in errors: "line", "row" or "element"
    rows: list[SeedRow]
    parents: list[str]  # the version's id when the seeds are a version: the new version's lineage
    path: str | None  # the local file, when the seeds are one (for files that sit beside it)


def read_seeds(store: Store, ref: str, limit: int | None = None) -> Seeds:
    """The rows of `ref`: a version (its records as `assay export` writes them: the Alpaca or chat
    fields, then the metadata keys) or a file, URL or hf: dataset (rows as read, with the same
    aliases `assay import` knows). At most `limit` rows. Every row is an object, or the error names it."""
    rows: list[SeedRow] = []
    if is_external(ref):
        source = open_source(ref, None, None)
        for pos, raw in source.rows:
            if not isinstance(raw, dict):
                raise BadInput(ref, "expected an object per row", line=pos, unit=source.unit)
            row = dict(raw)
            for target in ("instruction", "input", "output"):
                if target not in row:
                    alias = next((a for a in ALIASES[target] if a in raw), None)
                    if alias is not None:
                        row[target] = raw[alias]
            rid = (record_id(str(row["instruction"]), str(row.get("input") or ""), str(row.get("output") or ""), None)
                   if row.get("instruction") is not None else None)
            rows.append(SeedRow(pos, row, rid))
            if limit and len(rows) >= limit:
                break
        local = ref if os.path.exists(ref) else None
        return Seeds(ref, source.unit, rows, [], local)
    manifest = store.resolve(ref)
    frame = store.read(manifest)
    if limit:
        frame = frame.head(limit)
    for pos, r in enumerate(frame.iter_rows(named=True), 1):
        rows.append(SeedRow(pos, export_row(r), r["id"]))
    return Seeds(manifest.ref, "row", rows, [manifest.id], None)
