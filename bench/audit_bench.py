"""Audit at scale: cold audit, cached re-audit of a 90% child, and peak memory.

    python bench/audit_bench.py --records 1000000 --auditors exact,minhash,quality

1. Synthesise N Alpaca-style records (fixed seed, ~5% planted near-copies) and import them.
2. Audit the version cold (empty cache) in a fresh process: wall time and peak RSS (VmHWM).
3. Filter a child keeping ~90% of the rows, and audit it in a fresh process: every per-record result
   comes from the cache, so only the version-level work (clustering, summaries) is redone.
   Goal: >= 20x faster than auditing the same child cold (measured in a third process on a fresh
   workspace copy of the child, so it is the same records with an empty cache).
4. Goal: 1,000,000 records audited by exact+minhash+quality within 8 GB.
Each step runs in its own process so one step's memory and caches do not leak into the next.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from common import write_json

CHILD = r"""
import json, sys, time
from assay.core.store import Store
from assay.auditors.runner import make_auditor, run_audit
ws, ref, names = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
t, cpu = time.perf_counter(), time.process_time()
result = run_audit(Store(ws), ref, [make_auditor(n) for n in names], show_progress=False)
seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
peak_kb = int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1])
print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "peak_rss_mb": peak_kb / 1024,
                  "summaries": {k: {kk: vv for kk, vv in v.items() if isinstance(vv, (int, float))}
                                for k, v in result["auditors"].items()}}))
"""


def synthesise(path: Path, n: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(20_000)]
    rows = []
    with path.open("w", encoding="utf-8") as fh:
        for _ in range(n):
            if rows and rng.random() < 0.05:  # a near-copy of an earlier record: a few words changed
                base = rng.choice(rows)
                words = base.split()
                for _ in range(2):
                    words[rng.randrange(len(words))] = rng.choice(vocab)
                output = " ".join(words)
            else:
                output = " ".join(rng.choices(vocab, k=rng.randint(30, 80)))
                if len(rows) < 50_000:
                    rows.append(output)
            instruction = " ".join(rng.choices(vocab, k=rng.randint(5, 20)))
            fh.write(json.dumps({"instruction": instruction, "input": "", "output": output}) + "\n")


def audit_in_child(ws: Path, ref: str, auditors: str) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(ws), ref, auditors], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--auditors", default="exact,minhash,quality")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--json-out", default=None)
    args = ap.parse_args()

    from assay.core.store import Store
    from assay.pipelines.importer import import_source

    work = Path(tempfile.mkdtemp(prefix="assay-audit-bench-", dir=args.workdir))
    try:
        src = work / "data.jsonl"
        synthesise(src, args.records)
        store = Store(work / "ws")
        parent = import_source(store, str(src), "bench", show_progress=False)
        cold = audit_in_child(work / "ws", parent.id, args.auditors)
        child = store.filter(parent.id, "length(instruction) % 10 != 0", "bench")  # keeps ~90%
        warm = audit_in_child(work / "ws", child.id, args.auditors)
        # the same child audited with an empty cache: export it and import it into a fresh workspace
        # (same records, same order, so the same work)
        fresh = Store(work / "ws-fresh")
        child_file = work / "child.jsonl"
        from assay.pipelines.exporter import export_version

        export_version(store, child.id, str(child_file))
        fresh_child = import_source(fresh, str(child_file), "child", show_progress=False)
        child_cold = audit_in_child(work / "ws-fresh", fresh_child.id, args.auditors)

        figures = {
            "records": args.records, "auditors": args.auditors, "cpus": os.cpu_count(),
            "child_records": child.records, "child_fraction": child.records / parent.records,
            "parent_cold": cold, "child_warm": warm, "child_cold": child_cold,
            "cache_speedup": child_cold["seconds"] / warm["seconds"],
            # CPU time too: on a shared machine wall time depends on what else runs
            "cache_speedup_cpu": child_cold["cpu_seconds"] / warm["cpu_seconds"],
            "load_average": os.getloadavg(),
        }
        print(f"records {args.records:,}  auditors {args.auditors}")
        for label, step in [("parent cold audit   ", cold),
                            (f"child ({figures['child_fraction']:.0%}) cold   ", child_cold),
                            ("child warm (cache)  ", warm)]:
            print(f"{label} {step['seconds']:8.2f} s wall {step['cpu_seconds']:8.2f} s CPU   "
                  f"peak RSS {step['peak_rss_mb']:8.0f} MB")
        print(f"cache speed-up: {figures['cache_speedup']:.1f}x wall, {figures['cache_speedup_cpu']:.1f}x CPU "
              "(goal >= 20x); "
              f"peak memory {max(cold['peak_rss_mb'], warm['peak_rss_mb']) / 1024:.2f} GB (goal <= 8 GB)")
        write_json(args.json_out, figures)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
