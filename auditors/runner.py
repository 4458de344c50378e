"""Running auditors on a version: the registry of auditors by name, building one from its options,
and running a set of them over a version's records. Their results are kept by `assay.core.audits`
(which also reads them back and filters on them). Auditing never changes the version.
"""

from __future__ import annotations

import importlib
import resource
import time
from typing import Any

from assay.core.audits import save_audit
from assay.core.errors import AssayError
from assay.core.progress import progress
from assay.core.records import with_text
from assay.core.store import Store

from .base import AuditContext, Auditor, AuditResult

# name -> "module:Class"; each auditor is one file under auditors/
REGISTRY: dict[str, str] = {
    "exact": "assay.auditors.exact:ExactDuplicates",
    "minhash": "assay.auditors.minhash:MinHashDuplicates",
    "embed": "assay.auditors.semantic_dups:SemanticDuplicates",
    "diversity": "assay.auditors.diversity:Diversity",
    "contamination": "assay.auditors.contamination:Contamination",
    "quality": "assay.auditors.quality:Quality",
    "difficulty": "assay.auditors.difficulty:Difficulty",  # optional: a base model's forward passes, slow on CPU
}

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


def run_audit(store: Store, ref: str, auditors: list[Auditor], *, show_progress: bool | None = None) -> dict[str, Any]:
    """Run `auditors` on version `ref`, store their results and return {"version", "auditors": {name: summary}}."""
    manifest = store.resolve(ref)
    if manifest.records == 0:
        raise AssayError(f"version {manifest.ref} ({manifest.id[:12]}) is empty: nothing to audit")
    steps: dict[str, dict[str, float]] = {}
    started = time.perf_counter()
    # only what the text views are built from: the provenance columns are not audited
    records = with_text(store.read(manifest, ["id", "instruction", "input", "output", "messages"]))
    steps["read"] = _step(started)
    ctx = AuditContext(store, manifest.id, manifest)
    out: dict[str, Any] = {}
    store.fs.makedirs(store.path("audits", manifest.id), exist_ok=True)
    with progress(f"auditing {manifest.ref}", total=len(auditors), enabled=show_progress) as bar:
        for auditor in auditors:
            started = time.perf_counter()
            result = auditor.run(records, ctx)
            _check_result(auditor, result, records.height)
            out[auditor.name] = save_audit(store, manifest, auditor=auditor.name, config_hash=auditor.config_hash(),
                                           config=auditor.config_dict(), columns=result.columns,
                                           summary=result.summary, details=result.details)
            steps[auditor.name] = _step(started)
            bar.advance()
    return {"version": manifest.id, "ref": manifest.ref, "records": manifest.records, "auditors": out,
            "steps": steps}


def _step(started: float) -> dict[str, float]:
    """A step's wall time, and the process's peak memory so far (what a user sizes a machine by)."""
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    return {"seconds": round(time.perf_counter() - started, 3), "peak_rss_mb": round(peak_kb / 1024, 1)}


def _check_result(auditor: Auditor, result: AuditResult, rows: int) -> None:
    # a contract check, not user input: a misaligned result would silently corrupt filters
    assert result.columns.height == rows, f"{auditor.name}: {result.columns.height} rows for {rows}"
    bad = [c for c in result.columns.columns if not c.startswith(auditor.name + "_")]
    assert not bad, f"{auditor.name}: columns must start with '{auditor.name}_': {bad}"
