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
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import polars as pl

from assay.core.store import Manifest, Store

from .cache import Layout, RecordCache, version_layout


@dataclass
class AuditResult:
    columns: pl.DataFrame
    summary: dict[str, Any]
    details: dict[str, pl.DataFrame] = field(default_factory=dict)


@dataclass
class AuditContext:
    store: Store
    version_id: str
    manifest: Manifest | None = None
    _layout: Layout | None = field(default=None, repr=False)

    def layout(self) -> Layout | None:
        if self._layout is None and self.manifest is not None:
            self._layout = version_layout(self.store, self.manifest)
        return self._layout

    def cached(self, auditor: "Auditor", namespace_extra: str = "") -> RecordCache:
        key = auditor.config_hash() + (f"-{namespace_extra}" if namespace_extra else "")
        return RecordCache(self.store, f"{auditor.name}/{key}", self.layout())


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
