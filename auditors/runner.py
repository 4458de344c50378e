"""Running auditors on a version: the registry of auditors by name, building one from its options,
and running a set of them over a version's records. Their results are kept by `assay.core.audits`
(which also reads them back and filters on them). Auditing never changes the version.
"""

from __future__ import annotations

import importlib
import resource
import time
from dataclasses import dataclass
from typing import Any

import polars as pl

from assay.core.audits import save_audit
from assay.core.errors import AssayError
from assay.core.progress import progress
from assay.core.ray_cluster import resolve_engine
from assay.core.records import with_text
from assay.core.store import Store

from .base import AuditContext, Auditor, AuditResult, VersionRows
from .engine_ray import map_by_part_on_ray

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


def run_audit(store: Store, ref: str, auditors: list[Auditor], *, show_progress: bool | None = None,
              engine: str | None = None, ray_address: str | None = None) -> dict[str, Any]:
    """Run `auditors` on version `ref`, store their results and return {"version", "auditors": {name: summary}}.

    Streaming auditors (map + reduce) read the version segment by segment, so their memory is their
    per-record results, not the records; the others get the whole version as one frame. `engine`
    ("local", "ray"; default $ASSAY_ENGINE, else local) says where the streaming auditors' maps run
    (auditors/engine_ray.py); everything else runs in this process."""
    engine = resolve_engine(engine)
    manifest = store.resolve(ref)
    if manifest.records == 0:
        raise AssayError(f"version {manifest.ref} ({manifest.id[:12]}) is empty: nothing to audit")
    for auditor in auditors:
        auditor.validate()
    steps: dict[str, dict[str, float]] = {}
    ctx = AuditContext(store, manifest.id, manifest, engine=engine, ray_address=ray_address)
    out: dict[str, Any] = {}
    store.makedirs(store.path("audits", manifest.id))

    def save(auditor: Auditor, result: AuditResult) -> None:
        _check_result(auditor, result, manifest.records)
        out[auditor.name] = save_audit(store, manifest, auditor=auditor.name, config_hash=auditor.config_hash(),
                                       config=auditor.config_dict(), columns=result.columns,
                                       summary=result.summary, details=result.details)

    streaming = [a for a in auditors if a.streaming]
    whole = [a for a in auditors if not a.streaming]
    with progress(f"auditing {manifest.ref}", total=len(auditors), enabled=show_progress) as bar:
        # one pass over the parts per streaming auditor: map, then reduce, then its results are saved
        # and dropped before the next one maps, so the peak is the largest auditor's, not the sum of
        # them all (10M records: MinHash's signatures alone are 5 GB); reading a part is cheap next to
        # any auditor's map (5 s of 990 for four auditors at 10M)
        for auditor in streaming:
            started = time.perf_counter()
            auditor.prepare(ctx)
            split: dict[str, float] = {}
            if engine == "ray":
                mapped = map_by_part_on_ray(store, manifest, [auditor], ctx, show_progress, split, ray_address)
            else:
                mapped = _map_by_part(store, manifest, [auditor], ctx, show_progress, split)
            map_seconds = time.perf_counter() - started
            save(auditor, auditor.reduce(mapped.pop(auditor.name), VersionRows(store, manifest), ctx))
            steps[auditor.name] = {**_step(started), "map_seconds": round(map_seconds, 3),
                                   "read_seconds": round(split.get("read", 0.0), 3)}
            bar.advance()
        if whole:
            started = time.perf_counter()
            # only what the text views are built from: the provenance columns are not audited
            records = with_text(store.read(manifest, list(READ_COLUMNS)))
            steps["read"] = _step(started)
            for auditor in whole:
                started = time.perf_counter()
                save(auditor, auditor.run(records, ctx))
                steps[auditor.name] = _step(started)
                bar.advance()
    return {"version": manifest.id, "ref": manifest.ref, "records": manifest.records, "engine": engine,
            "auditors": {a.name: out[a.name] for a in auditors}, "steps": steps}


READ_COLUMNS = ("id", "instruction", "input", "output", "messages")


def _map_by_part(store: Store, manifest, auditors: list[Auditor], ctx: AuditContext,
                 show_progress: bool | None, seconds: dict[str, float]) -> dict[str, pl.DataFrame]:
    """Each streaming auditor's per-record results for every row, in version order: the version read
    one part (segment) at a time, each part's rows mapped through the record cache."""
    known = ctx.known_ids(auditors)
    done: list[PartResult] = []
    with progress(f"reading {manifest.ref}", total=manifest.records, enabled=show_progress) as bar:
        for k in range(len(manifest.parts)):
            done.append(for_reduce(map_part(store, k, auditors, ctx, known), auditors, ctx))
            bar.advance(manifest.parts[k].kept)
    return combine(done, auditors, ctx, seconds)


@dataclass
class PartResult:
    """One part's map results: per auditor its frame (without `id`), cache hits, misses, seconds."""

    frames: dict[str, pl.DataFrame]
    counts: dict[str, dict[str, float]]
    read_seconds: float


def map_part(store: Store, k: int, auditors: list[Auditor], ctx: AuditContext,
             known: dict[str, pl.Series]) -> PartResult:
    """Part k of ctx's version through every streaming auditor's map and record cache (the texts
    are read only when some result is not cached). The unit of work of both engines."""
    part = ctx.manifest.parts[k]
    part_caches = {a.name: ctx.cached(a.map_key(), part=k, known_ids=known[a.name]) for a in auditors}
    started = time.perf_counter()
    if all(cache.covers() for cache in part_caches.values()):
        records = store.read_part(part, ["id"])  # every result cached: the texts are not needed
    else:
        records = with_text(store.read_part(part, list(READ_COLUMNS)))
    result = PartResult({}, {}, time.perf_counter() - started)
    for auditor in auditors:
        started = time.perf_counter()
        cache = part_caches[auditor.name]
        wanted = ["id"] if records.width == 1 else ["id", *auditor.map_columns()]
        result.frames[auditor.name] = cache.get_or_compute(records.select(wanted), auditor.map).drop("id")
        result.counts[auditor.name] = {"hits": cache.hits, "misses": cache.misses,
                                       "seconds": time.perf_counter() - started}
    return result


def for_reduce(result: PartResult, auditors: list[Auditor], ctx: AuditContext) -> PartResult:
    """A part's results narrowed to what each auditor's reduce gathers (`Auditor.for_reduce`)."""
    result.frames = {a.name: a.for_reduce(result.frames[a.name], ctx) for a in auditors}
    return result


def combine(done: list[PartResult], auditors: list[Auditor], ctx: AuditContext,
            seconds: dict[str, float]) -> dict[str, pl.DataFrame]:
    """The parts' results (in version order) as one frame per auditor; cache counts into ctx."""
    seconds["read"] = seconds.get("read", 0.0) + sum(r.read_seconds for r in done)
    out = {}
    for a in auditors:
        frames = [r.frames[a.name] for r in done]
        out[a.name] = pl.concat(frames, how="vertical_relaxed") if len(frames) > 1 else frames[0]
        ctx.map_cache[a.name] = {key: int(sum(r.counts[a.name][key] for r in done)) for key in ("hits", "misses")}
        map_seconds = sum(r.counts[a.name]["seconds"] for r in done)  # summed over workers on Ray
        ctx.map_seconds[a.name] = map_seconds
        seconds[a.name] = seconds.get(a.name, 0.0) + map_seconds
        for r in done:  # each part's frame is now in the combined one
            r.frames.pop(a.name)
    return out


def _step(started: float) -> dict[str, float]:
    """A step's wall time, and the process's peak memory so far (what a user sizes a machine by)."""
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    return {"seconds": round(time.perf_counter() - started, 3), "peak_rss_mb": round(peak_kb / 1024, 1)}


def _check_result(auditor: Auditor, result: AuditResult, rows: int) -> None:
    # a contract check, not user input: a misaligned result would silently corrupt filters
    assert result.columns.height == rows, f"{auditor.name}: {result.columns.height} rows for {rows}"
    bad = [c for c in result.columns.columns if not c.startswith(auditor.name + "_")]
    assert not bad, f"{auditor.name}: columns must start with '{auditor.name}_': {bad}"
