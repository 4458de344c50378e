"""The auditor contract: score records and summarise a version; never change data.

An auditor is one class with a config dataclass (fields carry their help text) and one method,
`run(records, ctx) -> AuditResult`:
- `records` is the version's rows in version order, with the text views `prompt`, `response` and
  `text` (see `assay.core.records.with_text`), as a Polars frame: auditors work on batches.
- `AuditResult.columns` has exactly one row per version row, in the same order; its column names
  start with the auditor's name (`minhash_duplicate`, `quality_refusal`, ...). They become columns
  that `assay filter --where` can use.
- `AuditResult.summary` is the JSON-able figure set for the report card.
- `AuditResult.details` holds frames worth keeping (evidence, calibration pairs, a 2-D map).

Per-record work that depends only on a record's content (signatures, embeddings, n-gram hits,
heuristic flags) goes through `ctx.cached(...)`, keyed by record id and the auditor's config, so
auditing a child version recomputes nothing for the records it shares with an audited parent.

A *streaming* auditor splits its work in two, and then never needs the whole version in memory:
- `map(batch)`: a pure function of a batch of records (`id` and the text views `map_columns()`
  names), one row of per-record results per record. The runner calls it segment by segment,
  through the record cache, so a killed audit resumes from its finished chunks.
- `reduce(mapped, rows, ctx)`: every row's results in version order -> the AuditResult. `rows`
  reads the few texts a summary shows (examples), by position.
`run` then is map-through-the-cache + reduce, so the same auditor also runs on an in-memory frame.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import time
from abc import ABC
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np
import polars as pl

from assay.core.records import RECORD_SCHEMA, with_text
from assay.core.store import Manifest, Store

from .cache import Layout, RecordCache, version_layout


@dataclass
class AuditResult:
    columns: pl.DataFrame
    summary: dict[str, Any]
    details: dict[str, pl.DataFrame] = field(default_factory=dict)


class Rows(Protocol):
    """The records a reduce step reads texts from, by version position."""

    height: int

    def at(self, positions: list[int] | np.ndarray, columns: list[str]) -> pl.DataFrame:
        """The rows at `positions` (in that order): `columns` from the record fields and text views."""
        ...


@dataclass
class FrameRows:
    """Rows of a frame already in memory (the records `run` was given)."""

    frame: pl.DataFrame

    @property
    def height(self) -> int:
        return self.frame.height

    def at(self, positions: list[int] | np.ndarray, columns: list[str]) -> pl.DataFrame:
        return self.frame.select(columns)[list(map(int, positions))]


@dataclass
class VersionRows:
    """Rows of a stored version, read by position (only the row groups that hold them)."""

    store: Store
    manifest: Manifest

    @property
    def height(self) -> int:
        return self.manifest.records

    def at(self, positions: list[int] | np.ndarray, columns: list[str]) -> pl.DataFrame:
        if not len(positions):
            return with_text(pl.from_arrow(RECORD_SCHEMA.empty_table())).select(columns)
        return with_text(self.store.rows_at(self.manifest, np.asarray(positions, dtype=np.int64))).select(columns)


@dataclass(frozen=True)
class MapKey:
    """A record-cache key other than the auditor's own config hash (see Auditor.map_key)."""

    name: str
    key: str

    def config_hash(self) -> str:
        return self.key


@dataclass
class AuditContext:
    store: Store
    version_id: str
    manifest: Manifest | None = None
    _layout: Layout | None = field(default=None, repr=False)
    # the record cache's hits and misses of each streaming auditor's map, filled by the runner
    map_cache: dict[str, dict[str, int]] = field(default_factory=dict)
    # where the audit runs ("local" or "ray", and the cluster's address): a reduce step that can
    # spread its own global work (MinHash's band buckets) runs it there too
    engine: str = "local"
    ray_address: str | None = None
    # the seconds each streaming auditor's map took (summed over the parts, and over workers on Ray)
    map_seconds: dict[str, float] = field(default_factory=dict)

    def layout(self) -> Layout | None:
        if self._layout is None and self.manifest is not None:
            self._layout = version_layout(self.store, self.manifest)
        return self._layout

    def known_ids(self, auditors: list["Auditor"]) -> dict[str, pl.Series]:
        """Per auditor, every record id its map cache held before the audit began (read once, so a
        part's cache lookups skip ids that were never there; see RecordCache)."""
        return {a.name: self.cached(a.map_key()).cached_ids() for a in auditors}

    def cached(self, auditor: "Auditor", namespace_extra: str = "", *, part: int | None = None,
               known_ids: pl.Series | None = None) -> RecordCache:
        """The auditor's record cache; `part`: for the rows of one part of the version only, and
        `known_ids`: the ids cached before the audit began (see RecordCache)."""
        key = auditor.config_hash() + (f"-{namespace_extra}" if namespace_extra else "")
        layout = self.layout()
        if part is not None and layout is not None:
            layout = [layout[part]]
        return RecordCache(self.store, f"{auditor.name}/{key}", layout, known_ids)


class Auditor(ABC):
    name: ClassVar[str]
    Config: ClassVar[type]
    # bump when a change to the code changes the numbers, so old cache entries are not reused
    revision: ClassVar[int] = 1

    def __init__(self, config: Any | None = None):
        self.config = config if config is not None else self.Config()

    def fresh_copy(self) -> "Auditor":
        """A new auditor of the same config, to ship to Ray workers: a prepared one holds the
        driver's store (an open SQLite connection) and what `prepare` loaded."""
        return type(self)(copy.deepcopy(self.config))

    def config_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self.config)

    def config_hash(self) -> str:
        blob = json.dumps({"auditor": self.name, "revision": self.revision, "config": self.config_dict()},
                          sort_keys=True, default=str)
        return hashlib.blake2b(blob.encode(), digest_size=8).hexdigest()

    def validate(self) -> None:  # noqa: B027 (optional hook)
        """Raise AssayError for a config that cannot work, before any record is read."""

    # ---- streaming auditors: map + reduce ------------------------------------------------------
    @property
    def streaming(self) -> bool:
        return type(self).map is not Auditor.map

    def map_columns(self) -> list[str]:
        """The text views or record fields (besides `id`) that `map` reads."""
        return []

    def prepare(self, ctx: AuditContext) -> None:  # noqa: B027 (optional hook)
        """Called once before the first `map` of an audit: load what every batch shares (a benchmark
        index, the context an embedding cache needs)."""

    def map_key(self) -> Any:
        """What `map`'s record cache is keyed by (an object with `name` and `config_hash()`): the
        auditor itself, unless only some of its settings change the per-record results."""
        return self

    def wants_gpu(self) -> bool:
        """Whether `map` runs a model that a GPU speeds up (the Ray engine then asks for one)."""
        return False

    def map(self, batch: pl.DataFrame) -> pl.DataFrame:
        """Per-record results of a batch: `id`, then result columns; one row per batch row."""
        raise NotImplementedError

    def for_reduce(self, part: pl.DataFrame, ctx: AuditContext) -> pl.DataFrame:
        """What of one part's `map` results (without `id`) is gathered for `reduce`, on either engine
        (on Ray it travels to the driver): all of it, unless the reduce reads its bulky columns back
        from the record cache part by part (MinHash's signatures, on Ray or when the version's are
        too many to hold). The full results stay in the record cache."""
        return part

    def reduce(self, mapped: pl.DataFrame, rows: Rows, ctx: AuditContext) -> AuditResult:
        """Every row's `map` results (version order, without `id`) -> the audit."""
        raise NotImplementedError

    def run(self, records: pl.DataFrame, ctx: AuditContext) -> AuditResult:
        """Score `records` (the version's rows, in order) and summarise them."""
        if not self.streaming:
            raise NotImplementedError(f"{self.name}: implement run, or map and reduce")
        self.validate()
        self.prepare(ctx)
        cache = ctx.cached(self.map_key())
        started = time.perf_counter()
        mapped = cache.get_or_compute(records.select("id", *self.map_columns()), self.map)
        ctx.map_cache[self.name] = {"hits": cache.hits, "misses": cache.misses}
        ctx.map_seconds[self.name] = time.perf_counter() - started
        return self.reduce(mapped.drop("id"), FrameRows(records), ctx)
