#!/usr/bin/env python
"""The Ray engine against the local engine on one machine (issue 14): import and audit of N synthetic
records (bench/scale_steps.py's data: planted near-duplicates, exact copies, benchmark items), each
step in a fresh process and a workspace of its own (no record cache shared), printing wall time,
peak RSS, the ratio Ray / local (goal <= 1.3x at 1M) and the scaling from 1 to 2 Ray workers.

    python bench/ray_bench.py --records 1000000 --workdir /tmp/ray-bench --json-out bench/out/ray-1m.json

Every audit's numeric figures must agree across the engines; the bench stops if they do not.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import fresh_dir, peak_mb, run_child, write_json  # noqa: E402
from scale_steps import AUDITORS, synthesise  # noqa: E402

TIMING = ("seconds", "map_seconds", "read_seconds", "peak_rss_mb", "search_seconds", "records_per_s")


def child(task: dict) -> dict:
    """One step in this fresh process: an import or an audit, on the local engine or on a local Ray
    cluster of task["cpus"] CPUs started here (so the cluster's start-up is counted in `seconds`, and
    shown apart in `cluster_start_seconds`: a user with a running cluster does not pay it)."""
    from assay.core.store import Store

    started = time.perf_counter()
    out: dict = {"cluster_start_seconds": 0.0}
    if task["engine"] == "ray":
        import ray

        ray.init(num_cpus=task["cpus"], include_dashboard=False, log_to_driver=False)
        out["cluster_start_seconds"] = round(time.perf_counter() - started, 2)
    store = Store(task["ws"])
    if task["step"] == "import":
        from assay.pipelines.importer import ImportConfig, import_source

        out["records"] = import_source(store, task["path"], "bench", ImportConfig(engine=task["engine"])).records
    else:
        from assay.auditors.runner import make_auditor, run_audit

        options = {"contamination": {"semantic": False}}
        result = run_audit(store, "bench", [make_auditor(n, options.get(n)) for n in task["auditors"].split(",")],
                           engine=task["engine"], show_progress=False)
        out["steps"] = result["steps"]
        out["figures"] = {name: {k: v for k, v in s.items() if isinstance(v, (int, float)) and k not in TIMING}
                          for name, s in result["auditors"].items()}
    return {"seconds": round(time.perf_counter() - started, 2), "peak_rss_mb": round(peak_mb(), 1), **out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--workdir", default="/tmp/assay-ray-bench")
    ap.add_argument("--auditors", default=AUDITORS)
    ap.add_argument("--json-out", default=None)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))  # the last line: what run_child reads
        return
    work = fresh_dir(args.workdir)
    data = work / "data.jsonl"
    planted = synthesise(data, args.records)
    figures: dict = {"records": args.records, "file_mb": round(planted["bytes"] / 2**20, 1), "runs": {}}
    print(f"synthesised {args.records:,} records ({figures['file_mb']} MB)", flush=True)

    def step(label: str, **task) -> dict:
        result = run_child(__file__, json.dumps(task), env={"PYTHONHASHSEED": "0"})
        figures["runs"][label] = result
        print(f"{label:22} {result['seconds']:8.1f} s  {result['peak_rss_mb']:8.0f} MB  "
              f"(cluster start {result['cluster_start_seconds']:.1f} s)", flush=True)
        return result

    runs = {"local": ("local", 0), "ray, 1 CPU": ("ray", 1), "ray, 2 CPUs": ("ray", 2)}
    for label, (engine, cpus) in runs.items():
        step(f"import {label}", step="import", engine=engine, cpus=cpus, ws=str(work / f"imp-{engine}{cpus}"),
             path=str(data))
    # the audits start from copies of one imported workspace: the same version, no cache between them
    base = work / "imp-local0"
    for label, (engine, cpus) in runs.items():
        ws = work / f"audit-{engine}{cpus}"
        shutil.copytree(base, ws)
        step(f"audit {label}", step="audit", engine=engine, cpus=cpus, ws=str(ws), auditors=args.auditors)
        shutil.rmtree(ws)
    r = figures["runs"]
    for name in ("ray, 1 CPU", "ray, 2 CPUs"):
        if r[f"audit {name}"]["figures"] != r["audit local"]["figures"]:
            raise SystemExit(f"audit figures differ between local and {name}")
    def running(label: str) -> float:  # the step on a cluster already running
        return r[label]["seconds"] - r[label]["cluster_start_seconds"]

    figures["ratios"] = {
        "import ray(2) / local": round(r["import ray, 2 CPUs"]["seconds"] / r["import local"]["seconds"], 3),
        "import ray(2) / local, cluster running": round(running("import ray, 2 CPUs") / running("import local"), 3),
        "audit ray(2) / local, cluster running": round(running("audit ray, 2 CPUs") / running("audit local"), 3),
        "audit ray(2) / local": round(r["audit ray, 2 CPUs"]["seconds"] / r["audit local"]["seconds"], 3),
        "import ray(1) / ray(2)": round(r["import ray, 1 CPU"]["seconds"] / r["import ray, 2 CPUs"]["seconds"], 3),
        "audit ray(1) / ray(2)": round(r["audit ray, 1 CPU"]["seconds"] / r["audit ray, 2 CPUs"]["seconds"], 3),
    }
    for key, value in figures["ratios"].items():
        print(f"{key:40} {value:.3f}")
    write_json(args.json_out, figures)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
