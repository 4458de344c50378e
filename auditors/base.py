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
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import polars as pl

from assay.core.store import Store


@dataclass
class AuditResult:
    columns: pl.DataFrame
    summary: dict[str, Any]
    details: dict[str, pl.DataFrame] = field(default_factory=dict)


COMPUTE_CHUNK_ROWS = 50_000


class RecordCache:
    """Per-record results keyed by record id, in Parquet chunks under
    `<workspace>/cache/<namespace>/`. Chunks are only ever added (atomically), so concurrent audits
    at worst compute a record twice; a lookup reads just the id column plus the matching rows."""

    def __init__(self, store: Store, namespace: str):
        self.store = store
        self.dir = store.path("cache", namespace)
        store.fs.makedirs(self.dir, exist_ok=True)
        self.hits = 0
        self.misses = 0

    def _chunks(self) -> list[str]:
        return sorted(p for p in self.store.fs.ls(self.dir, detail=False) if p.endswith(".parquet"))

    def lookup(self, ids: pl.Series) -> pl.DataFrame | None:
        chunks = self._chunks()
        if not chunks:
            return None
        found = (pl.scan_parquet(chunks).filter(pl.col("id").is_in(ids.unique().implode()))
                 .unique("id", keep="first").collect())
        return found

    def add(self, frame: pl.DataFrame) -> None:
        if frame.height:
            import io

            buf = io.BytesIO()
            frame.write_parquet(buf, compression="zstd")
            self.store.write_atomic(f"{self.dir}/{uuid.uuid4().hex}.parquet", buf.getvalue())

    def get_or_compute(self, records: pl.DataFrame, compute: Callable[[pl.DataFrame], pl.DataFrame]) -> pl.DataFrame:
        """Results for every row of `records` (same order), computing only ids not yet cached.
        `compute` gets the unique uncached rows and returns a frame with `id` plus result columns."""
        unique = records.unique("id", keep="first", maintain_order=True)
        found = self.lookup(unique["id"])
        missing = unique if found is None else unique.join(found.select("id"), on="id", how="anti")
        self.misses += missing.height
        self.hits += unique.height - missing.height
        # in chunks: per-record work (regexes, n-gram lists, signatures) builds intermediates many
        # times the size of the text, so a million records at once would need tens of GB; each
        # chunk is saved as it is done, so an interrupted audit keeps its work
        parts = [] if found is None else [found]
        for start in range(0, missing.height, COMPUTE_CHUNK_ROWS):
            computed = compute(missing.slice(start, COMPUTE_CHUNK_ROWS))
            self.add(computed)
            parts.append(computed)
        if parts:
            found = pl.concat(parts, how="vertical_relaxed") if len(parts) > 1 else parts[0]
        return records.select("id").join(found, on="id", how="left", maintain_order="left")


@dataclass
class AuditContext:
    store: Store
    version_id: str

    def cached(self, auditor: "Auditor", namespace_extra: str = "") -> RecordCache:
        key = auditor.config_hash() + (f"-{namespace_extra}" if namespace_extra else "")
        return RecordCache(self.store, f"{auditor.name}/{key}")


class Auditor(ABC):
    name: ClassVar[str]
    Config: ClassVar[type]
    # bump when a change to the code changes the numbers, so old cache entries are not reused
    revision: ClassVar[int] = 1

    def __init__(self, config: Any | None = None):
        self.config = config if config is not None else self.Config()

    def config_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self.config)

    def config_hash(self) -> str:
        blob = json.dumps({"auditor": self.name, "revision": self.revision, "config": self.config_dict()},
                          sort_keys=True, default=str)
        return hashlib.blake2b(blob.encode(), digest_size=8).hexdigest()

    @abstractmethod
    def run(self, records: pl.DataFrame, ctx: AuditContext) -> AuditResult:
        """Score `records` (the version's rows, in order) and summarise them."""


def config_help(config_class: type) -> dict[str, str]:
    """Field name -> help text, for the CLI and the app's forms."""
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(config_class)}
