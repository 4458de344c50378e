#!/usr/bin/env python
"""Benchmark of the neighbour search (auditors/neighbours.py): exact vs approximate, time, recall@10
and peak memory, on synthetic 384-d vectors (the dimension of all-MiniLM-L6-v2).

Run by hand (it is not a test):

    python bench/ann_bench.py                      # 100k vectors
    python bench/ann_bench.py --n 20000 --json-out bench/out/ann.json

Why synthetic: real MiniLM embeddings of 100k texts take hours on a 2-core CPU (about 11 records/s
with the torch backend), so the vectors are drawn from `assay.auditors.neighbours.clustered_vectors`: 1,000 random topic
directions plus a shared mean direction (sentence embeddings are anisotropic), per-vector Gaussian
noise, and 2% planted near-duplicates (an earlier row plus a little noise, cosine ~0.98). Two noise
levels: "clustered" (noise 1.5: a record's nearest other record at cosine ~0.5, like human-written
instruction sets, whose nearest neighbours sit at 0.4-0.8) and "hard" (noise 2.0: nearest at ~0.33,
almost structureless, the hard case for a graph search).

Each step runs in a fresh subprocess (this script with --child STEP), so its peak RSS is its own:

1. knn-exact   every vector's 10 nearest others, exactly (blocked matrix products), on "clustered".
2. knn-approx  the same through the HNSW graph; recall@10 against step 1.
3. clusters    the `embed` auditor's search (`nearest_and_clusters` at threshold 0.95), exact and
               approximate: planted near-duplicates found, and agreement of the cluster labels.
4. hard        recall@10 of the approximate search on "hard", against exact search of 2,000
               sampled queries.

Memory at 10M: the index's bytes per vector (faiss' own arrays, `HnswIndex.nbytes`) times 10M, plus
one batch; the vectors themselves (1,536 B each as float32) are the caller's, in RAM or a memmap.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from common import write_json

from assay.auditors.neighbours import SearchOptions, clustered_vectors, knn, nearest_and_clusters, recall_at_k

D = 384
K = 10


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(step: str, n: int, out: Path) -> dict:

    x, dup, src = clustered_vectors(n, noise=2.0 if step == "hard" else 1.5)
    base_mb = _peak_mb()
    t0 = time.perf_counter()
    fig: dict = {"step": step, "vectors": n, "rss_before_mb": round(base_mb, 1)}
    if step in ("knn-exact", "knn-approx"):
        mode = "exact" if step == "knn-exact" else "approximate"
        _, idx, info = knn(x, x, K, SearchOptions(search=mode), exclude_self=True)
        np.save(out / f"{step}.npy", idx)
        fig["search"] = info.as_dict()
    elif step.startswith("clusters"):
        mode = step.split("-")[1]
        found = nearest_and_clusters(x, 0.95, options=SearchOptions(search=mode))
        np.save(out / f"{step}.npy", found.label)
        fig["search"] = found.search.as_dict()
        fig["duplicates_flagged"] = int((found.label != np.arange(n)).sum())
        fig["planted_flagged"] = int((found.label[dup] != dup).sum())
        fig["planted"] = int(dup.size)
        fig["planted_joined_to_their_source"] = int((found.label[dup] == found.label[src]).sum())
    elif step == "hard":
        queries = np.random.default_rng(1).choice(n, 2000, replace=False)
        _, truth, _ = knn(x, x[queries], K + 1, SearchOptions(search="exact"))
        t0 = time.perf_counter()
        _, idx, info = knn(x, x[queries], K + 1, SearchOptions(search="approximate"))
        fig["recall_at_10"] = recall_at_k(idx[:, 1:], truth[:, 1:])  # column 0: the query itself
        fig["search"] = info.as_dict()
    fig["seconds"] = round(time.perf_counter() - t0, 2)
    fig["peak_rss_mb"] = round(_peak_mb(), 1)
    return fig


def run_step(step: str, n: int, out: Path) -> dict:
    cmd = [sys.executable, __file__, "--child", step, "--n", str(n), "--out", str(out)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode:
        raise SystemExit(f"step {step} failed:\n{done.stderr[-3000:]}")
    fig = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"  {step:<16} {fig['seconds']:>8.1f} s   peak RSS {fig['peak_rss_mb']:>7.0f} MB", flush=True)
    return fig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000, help="vectors (default 100,000)")
    parser.add_argument("--out", default="bench/out/ann", help="folder for the steps' neighbour arrays")
    parser.add_argument("--json-out", default=None, help="also write the figures to this JSON file")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.child:
        print(json.dumps(child(args.child, args.n, out)))
        return

    import faiss

    print(f"neighbour search bench: {args.n:,} synthetic {D}-d vectors; faiss {faiss.__version__}; "
          f"{os.cpu_count()} CPUs, {platform.platform()}", flush=True)
    steps = {s: run_step(s, args.n, out)
             for s in ("knn-exact", "knn-approx", "clusters-exact", "clusters-approximate", "hard")}
    exact, approx = np.load(out / "knn-exact.npy"), np.load(out / "knn-approx.npy")
    recall = recall_at_k(approx, exact)
    le, la = np.load(out / "clusters-exact.npy"), np.load(out / "clusters-approximate.npy")
    ce, ca = steps["clusters-exact"], steps["clusters-approximate"]
    search = steps["knn-approx"]["search"]
    per_vector = search["index_bytes"] / args.n
    batch_mb = 4096 * (4096 + D) * 4 / 2**20 + 4096 * search["candidates"] * D * 4 / 2**20
    figures = {
        "vectors": args.n, "dimension": D,
        "knn_exact_seconds": steps["knn-exact"]["seconds"], "knn_approx_seconds": steps["knn-approx"]["seconds"],
        "speedup": round(steps["knn-exact"]["seconds"] / steps["knn-approx"]["seconds"], 2),
        "recall_at_10": round(recall, 5), "recall_at_10_hard": round(steps["hard"]["recall_at_10"], 5),
        "peak_rss_mb": {s: f["peak_rss_mb"] for s, f in steps.items()},
        "rss_before_search_mb": steps["knn-exact"]["rss_before_mb"],
        "index_bytes_per_vector": round(per_vector, 1),
        "estimate_10M_index_gb": round(per_vector * 10_000_000 / 1e9, 2),
        "batch_working_mb": round(batch_mb, 1),
        "clusters": {"exact_seconds": ce["seconds"], "approx_seconds": ca["seconds"],
                     "planted": ce["planted"], "planted_flagged_exact": ce["planted_flagged"],
                     "planted_flagged_approx": ca["planted_flagged"],
                     "flagged_exact": ce["duplicates_flagged"], "flagged_approx": ca["duplicates_flagged"],
                     "labels_equal": round(float((le == la).mean()), 6)},
        "search": search,
    }
    print(f"\nexact knn@10 {figures['knn_exact_seconds']:.1f} s, approximate {figures['knn_approx_seconds']:.1f} s "
          f"({figures['speedup']}x); recall@10 {recall:.4f} (hard set: {figures['recall_at_10_hard']:.4f})")
    print(f"embed search at 0.95: exact {ce['seconds']:.1f} s, approximate {ca['seconds']:.1f} s; planted "
          f"{ce['planted']} flagged {ce['planted_flagged']} / {ca['planted_flagged']}; all flagged "
          f"{ce['duplicates_flagged']} / {ca['duplicates_flagged']}; "
          f"labels equal {figures['clusters']['labels_equal']}")
    print(f"index {per_vector:.0f} B/vector -> {figures['estimate_10M_index_gb']} GB at 10M vectors "
          f"(+ one batch, ~{batch_mb:.0f} MB; + the caller's float32 vectors, 1,536 B each)")
    write_json(args.json_out, figures)


if __name__ == "__main__":
    main()
