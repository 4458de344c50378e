"""Audit results in the workspace: saving them, finding a version's latest ones, reading their
columns and details, and filtering a version on them.

An auditor run (`assay.auditors.runner`) produces row-aligned columns, a summary and detail frames;
this module is where they are kept, so everything above the auditors (Review, annotation, the
trainer's report, the CLI's `filter`) reads them without importing any auditor. Per version and
auditor configuration, the columns and the details are Parquet under `audits/<version id>/`, and a
row in the catalog's `audits` table holds the summary. Saving never changes the version (its
content hash is untouched).
"""

from __future__ import annotations

import datetime as dt
import io
import json
from typing import Any

import polars as pl

from assay.core.manifest import code_version
from assay.core.store import Manifest, Store

AUDITS_SCHEMA = """
CREATE TABLE IF NOT EXISTS audits (
    version_id   TEXT NOT NULL,
    auditor      TEXT NOT NULL,
    config_hash  TEXT NOT NULL,
    config       TEXT NOT NULL,
    summary      TEXT NOT NULL,
    columns_path TEXT NOT NULL,
    details      TEXT NOT NULL,     -- JSON: detail name -> Parquet path
    code_version TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    PRIMARY KEY (version_id, auditor, config_hash)
);
"""


def ensure_audits_schema(store: Store) -> None:
    store.catalog.ensure_schema(AUDITS_SCHEMA)


def _write_frame(store: Store, path: str, frame: pl.DataFrame) -> None:
    buf = io.BytesIO()
    frame.write_parquet(buf, compression="zstd")
    store.write_atomic(path, buf.getvalue())


def save_audit(store: Store, manifest: Manifest, *, auditor: str, config_hash: str, config: dict[str, Any],
               columns: pl.DataFrame, summary: dict[str, Any],
               details: dict[str, pl.DataFrame]) -> dict[str, Any]:
    """Keep one auditor's result on `manifest`; return the stored summary (with its config)."""
    ensure_audits_schema(store)
    base = store.path("audits", manifest.id, f"{auditor}-{config_hash}")
    # objects first, the catalog row last: a killed save leaves at worst invisible files
    _write_frame(store, base + ".parquet", columns)
    detail_paths = {}
    for name, frame in details.items():
        detail_paths[name] = f"{base}.{name}.parquet"
        _write_frame(store, detail_paths[name], frame)
    summary = {**summary, "config": config}
    with store.catalog.write() as conn:
        conn.execute("INSERT OR REPLACE INTO audits VALUES (?,?,?,?,?,?,?,?,?)",
                     (manifest.id, auditor, config_hash, json.dumps(config, default=str),
                      json.dumps(summary, default=str), base + ".parquet", json.dumps(detail_paths),
                      code_version(), dt.datetime.now(dt.timezone.utc).isoformat()))
    return summary


def latest_audits(store: Store, ref: str | Manifest) -> list[dict[str, Any]]:
    """The newest audit per auditor of a version: auditor, summary, columns and details paths."""
    ensure_audits_schema(store)
    manifest = ref if isinstance(ref, Manifest) else store.resolve(ref)
    rows = store.catalog.query(
        "SELECT * FROM audits WHERE version_id = ? ORDER BY created_at DESC", (manifest.id,))
    seen: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r["auditor"] not in seen:
            seen[r["auditor"]] = {"auditor": r["auditor"], "summary": json.loads(r["summary"]),
                                  "columns_path": r["columns_path"], "details": json.loads(r["details"]),
                                  "created_at": r["created_at"], "config_hash": r["config_hash"]}
    return list(seen.values())


def audit_columns(store: Store, ref: str | Manifest) -> pl.DataFrame | None:
    """All audit columns of a version, one row per version row (column `_pos`), or None."""
    manifest = ref if isinstance(ref, Manifest) else store.resolve(ref)
    audits = latest_audits(store, manifest)
    if not audits:
        return None
    frames = [pl.read_parquet(store.open_for_read(a["columns_path"])) for a in audits]
    return pl.concat(frames, how="horizontal").with_row_index("_pos")


def audit_detail(store: Store, ref: str | Manifest, auditor: str, detail: str) -> pl.DataFrame | None:
    for a in latest_audits(store, ref):
        if a["auditor"] == auditor and detail in a["details"]:
            return pl.read_parquet(store.open_for_read(a["details"][detail]))
    return None


def filter_version(store: Store, ref: str, where: str, name: str | None = None) -> Manifest:
    """`assay filter`: a SQL condition over record fields and the version's audit columns."""
    manifest = store.resolve(ref)
    return store.filter(manifest.id, where, name, extra=audit_columns(store, manifest))
