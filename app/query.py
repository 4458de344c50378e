"""Querying one version for review: search, filters, sort, a page, the count; one record with its
audit evidence; saving the current query as a new version.

The Review page is a thin layer over these calls. Everything a query does is one SQL condition over
record fields and the version's audit columns (`condition()`), the same language as
`assay filter --where`, so "save the current filter" is `filter_version` with that condition: the
new version's manifest records it in `params.where`, and the CLI can reproduce it exactly.

Speed on a million records comes from reading only what a step needs:

- no condition and no sort: the page is `Store.page`, which reads only the row groups holding it;
- a condition or a sort: `select()` reads only the columns the condition and sort name (Parquet is
  columnar), part by part, and keeps the matching row *positions* (8 bytes a row), not the rows;
- a page of positions: `rows_at()` reads only the row groups that hold those positions.

Audit columns are row-aligned Parquet files (one row per version row), read column by column too.

Every column `select()` reads is kept in this process (`COLUMNS`, least recently used dropped past
ASSAY_REVIEW_CACHE_MB, default 4096): the app's server is long-lived and a reviewer changes a filter
many times over the same few columns, so at 10M records the second filter on `output` costs the
filter, not a 2.5 GB decompression. Nothing goes stale: a part's segment and selection bitmap are
content-addressed, and an audit column is keyed by its audit's creation time.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from assay.core.audits import audit_detail, filter_version, latest_audits
from assay.core.errors import AssayError
from assay.core.records import RECORD_SCHEMA
from assay.core.store import Manifest, Store

SEARCH_FIELDS = ("instruction", "input", "output")
# record fields a sort or a filter can name (lists and JSON text are left to the free SQL box)
RECORD_SORTABLE = ("instruction", "input", "output", "source", "source_row", "generator", "template", "model")


def _literal(text: str) -> str:
    """A SQL string literal: single quotes doubled, so any text is data, never syntax."""
    return "'" + text.replace("'", "''") + "'"


def _ident(name: str) -> str:
    """A column name as a SQL identifier (double quotes doubled)."""
    return '"' + name.replace('"', '""') + '"'


def search_condition(text: str, fields: tuple[str, ...] = SEARCH_FIELDS) -> str:
    """Case-insensitive substring search over `fields`, as SQL.

    ILIKE '%text%' where it can (Polars runs it as one case-insensitive regex with the text escaped:
    about 15x faster than lowercasing every value); when the text holds '%' or '_', which ILIKE
    would read as wildcards, STRPOS over lowercased values instead."""
    if "%" in text or "_" in text:
        needle = _literal(text.lower())
        return "(" + " OR ".join(f"STRPOS(LOWER(COALESCE({f}, '')), {needle}) > 0" for f in fields) + ")"
    pattern = _literal(f"%{text}%")
    return "(" + " OR ".join(f"{f} ILIKE {pattern}" for f in fields) + ")"


@dataclass
class Query:
    """What the Review page shows: every field narrows the rows (AND), except sort."""

    search: str = field(default="", metadata={"help": "case-insensitive substring of instruction, input or output"})
    where: str = field(default="", metadata={"help": "SQL condition over record fields and audit columns "
                                                     "(as `assay filter --where`)"})
    flags: dict[str, bool] = field(default_factory=dict, metadata={
        "help": "boolean column -> required value (e.g. minhash_duplicate: False hides near duplicates)"})
    values: dict[str, list[str]] = field(default_factory=dict, metadata={
        "help": "text column -> allowed values (e.g. generator: ['import'])"})
    lengths: dict[str, tuple[int | None, int | None]] = field(default_factory=dict, metadata={
        "help": "text field -> (min, max) length in characters, either end open (None)"})
    sort: str | None = field(default=None, metadata={
        "help": "column or SQL expression to sort by (e.g. length(output)); None keeps version order"})
    descending: bool = field(default=False, metadata={"help": "sort from the largest value"})

    def condition(self) -> str:
        """The whole query as one SQL condition ('' when it keeps every row)."""
        parts: list[str] = []
        if self.search.strip():
            parts.append(search_condition(self.search.strip()))
        for col, want in sorted(self.flags.items()):
            # a row an auditor did not score (null) counts as not flagged
            parts.append(f"COALESCE({_ident(col)}, FALSE) = {'TRUE' if want else 'FALSE'}")
        for col, allowed in sorted(self.values.items()):
            if allowed:
                parts.append(f"{_ident(col)} IN ({', '.join(_literal(str(v)) for v in allowed)})")
        for col, (lo, hi) in sorted(self.lengths.items()):
            if lo is not None:
                parts.append(f"LENGTH(COALESCE({_ident(col)}, '')) >= {int(lo)}")
            if hi is not None:
                parts.append(f"LENGTH(COALESCE({_ident(col)}, '')) <= {int(hi)}")
        if self.where.strip():
            parts.append(f"({self.where.strip()})")
        return " AND ".join(parts)


@dataclass
class Selection:
    """The rows a query keeps, as positions in the version (in display order)."""

    manifest: Manifest
    condition: str
    positions: np.ndarray | None  # None: every row, in version order (nothing was read)

    @property
    def count(self) -> int:
        return self.manifest.records if self.positions is None else int(self.positions.size)

    def pages(self, size: int) -> int:
        return max(1, -(-self.count // size))


# ---- the column cache ---------------------------------------------------------------------------

class ColumnCache:
    """Series by key, least recently used dropped once their estimated size passes the budget."""

    def __init__(self, budget_mb: int):
        self.budget = budget_mb << 20
        self.items: OrderedDict[tuple, pl.Series] = OrderedDict()
        self.size = 0
        self.lock = threading.Lock()  # Streamlit runs each session's script in its own thread

    def get(self, key: tuple, load: Callable[[], pl.Series]) -> pl.Series:
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
        value = load()
        size = value.estimated_size()
        with self.lock:
            if size <= self.budget and key not in self.items:
                self.items[key] = value
                self.size += size
                while self.size > self.budget:
                    _, dropped = self.items.popitem(last=False)
                    self.size -= dropped.estimated_size()
        return value


COLUMNS = ColumnCache(int(os.environ.get("ASSAY_REVIEW_CACHE_MB", "4096")))


def _record_column(store: Store, part, column: str) -> pl.Series:
    return COLUMNS.get((store.root, part.segment, part.selection, column),
                       lambda: store.read_part(part, [column])[column])


# ---- audit columns ------------------------------------------------------------------------------

def audit_schema(store: Store, manifest: Manifest) -> dict[str, tuple[str, pl.DataType, str]]:
    """Audit column -> (its Parquet file, its type, when the audit ran), newest audit per auditor.
    Reads only footers."""
    out: dict[str, tuple[str, pl.DataType, str]] = {}
    for audit in latest_audits(store, manifest):
        path = audit["columns_path"]
        for name, dtype in pl.read_parquet_schema(store.open_for_read(path)).items():
            out[name] = (path, dtype, audit["created_at"])
    return out


def _audit_frame(store: Store, schema: dict[str, tuple[str, pl.DataType, str]],
                 columns: list[str]) -> pl.DataFrame | None:
    """The named audit columns of every row, with `_pos`, reading only those columns (once a process)."""
    if not columns:
        return None

    def load(path: str, col: str) -> Callable[[], pl.Series]:
        return lambda: pl.read_parquet(store.open_for_read(path), columns=[col])[col]

    return pl.DataFrame([COLUMNS.get((store.root, schema[c][0], schema[c][2], c), load(schema[c][0], c))
                         for c in columns]).with_row_index("_pos")


def columns(store: Store, ref: str | Manifest) -> dict[str, str]:
    """Every column a query may name: record fields, then audit columns, with their types as text."""
    manifest = ref if isinstance(ref, Manifest) else store.resolve(ref)
    record = {f.name: str(f.type) for f in RECORD_SCHEMA}
    return {**record, **{k: str(v[1]) for k, v in audit_schema(store, manifest).items()}}


# ---- selecting ----------------------------------------------------------------------------------

def _expr(sql: str, what: str) -> pl.Expr:
    try:
        return pl.sql_expr(sql)
    except pl.exceptions.PolarsError as exc:
        raise AssayError(f"invalid {what} {sql!r}: {exc}") from exc


def select(store: Store, ref: str | Manifest, query: Query) -> Selection:
    """The positions of the rows `query` keeps, sorted as it asks. Reads only the named columns."""
    manifest = ref if isinstance(ref, Manifest) else store.resolve(ref)
    cond = query.condition()
    if not cond and not query.sort:
        return Selection(manifest, cond, None)
    predicate = _expr(cond, "filter") if cond else None
    sort_expr = _expr(query.sort, "sort") if query.sort else None
    needed: set[str] = set()
    for e in (predicate, sort_expr):
        if e is not None:
            needed.update(e.meta.root_names())
    audit = audit_schema(store, manifest)
    record_cols = [c for c in RECORD_SCHEMA.names if c in needed]
    audit_cols = sorted(c for c in needed if c in audit and c not in record_cols)
    unknown = needed - set(record_cols) - set(audit_cols)
    if unknown:
        known = ", ".join([*RECORD_SCHEMA.names, *audit])
        raise AssayError(f"invalid filter {cond or query.sort!r}: unknown column {', '.join(sorted(unknown))}; "
                         f"columns are: {known}")
    if not manifest.parts:
        return Selection(manifest, cond, np.zeros(0, dtype=np.int64))
    extra = _audit_frame(store, audit, audit_cols)
    # the named columns of every row as one frame (from the column cache), filtered in one go
    frame = pl.DataFrame({c: pl.concat([_record_column(store, part, c) for part in manifest.parts])
                          for c in record_cols}) if record_cols else None
    if frame is None:
        frame = extra if extra is not None else pl.DataFrame({"_pos": pl.int_range(0, manifest.records, eager=True,
                                                                                   dtype=pl.UInt32)})
    else:
        frame = frame.with_row_index("_pos") if extra is None else pl.concat([frame, extra], how="horizontal")
    try:
        if predicate is not None:
            frame = frame.filter(predicate)
        found = frame.select("_pos", *([sort_expr.alias("_key")] if sort_expr is not None else []))
    except pl.exceptions.PolarsError as exc:  # a condition that is not boolean, a type mismatch
        raise AssayError(f"invalid filter {cond!r}: {exc}") from exc
    if sort_expr is not None:
        # stable: equal keys keep version order; nulls last either way
        found = found.sort("_key", descending=query.descending, nulls_last=True, maintain_order=True)
    return Selection(manifest, cond, found["_pos"].to_numpy().astype(np.int64))


def rows_at(store: Store, manifest: Manifest, positions: np.ndarray | list[int]) -> pl.DataFrame:
    """The version's rows at `positions` (any order, kept), with `_pos`; reads only their row groups."""
    return store.rows_at(manifest, positions)


def with_audit_columns(store: Store, manifest: Manifest, rows: pl.DataFrame) -> pl.DataFrame:
    """`rows` (with `_pos`) joined with every audit column of those positions."""
    audit = audit_schema(store, manifest)
    extra = _audit_frame(store, audit, list(audit))
    if extra is None or rows.is_empty():
        return rows
    picked = extra.filter(pl.col("_pos").is_in(rows["_pos"].cast(pl.UInt32).implode()))
    return rows.join(picked.with_columns(pl.col("_pos").cast(pl.Int64)), on="_pos", how="left", maintain_order="left")


def page(store: Store, selection: Selection, number: int, size: int = 50) -> pl.DataFrame:
    """Page `number` (0-based) of a selection: record rows plus audit columns, with `_pos`."""
    if number < 0 or size <= 0:
        raise AssayError("page must be >= 0 and size > 0")
    m = selection.manifest
    if selection.positions is None:
        start = number * size
        rows = store.page(m, number, size)
        rows = rows.with_columns(_pos=pl.int_range(start, start + rows.height, dtype=pl.Int64))
    else:
        rows = rows_at(store, m, selection.positions[number * size:(number + 1) * size])
    return with_audit_columns(store, m, rows)


def distinct(store: Store, ref: str | Manifest, column: str, limit: int = 200) -> list[str]:
    """The most frequent values of a text column (for a filter's choices), most frequent first."""
    manifest = ref if isinstance(ref, Manifest) else store.resolve(ref)
    counts: dict[str, int] = {}
    for frame in store.iter_frames(manifest, [column]):
        for value, n in frame[column].value_counts().iter_rows():
            if value is not None:
                counts[value] = counts.get(value, 0) + n
    return [v for v, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]]


# ---- one record ----------------------------------------------------------------------------------

def record(store: Store, ref: str | Manifest, position: int, *, cluster_limit: int = 20) -> dict[str, Any]:
    """Row `position` of a version with its provenance, its audit columns and the evidence behind
    them: the benchmark item it matched (contamination) and the other rows of its duplicate clusters."""
    manifest = ref if isinstance(ref, Manifest) else store.resolve(ref)
    row = rows_at(store, manifest, [position]).to_dicts()[0]
    audit = audit_schema(store, manifest)
    scores: dict[str, Any] = {}
    clusters: dict[str, pl.DataFrame] = {}
    if audit:
        all_cols = _audit_frame(store, audit, list(audit))
        scores = all_cols.row(position, named=True)
        scores.pop("_pos", None)
        for col in audit:
            if not col.endswith("_cluster") or scores.get(col) is None:
                continue
            members = all_cols.filter((pl.col(col) == scores[col]) & (pl.col("_pos") != position))["_pos"]
            if members.len():
                shown = rows_at(store, manifest, members.head(cluster_limit).cast(pl.Int64).to_numpy())
                clusters[col.removesuffix("_cluster")] = shown.select(
                    "_pos", "id", "instruction", "input", "output").with_columns(
                    cluster_size=pl.lit(members.len() + 1))
    evidence = audit_detail(store, manifest, "contamination", "evidence")
    if evidence is not None and "row" in evidence.columns:
        evidence = evidence.filter(pl.col("row") == position)
    provenance = {k: row.get(k) for k in ("source", "source_row", "generator", "template", "model",
                                          "sampling_params", "parent_ids")}
    return {"version": manifest.id, "ref": manifest.ref, "position": position, "record": row,
            "provenance": provenance, "audit": scores, "clusters": clusters,
            "contamination": evidence if evidence is not None and evidence.height else None}


# ---- saving -------------------------------------------------------------------------------------

def save(store: Store, ref: str | Manifest, query: Query, name: str | None = None) -> Manifest:
    """Commit the rows `query` keeps as a new version (`assay filter --where` with its condition;
    the condition, search included, is recorded in the manifest's params). Sort is not kept: a
    filtered version keeps its parent's order."""
    manifest = ref if isinstance(ref, Manifest) else store.resolve(ref)
    cond = query.condition()
    if not cond:
        raise AssayError("nothing to save: the current filter keeps every row of "
                         f"{manifest.ref}; set a search or a filter first")
    return filter_version(store, manifest.id, cond, name)
