"""Running auditors on a version, keeping their results, and filtering on them.

Results live in the workspace: per version and auditor configuration, the row-aligned columns and
the details as Parquet under `audits/<version id>/`, and a row in the catalog's `audits` table with
the summary. Auditing never changes the version (its content hash is untouched).
"""

from __future__ import annotations

import datetime as dt
import importlib
import io
import json
from typing import Any

import polars as pl

from assay.core.errors import AssayError
from assay.core.progress import progress
from assay.core.records import with_text
from assay.core.store import Manifest, Store, code_version

from .base import AuditContext, Auditor, AuditResult

# name -> "module:Class"; each auditor is one file under auditors/
REGISTRY: dict[str, str] = {
    "exact": "assay.auditors.exact:ExactDuplicates",
    "minhash": "assay.auditors.minhash:MinHashDuplicates",
    "embed": "assay.auditors.embed:SemanticDuplicates",
    "diversity": "assay.auditors.diversity:Diversity",
    "contamination": "assay.auditors.contamination:Contamination",
    "quality": "assay.auditors.quality:Quality",
    "difficulty": "assay.auditors.difficulty:Difficulty",  # optional: a base model's forward passes, slow on CPU
}

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


def auditor_class(name: str) -> type[Auditor]:
    if name not in REGISTRY:
        raise AssayError(f"unknown auditor {name!r}: auditors are {', '.join(REGISTRY)}")
    module, _, cls = REGISTRY[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def make_auditor(name: str, options: dict[str, Any] | None = None) -> Auditor:
    cls = auditor_class(name)
    fields = {f for f in cls.Config.__dataclass_fields__}
    unknown = set(options or {}) - fields
    if unknown:
        raise AssayError(f"auditor {name!r} has no option {', '.join(sorted(unknown))}: "
                         f"options are {', '.join(sorted(fields))}")
    return cls(cls.Config(**(options or {})))


def _ensure_schema(store: Store) -> None:
    store.catalog.ensure_schema(AUDITS_SCHEMA)


def _write_frame(store: Store, path: str, frame: pl.DataFrame) -> None:
    buf = io.BytesIO()
    frame.write_parquet(buf, compression="zstd")
    store.write_atomic(path, buf.getvalue())


def run_audit(store: Store, ref: str, auditors: list[Auditor], *, show_progress: bool | None = None) -> dict[str, Any]:
    """Run `auditors` on version `ref`, store their results and return {"version", "auditors": {name: summary}}."""
    _ensure_schema(store)
    manifest = store.resolve(ref)
    if manifest.records == 0:
        raise AssayError(f"version {manifest.ref} ({manifest.id[:12]}) is empty: nothing to audit")
    # only what the text views are built from: the provenance columns are not audited
    records = with_text(store.read(manifest, ["id", "instruction", "input", "output", "messages"]))
    ctx = AuditContext(store, manifest.id, manifest)
    out: dict[str, Any] = {}
    store.fs.makedirs(store.path("audits", manifest.id), exist_ok=True)
    with progress(f"auditing {manifest.ref}", total=len(auditors), enabled=show_progress) as bar:
        for auditor in auditors:
            result = auditor.run(records, ctx)
            _check_result(auditor, result, records.height)
            out[auditor.name] = _save(store, manifest, auditor, result)
            bar.advance()
    return {"version": manifest.id, "ref": manifest.ref, "records": manifest.records, "auditors": out}


def _check_result(auditor: Auditor, result: AuditResult, rows: int) -> None:
    # a contract check, not user input: a misaligned result would silently corrupt filters
    assert result.columns.height == rows, f"{auditor.name}: {result.columns.height} rows for {rows}"
    bad = [c for c in result.columns.columns if not c.startswith(auditor.name + "_")]
    assert not bad, f"{auditor.name}: columns must start with '{auditor.name}_': {bad}"


def _save(store: Store, manifest: Manifest, auditor: Auditor, result: AuditResult) -> dict[str, Any]:
    key = auditor.config_hash()
    base = store.path("audits", manifest.id, f"{auditor.name}-{key}")
    _write_frame(store, base + ".parquet", result.columns)
    details = {}
    for name, frame in result.details.items():
        details[name] = f"{base}.{name}.parquet"
        _write_frame(store, details[name], frame)
    summary = {**result.summary, "config": auditor.config_dict()}
    with store.catalog.write() as conn:
        conn.execute("INSERT OR REPLACE INTO audits VALUES (?,?,?,?,?,?,?,?,?)",
                     (manifest.id, auditor.name, key, json.dumps(auditor.config_dict(), default=str),
                      json.dumps(summary, default=str), base + ".parquet", json.dumps(details),
                      code_version(), dt.datetime.now(dt.timezone.utc).isoformat()))
    return summary


def latest_audits(store: Store, ref: str | Manifest) -> list[dict[str, Any]]:
    """The newest audit per auditor of a version: auditor, summary, columns and details paths."""
    _ensure_schema(store)
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
