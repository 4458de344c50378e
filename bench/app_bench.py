#!/usr/bin/env python
"""Benchmark of the Review page's work on a large version, against a naive app.

Run by hand (it is not a test):

    python bench/app_bench.py                        # 1,000,000 records, temp folder, deleted after
    python bench/app_bench.py --records 100000 --json-out bench/out/app.json

Set-up: N synthetic Alpaca-style records (bench/store_bench.py's generator: Zipf words, some
unicode), imported as one version, then audited with the exact-duplicate auditor so the Review page
has audit columns to filter on.

Timed, each step in a fresh Python process (nothing cached between steps; the process's imports are
paid before the clock starts, as in the long-lived Streamlit server), with that process's peak RSS:

  first page     what opening the Review page does: resolve the version, list the filterable
                 columns and the source/generator choices, the (empty) query's selection, page 0
                 with its audit columns (`assay.app.query`). Goal < 2 s.
  filter         a first condition over a record field and an audit column
                 (`length(output) >= T AND NOT exact_duplicate`) in a fresh process: select + page 0.
  filter change  the same with T + 7, after a first filter in the same process (the app's server is
                 long-lived and keeps the columns a filter read: `query.COLUMNS`). Goal < 1 s.
  search         a case-insensitive substring over instruction/input/output: select + page 0.
  sort           the whole version sorted by output length, descending: select + page 0.
  record view    one record with its audit columns and duplicate cluster (`query.record`).
  memory         peak RSS of each of those processes. Goal < 2 GB.

Baseline beside it, the naive app: read the whole dataset into memory with pandas (and with polars),
then slice page 0; the same filter and search done on that in-memory frame. Its "first page" is the
read plus the slice; "filter change" and "search" are timed both with the read (a fresh process, as
a server restart or a second worker pays it) and without (the frame already in memory).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from common import write_json  # noqa: E402
from store_bench import _rss_mb, machine_info, synthesize  # noqa: E402  (a sibling script)

SEARCH_WORD = "café"  # one of the generator's unicode words: rare, so the search is selective
PAGE = 50


# ---- the timed steps (each in a fresh process) ---------------------------------------------------

def child_assay(ws: str, version: str, step: str, threshold: int) -> dict:
    from assay.app import query
    from assay.core.store import Store

    queries = {
        "first_page": query.Query(),
        "filter": query.Query(where=f"length(output) >= {threshold} AND NOT exact_duplicate"),
        "search": query.Query(search=SEARCH_WORD),
        "sort": query.Query(sort="length(output)", descending=True),
    }
    rss_before = _rss_mb()
    t0 = time.perf_counter()
    store = Store(ws)
    manifest = store.resolve(version)
    first = None
    if step == "filter_change":  # the reviewer's second filter in the running app: the first one is
        # paid (reading its columns into the process's column cache), the change is what is timed
        sel = query.select(store, manifest, queries["filter"])
        query.page(store, sel, 0, PAGE)
        first = time.perf_counter() - t0
        step, t0 = "filter", time.perf_counter()
        queries["filter"] = query.Query(where=f"length(output) >= {threshold + 7} AND NOT exact_duplicate")
    if step == "record":
        rec = query.record(store, manifest, manifest.records // 2)
        seconds, rows, count = time.perf_counter() - t0, 1, len(rec["audit"])
    else:
        if step == "first_page":  # the page also lists the filterable columns and their choices
            query.columns(store, manifest)
            query.distinct(store, manifest, "source")
            query.distinct(store, manifest, "generator")
        sel = query.select(store, manifest, queries[step])
        page = query.page(store, sel, 0, PAGE)
        seconds, rows, count = time.perf_counter() - t0, page.height, sel.count
    return {"seconds": seconds, "rows": rows, "count": count, "peak_rss_mb": _rss_mb(),
            "rss_after_imports_mb": rss_before, **({"first_filter_seconds": first} if first is not None else {})}


def child_naive(paths: list[str], lib: str, step: str, threshold: int) -> dict:
    if lib == "pandas":
        import pandas as pd
    else:
        import polars as pl
    rss_before = _rss_mb()
    t0 = time.perf_counter()
    if lib == "pandas":
        df = pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)
    else:
        df = pl.concat([pl.read_parquet(p) for p in paths])
    read = time.perf_counter() - t0
    t1 = time.perf_counter()
    if lib == "pandas":
        if step == "filter":  # no audit columns in the naive app: the length half of the condition
            df = df[df["output"].str.len() >= threshold]
        elif step == "search":
            hit = False
            for col in ("instruction", "input", "output"):
                hit = hit | df[col].str.lower().str.contains(SEARCH_WORD, regex=False)
            df = df[hit]
        page = df.iloc[:PAGE]
    else:
        if step == "filter":
            df = df.filter(pl.col("output").str.len_chars() >= threshold)
        elif step == "search":
            df = df.filter(pl.any_horizontal(pl.col(c).str.to_lowercase().str.contains(SEARCH_WORD, literal=True)
                                             for c in ("instruction", "input", "output")))
        page = df.head(PAGE)
    work = time.perf_counter() - t1
    return {"seconds": read + work, "read_seconds": read, "in_memory_seconds": work, "rows": len(page),
            "count": len(df), "peak_rss_mb": _rss_mb(), "rss_after_imports_mb": rss_before}


def run_child(task: str, **kwargs) -> dict:
    return common.run_child(__file__, task, json.dumps(kwargs))  # --child TASK KWARGS


# ---- the driver ----------------------------------------------------------------------------------

def main(args: argparse.Namespace) -> dict:
    root = Path(args.dir or tempfile.mkdtemp(prefix="assay-app-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    ws, data = root / "ws", root / "records.jsonl"
    try:
        from assay.auditors.exact import ExactDuplicates
        from assay.auditors.runner import run_audit
        from assay.core.store import Store
        from assay.pipelines.importer import import_source

        if args.ws:  # an existing workspace whose version already has an `exact` audit
            store = Store(args.ws)
            manifest = store.resolve(args.version)
            lengths = store.read(manifest, ["output"])["output"].str.len_chars().to_numpy()
            threshold = int(np.quantile(lengths, 0.1))  # keeps ~90%, as store_bench's synthesis does
            t0 = t1 = t2 = 0.0
        else:
            print(f"synthesising {args.records:,} records ...", flush=True)
            synth = synthesize(data, args.records)
            store = Store(ws)
            t0 = time.perf_counter()
            manifest = import_source(store, str(data), "bench", show_progress=False)
            t1 = time.perf_counter()
            run_audit(store, manifest.id, [ExactDuplicates()], show_progress=False)
            t2 = time.perf_counter()
            print(f"imported in {t1 - t0:.1f} s, audited (exact) in {t2 - t1:.1f} s", flush=True)
            data.unlink()  # the JSONL is no longer needed; the workspace holds the records
            threshold = synth["output_len_threshold"]
        ws = Path(store.root)
        paths = [store.segment_path(p.segment) for p in manifest.parts]
        results: dict[str, dict] = {"assay": {}, "pandas": {}, "polars": {}}
        for step in ("first_page", "filter", "filter_change", "search", "sort", "record"):
            results["assay"][step] = run_child("assay", ws=str(ws), version=manifest.id, step=step,
                                               threshold=threshold)
            print(f"assay  {step:<11} {results['assay'][step]['seconds']:7.3f} s  "
                  f"peak {results['assay'][step]['peak_rss_mb']:7.0f} MB  "
                  f"({results['assay'][step]['count']:,} rows match)",
                  flush=True)
        for lib in args.baselines.split(","):
            for step in ("first_page", "filter", "search"):
                r = run_child("naive", paths=paths, lib=lib, step=step, threshold=threshold)
                results[lib][step] = r
                print(f"{lib:<6} {step:<11} {r['seconds']:7.3f} s  (read {r['read_seconds']:.3f} s, "
                      f"in memory {r['in_memory_seconds']:.3f} s)  peak {r['peak_rss_mb']:7.0f} MB  "
                      f"({r['count']:,} rows match)", flush=True)
        summary = {"records": manifest.records, "machine": machine_info(), "import_s": t1 - t0,
                   "audit_s": t2 - t1, "results": results, "ratios": {}}
        print("\nstep          assay s   pandas s  ratio   polars s  ratio   assay peak MB  pandas peak MB")
        for step in ("first_page", "filter", "search"):
            a = results["assay"][step]
            if not (results["pandas"] and results["polars"]):  # a baseline left out: its figures above only
                continue
            p, q = results["pandas"][step], results["polars"][step]
            summary["ratios"][step] = {"pandas_over_assay": p["seconds"] / a["seconds"],
                                       "polars_over_assay": q["seconds"] / a["seconds"]}
            print(f"{step:<12} {a['seconds']:8.3f} {p['seconds']:10.3f} {p['seconds'] / a['seconds']:6.1f}x "
                  f"{q['seconds']:10.3f} {q['seconds'] / a['seconds']:6.1f}x {a['peak_rss_mb']:14.0f} "
                  f"{p['peak_rss_mb']:15.0f}")
        worst_rss = max(r["peak_rss_mb"] for r in results["assay"].values())
        print(f"\ngoals: first page {results['assay']['first_page']['seconds']:.2f} s (< 2 s), "
              f"filter change {results['assay']['filter_change']['seconds']:.2f} s (< 1 s; "
              f"a first filter in a fresh process {results['assay']['filter']['seconds']:.2f} s), "
              f"peak memory {worst_rss:.0f} MB (< 2048 MB)")
        print(f"load average {os.getloadavg()}")
        write_json(args.json_out, summary)
        return summary
    finally:
        if not args.keep and not args.dir:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        kwargs = json.loads(sys.argv[3])
        result = child_assay(**kwargs) if sys.argv[2] == "assay" else child_naive(**kwargs)
        print(json.dumps(result))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--dir", help="work folder (kept); default: a temp folder, deleted after")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder")
    parser.add_argument("--json-out", help="write the figures here as JSON")
    parser.add_argument("--ws", help="use this workspace's version (with an exact audit) instead of synthesising")
    parser.add_argument("--version", default="bench", help="the version to review with --ws")
    parser.add_argument("--baselines", default="pandas,polars",
                        help="naive apps to run beside (pandas needs ~10x the data's size in memory at 10M)")
    main(parser.parse_args())
