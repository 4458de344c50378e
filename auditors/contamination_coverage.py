"""The contamination auditor's summary parts beyond per-record flags: coverage (how many of each
benchmark's items have a verbatim or rephrased copy, and in which records), the similarity
distribution near each threshold, the code tier's counts and evidence, and each benchmark item's
top code candidates (candidates from the benchmark's side, not only each record's nearest item)."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from .base import Rows
from .benchmarks import Benchmark
from .contamination_code import canonical_overlap, item_code

RECORDS_PER_ITEM = 10  # record ids listed per covered item in the summary (the evidence has them all)
BIN = 0.05  # width of the similarity bins around a threshold
OVERLAPS = 500  # code-tier evidence rows given a canonical overlap (difflib on two programs: ms each)


def coverage(found: pl.DataFrame, rows: Rows, benchmarks: list[Benchmark], flagged: pl.Series) -> dict[str, Any]:
    """Per benchmark: the items with a flagged copy, verbatim (n-gram tier) or rephrased (any other
    tier, the judge included), and which records they are."""
    # a record flagged by the judge alone names its nearest item
    frame = found.with_columns(flagged=flagged).filter("flagged").with_columns(
        benchmark=pl.coalesce("contamination_benchmark", "nearest_benchmark"),
        item=pl.coalesce("contamination_item", "nearest_item"))
    ids = rows.at(frame["row"].to_numpy(), ["id"])["id"] if frame.height else pl.Series([], dtype=pl.String)
    frame = frame.with_columns(id=ids)
    out: dict[str, Any] = {}
    for b in benchmarks:
        mine = frame.filter(pl.col("benchmark") == b.name)
        per_item = mine.group_by("item", maintain_order=True).agg(
            pl.col("id").head(RECORDS_PER_ITEM).alias("records"), pl.len().alias("copies"),
            pl.col("contamination_ngram").any().alias("verbatim"))
        total = b.items.height
        out[b.name] = {
            "items": total, "items_covered": per_item.height,
            "items_verbatim": int(per_item["verbatim"].sum()),
            "items_rephrased_only": int((~per_item["verbatim"]).sum()),
            "share": per_item.height / total if total else 0.0,
            "text": f"{per_item.height} of {total} {b.name} items",
            "covered": per_item.sort("item").to_dicts(),
        }
    return out


def near_threshold(found: pl.DataFrame, cfg) -> dict[str, Any]:
    """Records per similarity bin from 0.2 below to 0.2 above each tier's threshold (best match per
    record), to see how many a small change of the threshold would add or drop."""
    out: dict[str, Any] = {}
    tiers = [("semantic", "contamination_similarity", cfg.threshold, cfg.semantic),
             ("code", "contamination_code_similarity", cfg.code_threshold, cfg.code)]
    for name, column, threshold, on in tiers:
        if not on:
            continue
        values = found[column].drop_nulls().to_numpy()
        edges = np.round(np.arange(-4, 5) * BIN + threshold, 6)
        counts = np.histogram(values, bins=np.r_[edges, np.inf])[0][:-1] if values.size else np.zeros(8, int)
        out[name] = {"threshold": threshold,
                     "bins": [{"from": float(lo), "to": float(hi), "records": int(c)}
                              for lo, hi, c in zip(edges[:-1], edges[1:], counts[:8])],
                     "at_or_above": int((values >= threshold).sum())}
    return out


def code_summary(found: pl.DataFrame, benchmarks: list[Benchmark], items: pl.DataFrame, cfg) -> dict[str, Any]:
    views = [item_code(t, c).source for t, c in zip(items["text"].to_list(), items["code"].to_list())]
    names = items["benchmark"].to_list()
    hit = found.filter("contamination_code")["code_item_index"].drop_nulls().to_numpy()
    hit_benchmarks = pl.Series([names[i] for i in hit.tolist()], dtype=pl.String)
    per: dict[str, Any] = {}
    for b in benchmarks:
        mine = [v for v, n in zip(views, names) if n == b.name]
        solutions = sum(v == "solution" for v in mine)
        per[b.name] = {
            "view": "solutions" if solutions else ("prompts only" if any(v == "prompt" for v in mine) else "none"),
            "items_with_solution": solutions, "items_prompt_only": sum(v == "prompt" for v in mine),
            "items_without_code": sum(v == "none" for v in mine),
            "records": int((hit_benchmarks == b.name).sum()),
        }
    return {"threshold": cfg.code_threshold, "ngram": cfg.code_ngram,
            "records": int(found["contamination_code"].sum()),
            "records_with_code": int(found["code_found"].sum()),
            "parse_fallbacks": int(found["code_fallback"].sum()),
            "benchmarks": per}


def item_candidates(found: pl.DataFrame, rows: Rows, items: pl.DataFrame, k: int) -> pl.DataFrame:
    """Each benchmark item's top-k records by code Jaccard (from every record's candidates, so an item
    that is no record's nearest still lists its closest records)."""
    pairs = found.select("row", "code_candidates", "code_candidate_scores").explode(
        ["code_candidates", "code_candidate_scores"]).drop_nulls("code_candidates")
    top = pairs.sort(["code_candidates", "code_candidate_scores", "row"], descending=[False, True, False]).group_by(
        "code_candidates", maintain_order=True).head(k)
    ids = rows.at(top["row"].to_numpy(), ["id"])["id"] if top.height else pl.Series([], dtype=pl.String)
    index = items.with_row_index("code_candidates").select(
        pl.col("code_candidates").cast(pl.Int32), "benchmark", "item")
    return top.with_columns(id=ids).join(index, on="code_candidates", how="left").select(
        "benchmark", "item", "row", "id", pl.col("code_candidate_scores").cast(pl.Float64).alias("code_similarity"))


def code_evidence(flagged: pl.DataFrame, items: pl.DataFrame) -> pl.DataFrame:
    """`flagged` (with record_text and the chosen item) plus the item's code view and, for the first
    OVERLAPS records the code tier flagged, the canonical overlap of the two programs."""
    code_of = {(b, i): item_code(t, c).code for b, i, t, c in items.select("benchmark", "item", "text", "code")
               .iter_rows()}
    bench_code, overlap = [], []
    for r in flagged.select("contamination_code", "contamination_benchmark", "contamination_item",
                            "record_text").iter_rows(named=True):
        code = code_of.get((r["contamination_benchmark"], r["contamination_item"])) or None
        bench_code.append(code)
        wanted = r["contamination_code"] and code and len(overlap) - overlap.count(None) < OVERLAPS
        overlap.append(canonical_overlap(r["record_text"] or "", code) if wanted else None)
    dtype = pl.Struct({"record_canonical": pl.String, "item_canonical": pl.String,
                       "aligned_item_tokens": pl.Float64, "longest_shared_run": pl.String})
    return flagged.with_columns(benchmark_code=pl.Series(bench_code, dtype=pl.String),
                                code_overlap=pl.Series(overlap, dtype=dtype))

