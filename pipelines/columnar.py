"""The importer's columnar path: a source read in batches, each batch made into record rows
column-wise, so that memory stays flat whatever the file's size.

A batch is a slice of the source (a byte chunk of JSON Lines cut at a line end, a batch of Parquet
rows, a batch of CSV rows) offered two ways: as a Polars frame, when it reads as one, and as its rows
one by one with their line or row numbers. The importer builds the segment columns from the frame
(`alpaca_table`) where it can and hands the batch to the row path where it cannot (chat rows, nulls,
blank lines, a bad row), so one odd row costs one batch its speed, not the whole file, and every
problem is still named by file and line. Both ways give identical rows
(tests/pipelines/test_importer_fast.py).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, Iterator

import fsspec
import polars as pl
import pyarrow as pa

from assay.core.errors import BadInput
from assay.core.records import RECORD_SCHEMA
from assay.core.sources import parse_json_line

COLUMNAR_FORMATS = ("jsonl", "csv", "tsv", "parquet")
# 32 MiB of JSON Lines is about 70k Alpaca records; the frame built from it is about 5x that, which
# keeps an import near half a GB whatever the file's size
CHUNK_BYTES = 32 << 20
# Parquet and CSV batches are counted in rows: about the same memory as a JSON chunk
CHUNK_ROWS = 65_536


@dataclass
class Batch:
    """A slice of a source. `frame()` parses it as one Polars frame, or gives None when it does not
    read as one; it is a function so that the importer can parse several batches at once."""

    frame: Callable[[], pl.DataFrame | None]
    first: int  # the 1-based line or row number of its first row
    rows: Callable[[], Iterator[tuple[int, Any]]]  # (line or row number, parsed row), for the row path


def batches(path: str, fmt: str, *, chunk_bytes: int = CHUNK_BYTES) -> Iterator[Batch]:
    if fmt == "jsonl":
        return _jsonl_batches(path, chunk_bytes)
    if fmt in ("csv", "tsv"):
        return _csv_batches(path, "\t" if fmt == "tsv" else ",", max(1, chunk_bytes // 512))
    if fmt == "parquet":
        return parquet_batches(path, max(1, chunk_bytes // 512))
    raise ValueError(f"no columnar reader for {fmt!r}")


def _jsonl_batches(path: str, chunk_bytes: int) -> Iterator[Batch]:
    with fsspec.open(path, "rb", compression="infer") as fh:
        yield from jsonl_stream_batches(fh, path, chunk_bytes)


def jsonl_stream_batches(fh: BinaryIO, path: str, chunk_bytes: int, line: int = 1) -> Iterator[Batch]:
    """Batches of the JSON Lines read from `fh` (its first line is line `line` of `path`), each a
    chunk of about `chunk_bytes` cut at a line end."""
    rest = b""
    while True:
        try:
            data = fh.read(chunk_bytes)
        except (OSError, EOFError) as exc:  # e.g. a .gz that is not gzip
            raise BadInput(path, f"cannot read: {exc}") from None
        if not data:
            if rest:
                yield jsonl_batch(path, rest, line, rest.count(b"\n") + 1)
            return
        cut = data.rfind(b"\n")
        if cut < 0:  # one line longer than a chunk: read on
            rest += data
            continue
        # the chunk ends at its last line end; what follows starts the next chunk
        chunk = rest + data[:cut + 1] if rest else data[:cut + 1]
        rest = data[cut + 1:]
        lines = chunk.count(b"\n")
        yield jsonl_batch(path, chunk, line, lines)
        line += lines


def jsonl_batch(path: str, chunk: bytes, first: int, lines: int) -> Batch:
    def frame() -> pl.DataFrame | None:
        try:
            parsed = pl.read_ndjson(chunk, infer_schema_length=None)
        except (pl.exceptions.PolarsError, UnicodeDecodeError, ValueError, OverflowError):
            return None
        # a blank line is skipped by the reader, which would shift every later row's line number
        return parsed if parsed.height == lines else None

    def rows() -> Iterator[tuple[int, Any]]:
        for i, raw in enumerate(chunk.split(b"\n")):
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise BadInput(path, f"not UTF-8 text ({exc.reason})", line=first + i) from None
            yield first + i, parse_json_line(path, text, first + i)

    return Batch(frame, first, rows)


def _csv_batches(path: str, separator: str, chunk_rows: int) -> Iterator[Batch]:
    # every cell as text, an empty cell as "", as core.sources reads a CSV file row by row
    first = 1
    try:
        for frame in (pl.scan_csv(path, separator=separator, infer_schema=False)
                      .collect_batches(chunk_size=chunk_rows)):
            frame = frame.fill_null("")
            yield Batch(lambda f=frame: f, first, lambda f=frame, a=first: enumerate(f.iter_rows(named=True), a))
            first += frame.height
    except (pl.exceptions.PolarsError, UnicodeDecodeError, OSError) as exc:
        raise BadInput(path, f"not a readable CSV file ({str(exc).splitlines()[0]})") from None


def parquet_batches(path: str, chunk_rows: int, row_groups: list[int] | None = None,
                    first: int = 1) -> Iterator[Batch]:
    """Batches of a Parquet file's rows (of `row_groups` only, whose first row is row `first`)."""
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(fsspec.open(path, "rb").open())
    except Exception as exc:
        raise BadInput(path, f"not a Parquet file ({exc})") from None
    for batch in pf.iter_batches(batch_size=chunk_rows, row_groups=row_groups):
        try:
            frame = pl.from_arrow(batch)
        except (pl.exceptions.PolarsError, TypeError, ValueError):
            frame = None
        yield Batch(lambda f=frame: f, first, lambda b=batch, a=first: enumerate(b.to_pylist(), a))
        first += batch.num_rows


# ---- record rows from a frame -------------------------------------------------------------------

_METADATA_TYPES = (pl.String, pl.Int64, pl.Int32, pl.Boolean, pl.Float64)


def alpaca_table(frame: pl.DataFrame, fields: dict[str, str], first: int, provenance_source: str) -> pa.Table | None:
    """Record rows (RECORD_SCHEMA) for a frame of Alpaca rows, or None where the row path must
    decide: a null where a null could mean a missing key, a column that is not text, an empty frame.
    `fields` maps record fields to columns, as the importer's Layout decided."""
    if "messages" in fields and fields["messages"] in frame.columns:
        # a chat column that is null in every row of the batch is the other layout's empty column,
        # which the row path leaves out of the metadata too; a chat row goes to the row path
        if frame[fields["messages"]].null_count() < frame.height:
            return None
        frame = frame.drop(fields["messages"])
    used = [fields[t] for t in ("instruction", "input", "output") if t in fields]
    if frame.height == 0 or any(c not in frame.columns or frame.schema[c] != pl.String for c in used):
        return None
    if any(frame[fields[t]].null_count() for t in ("instruction", "output") if t in fields):
        return None
    meta_cols = [c for c in frame.columns if c not in used]
    if any(frame.schema[c] not in _METADATA_TYPES or frame[c].null_count() for c in meta_cols):
        return None
    text = {t: (pl.col(fields[t]).fill_null("") if t in fields else pl.lit(""))
            for t in ("instruction", "input", "output")}
    # the canonical form of records.record_id, built column-wise: json.dumps([i, x, o, None],
    # ensure_ascii=False, separators=(",", ":")) is '["' + escaped i + '","' ... '",null]'
    canonical = pl.concat_str([pl.lit('["'), _json_escape(text["instruction"]), pl.lit('","'),
                               _json_escape(text["input"]), pl.lit('","'), _json_escape(text["output"]),
                               pl.lit('",null]')])
    built = frame.select(
        canonical=canonical.cast(pl.Binary),  # UTF-8 bytes without a Python str per row
        instruction=text["instruction"], input=text["input"], output=text["output"],
        metadata=pl.struct(meta_cols).struct.json_encode() if meta_cols else pl.lit("{}"),
    )
    blake2b = hashlib.blake2b
    ids = [blake2b(c, digest_size=16).hexdigest() for c in built["canonical"].to_list()]
    n = built.height
    table = built.drop("canonical").with_columns(
        id=pl.Series(ids, dtype=pl.String),
        messages=pl.lit(None, dtype=pl.List(pl.Struct({"role": pl.String, "content": pl.String}))),
        source=pl.lit(provenance_source), source_row=pl.int_range(first, first + n, dtype=pl.Int64),
        generator=pl.lit("import"), template=pl.lit(None, dtype=pl.String), model=pl.lit(None, dtype=pl.String),
        sampling_params=pl.lit("{}"), parent_ids=pl.lit([], dtype=pl.List(pl.String)),
    ).select(RECORD_SCHEMA.names).to_arrow()
    return table.cast(RECORD_SCHEMA)


# json.dumps(ensure_ascii=False) escapes exactly these: backslash, quote and the C0 controls
_JSON_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f",
                 **{chr(c): f"\\u{c:04x}" for c in range(0x20) if chr(c) not in "\n\r\t\b\f"}}


def _json_escape(expr: pl.Expr) -> pl.Expr:
    # replace_many replaces all patterns in one left-to-right pass, so nothing is escaped twice
    return expr.str.replace_many(list(_JSON_ESCAPES), list(_JSON_ESCAPES.values()))

