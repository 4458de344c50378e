#!/usr/bin/env python
"""Benchmark of the version store: import, filter and paging at a million records.

Run by hand (it is not a test):

    python bench/store_bench.py                       # 1,000,000 records, temp folder, deleted at the end
    python bench/store_bench.py --records 50000 --json-out bench/out/store.json

What it measures, top to bottom:

1. synthesis   N Alpaca-style records (instruction, input, output) written to one JSONL file;
               the text is pseudo-random words from a fixed vocabulary, fixed seed, some unicode.
2. import      `assay.pipelines.importer.import_source` on that file (records/s), and beside it
               Hugging Face `datasets.load_dataset("json", ...)` on the same file with a fresh cache
               (records/s), and the ratio of the two; and `datasets` doing the import's whole job
               (load, each record's content id in a batched map on every core, Parquet),
               the nearest equal of what an import produces.
3. filter      a child version keeping ~90% of the parent; the bytes it wrote (new files under
               objects/ and manifests/) against the bytes of the parent's segments. Goal: <= 1%.
4. paging      `store.page(version, k, 50)` for the first, middle and last page of the parent and
               of the child. Goal: < 1 s each, without loading the whole version.

Every timed step runs in a fresh Python subprocess (this script, re-run with --child): nothing is
cached in memory between steps, and the child's peak RSS (VmHWM) belongs to that step alone.
Paging is timed twice per page: "cold", after asking the kernel to drop the workspace's files from
the page cache (posix_fadvise DONTNEED, no root needed), and "warm", right after. Imports run
--import-runs times and pages --page-runs times; the figures are medians, since a small shared
machine is noisy (the load average at start and end is printed with the summary).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import write_json

PAGE_SIZE = 50
DATASET = "bench"
SEED = 20240601
SYNTH_CHUNK = 20_000  # records synthesised per numpy draw: bounds the synthesis memory

# Field lengths in characters (uniform in [lo, hi]); like Alpaca, most records have no input.
INSTRUCTION_CHARS = (30, 200)
INPUT_CHARS = (20, 300)
INPUT_PRESENT = 0.4
OUTPUT_CHARS = (50, 400)
KEEP_FRACTION = 0.9  # the filter keeps about this share of the parent


# ---- 1. synthesis -----------------------------------------------------------------------------

# Frequent English words first (Zipf puts most of the mass on them, as in real text); then made-up
# words; a few non-ASCII words are mixed in at random ranks so that the text exercises UTF-8.
COMMON = ("the of and to a in is for that with as on by this be it are from or an which can "
          "write explain list give describe what how why create find make your you use following "
          "example answer question data model number text word sentence time").split()
UNICODE = ["café", "naïve", "über", "façade", "niño", "Straße", "résumé", "smörgåsbord", "東京",
           "数据", "模型", "日本語", "модель", "данные", "δεδομένα", "λόγος", "→", "…", "🙂", "🚀",
           "±", "€", "°C", "ﬁne"]


def make_vocabulary(rng: np.random.Generator, size: int = 6000) -> tuple[np.ndarray, np.ndarray]:
    """Words and their sampling probabilities (Zipf, exponent 1)."""
    onsets = list("bcdfghjklmnprstvwz") + ["br", "ch", "cl", "st", "th", "tr", "sh"]
    vowels = ["a", "e", "i", "o", "u", "ai", "ea", "ou"]
    made_up: set[str] = set()
    while len(made_up) < size - len(COMMON) - len(UNICODE):
        n = int(rng.integers(1, 5))
        made_up.add("".join(rng.choice(onsets) + rng.choice(vowels) for _ in range(n))
                    + (rng.choice(["", "n", "s", "r", "d", "ng"])))
    words = COMMON + sorted(made_up)
    for w in UNICODE:  # anywhere after the common words
        words.insert(int(rng.integers(len(COMMON), len(words))), w)
    probs = 1.0 / np.arange(1, len(words) + 1)
    return np.array(words, dtype=object), probs / probs.sum()


def synth_texts(rng, vocab, probs, n: int, lo: int, hi: int, end: str) -> list[str]:
    """n texts of about uniform(lo, hi) characters each.

    One flat stream of words is drawn for all n texts at once (fast), then cut where the running
    character count passes each text's target length."""
    targets = rng.integers(lo, hi + 1, n)
    word_chars = np.array([len(w) + 1 for w in vocab])  # +1 for the space after it
    mean_chars = float((probs * word_chars).sum())
    stream = rng.choice(len(vocab), size=int(targets.sum() / mean_chars * 1.2) + 1000, p=probs)
    cum = np.cumsum(word_chars[stream])
    while cum[-1] < targets.sum():  # a short draw is rare; extend it
        more = rng.choice(len(vocab), size=len(stream) // 5 + 1000, p=probs)
        stream, cum = np.concatenate([stream, more]), np.concatenate([cum, cum[-1] + np.cumsum(word_chars[more])])
    cuts = np.searchsorted(cum, np.cumsum(targets)) + 1  # text i is stream[cuts[i-1]:cuts[i]]
    starts = np.concatenate([[0], cuts[:-1]])
    texts = []
    for a, b in zip(starts.tolist(), cuts.tolist()):
        s = " ".join(vocab[stream[a:max(b, a + 1)]])
        texts.append(s[:1].upper() + s[1:] + end)
    return texts


def synthesize(path: Path, n: int) -> dict:
    """Write n records as JSONL. Returns the file size and the filter's threshold: the output
    length that about KEEP_FRACTION of the records reach, with the exact count it keeps."""
    rng = np.random.default_rng(SEED)
    vocab, probs = make_vocabulary(rng)
    output_lengths = np.empty(n, dtype=np.int64)
    with open(path, "w", encoding="utf-8") as fh:
        for start in range(0, n, SYNTH_CHUNK):
            m = min(SYNTH_CHUNK, n - start)
            instructions = synth_texts(rng, vocab, probs, m, *INSTRUCTION_CHARS, end="?")
            inputs = synth_texts(rng, vocab, probs, m, *INPUT_CHARS, end=".")
            has_input = rng.random(m) < INPUT_PRESENT
            outputs = synth_texts(rng, vocab, probs, m, *OUTPUT_CHARS, end=".")
            output_lengths[start:start + m] = [len(o) for o in outputs]
            fh.write("".join(
                json.dumps({"instruction": i, "input": x if keep else "", "output": o}, ensure_ascii=False) + "\n"
                for i, x, keep, o in zip(instructions, inputs, has_input.tolist(), outputs)))
    # keep rows whose output is at least this long: about KEEP_FRACTION of them, scattered over
    # every segment (the realistic case for the bitmaps: no segment is dropped or kept whole)
    threshold = int(np.quantile(output_lengths, 1 - KEEP_FRACTION))
    return {"bytes": path.stat().st_size, "output_len_threshold": threshold,
            "expected_kept": int((output_lengths >= threshold).sum())}


# ---- the timed steps, each run in a fresh subprocess ------------------------------------------

def _rss_mb() -> float:
    """Peak resident memory of this process so far, in MB (MiB).

    VmHWM rather than getrusage's ru_maxrss: on Linux ru_maxrss survives execve, so a child started
    by a big parent reports the parent's size (a 200 MB parent makes "python -c pass" read 200 MB);
    VmHWM belongs to the new address space."""
    try:
        with open("/proc/self/status") as fh:
            return int(next(line for line in fh if line.startswith("VmHWM:")).split()[1]) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _bytes_read() -> int:
    """Bytes this process has read through read syscalls so far (page cache hits included)."""
    try:
        with open("/proc/self/io") as fh:
            return int(next(line for line in fh if line.startswith("rchar:")).split()[1])
    except (OSError, StopIteration):
        return -1


def child_import(ws: str, path: str) -> dict:
    from assay.core.store import Store
    from assay.pipelines.importer import import_source

    store = Store(ws)
    t0 = time.perf_counter()
    manifest = import_source(store, path, DATASET, show_progress=False)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "records": manifest.records, "version": manifest.id,
            "peak_rss_mb": _rss_mb()}


def child_hf_load(path: str, cache_dir: str) -> dict:
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # a local file: never wait on the network
    import datasets

    datasets.disable_progress_bars()
    t0 = time.perf_counter()
    ds = datasets.load_dataset("json", data_files=path, split="train", cache_dir=cache_dir)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "records": ds.num_rows, "peak_rss_mb": _rss_mb()}


def child_hf_same_job(path: str, cache_dir: str, out: str) -> dict:
    """What it takes to get an import's result with `datasets`: load the file, add each record's
    content id (the same hash, `records.record_id`, per row in a batched map on every core), and
    write Parquet (`Dataset.to_parquet`, whose own settings are snappy, dictionaries and content-defined
    chunking; Assay writes zstd). No peer does this job as one call, so this is its nearest equal."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    import datasets

    from assay.core.records import record_id

    def ids(batch: dict) -> dict:
        return {"id": [record_id(i, x, o, None) for i, x, o in zip(batch["instruction"], batch["input"],
                                                                    batch["output"])]}

    datasets.disable_progress_bars()
    t0 = time.perf_counter()
    ds = datasets.load_dataset("json", data_files=path, split="train", cache_dir=cache_dir)
    ds = ds.map(ids, batched=True, batch_size=10_000, num_proc=os.cpu_count())
    ds.to_parquet(out)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "records": ds.num_rows, "peak_rss_mb": _rss_mb()}


def child_filter(ws: str, version: str, where: str) -> dict:
    from assay.core.store import Store

    store = Store(ws)
    t0 = time.perf_counter()
    manifest = store.filter(version, where, DATASET)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "records": manifest.records, "version": manifest.id,
            "peak_rss_mb": _rss_mb()}


def child_page(ws: str, version: str, page: int, size: int) -> dict:
    t0 = time.perf_counter()
    from assay.core.store import Store  # polars, pyarrow, pydantic...: paid once per process
    import_seconds = time.perf_counter() - t0

    rss_before = _rss_mb()  # what the imports alone cost, to tell the page's own share
    read_before = _bytes_read()
    t0 = time.perf_counter()
    store = Store(ws)
    t1 = time.perf_counter()
    frame = store.page(version, page, size)  # resolves the id too: the manifest is read here
    t2 = time.perf_counter()
    read_first = _bytes_read() - read_before
    # The same call again in the same process: without the one-time costs of a fresh process
    # (lazy imports inside pyarrow), this is what a long-lived process (the UI) pays per page.
    frame_again = store.page(version, page, size)
    t3 = time.perf_counter()
    assert frame_again.equals(frame)
    return {"seconds": t2 - t0, "open_seconds": t1 - t0, "page_seconds": t2 - t1, "rows": frame.height,
            "bytes_read": read_first, "repeat_seconds": t3 - t2,
            "repeat_bytes_read": _bytes_read() - read_before - read_first,
            "import_seconds": import_seconds, "rss_after_imports_mb": rss_before, "peak_rss_mb": _rss_mb()}


CHILD_TASKS = {"import": child_import, "hf_load": child_hf_load, "hf_same_job": child_hf_same_job,
               "filter": child_filter, "page": child_page}


def run_child(task: str, **kwargs) -> dict:
    """Run one timed step in a fresh interpreter; its last stdout line is its JSON result."""
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps({"task": task, **kwargs})],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"step {task} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---- helpers for the parent process -----------------------------------------------------------

def files_under(root: Path, subdirs: tuple[str, ...]) -> dict[str, int]:
    """Relative path -> size of every file under root/<subdir>."""
    out = {}
    for sub in subdirs:
        for p in (root / sub).rglob("*"):
            if p.is_file():
                out[str(p.relative_to(root))] = p.stat().st_size
    return out


def evict_from_page_cache(root: Path) -> None:
    """Ask the kernel to forget the cached pages of every file under root, so that the next read
    comes from disk. Best effort: it drops clean pages only, which is all a finished write leaves
    once flushed (the store fsyncs its objects)."""
    for p in root.rglob("*"):
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def machine_info() -> dict:
    import datasets
    import polars
    import pyarrow

    mem_kb = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal"))
    try:
        from assay.core.manifest import code_version
        assay_version = code_version()
    except Exception:  # noqa: BLE001 - informational only
        assay_version = "?"
    return {"cpus": os.cpu_count(), "memory_gib": round(mem_kb / 2**20, 1), "platform": platform.platform(),
            "python": platform.python_version(), "polars": polars.__version__, "pyarrow": pyarrow.__version__,
            "datasets": datasets.__version__, "numpy": np.__version__, "assay": assay_version}


def mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


# ---- the benchmark ----------------------------------------------------------------------------

def main(args: argparse.Namespace) -> dict:
    n = args.records
    base = Path(tempfile.mkdtemp(prefix="assay-bench-", dir=args.workdir))
    # the load average tells a reader afterwards whether other work shared the CPUs during the run
    results: dict = {"records": n, "page_size": PAGE_SIZE, "machine": machine_info(),
                     "load_average_start": os.getloadavg()}
    print(f"workdir {base}")
    try:
        jsonl, ws = base / "records.jsonl", base / "workspace"

        # 1. synthesis (not a measurement of Assay; timed only so the reader knows the cost)
        t0 = time.perf_counter()
        synth = synthesize(jsonl, n)
        results["synthesis"] = {**synth, "seconds": time.perf_counter() - t0}
        print(f"\n[1] synthesised {n:,} records: {mb(synth['bytes'])} of JSONL "
              f"in {results['synthesis']['seconds']:.1f} s")

        # 2. import: Assay, then Hugging Face datasets on the same file, --import-runs times each,
        # interleaved so that a burst of other work on the machine hits both alike; the figure is the
        # median run. Both read the JSONL from the page cache (it was just written), so neither pays
        # for the disk more than the other. Each run starts from an empty workspace and an empty
        # cache: segments are content-addressed, so a second import into the same workspace would
        # find its segments already written and skip the writes.
        imports, loads, same_jobs = [], [], []
        for _ in range(args.import_runs):
            shutil.rmtree(ws, ignore_errors=True)
            imports.append(run_child("import", ws=str(ws), path=str(jsonl)))
            loads.append(run_child("hf_load", path=str(jsonl), cache_dir=str(base / "hf-cache")))
            shutil.rmtree(base / "hf-cache", ignore_errors=True)
            same_jobs.append(run_child("hf_same_job", path=str(jsonl), cache_dir=str(base / "hf-cache"),
                                       out=str(base / "hf.parquet")))
            shutil.rmtree(base / "hf-cache", ignore_errors=True)
        assert all(r["records"] == n for r in imports + loads + same_jobs), (imports, loads, same_jobs)

        def summary(rs: list[dict]) -> dict:
            seconds = float(np.median([r["seconds"] for r in rs]))
            return {"seconds": seconds, "records_per_s": n / seconds, "peak_rss_mb": max(r["peak_rss_mb"] for r in rs),
                    "runs_seconds": [r["seconds"] for r in rs]}

        imp, hf, same = summary(imports), summary(loads), summary(same_jobs)
        imp["version"] = imports[-1]["version"]
        ratio = imp["records_per_s"] / hf["records_per_s"]
        ratio_same = imp["records_per_s"] / same["records_per_s"]
        results["import"] = {"assay": imp, "hf_datasets": hf, "assay_over_hf": ratio,
                             "hf_datasets_same_job": same, "assay_over_hf_same_job": ratio_same}

        def runs(r: dict) -> str:
            return ", ".join(f"{x:.1f}" for x in r["runs_seconds"])

        print(f"\n[2] import  assay: {imp['seconds']:.1f} s (runs: {runs(imp)}), "
              f"{imp['records_per_s']:,.0f} records/s, "
              f"peak RSS {imp['peak_rss_mb']:,.0f} MB")
        print(f"            datasets.load_dataset: {hf['seconds']:.1f} s (runs: {runs(hf)}), "
              f"{hf['records_per_s']:,.0f} records/s, peak RSS {hf['peak_rss_mb']:,.0f} MB")
        print(f"            datasets, the same job (load, content ids, Parquet): {same['seconds']:.1f} s "
              f"(runs: {runs(same)}), {same['records_per_s']:,.0f} records/s, peak RSS {same['peak_rss_mb']:,.0f} MB")
        print(f"            assay / datasets throughput: {ratio:.2f}x the bare load, {ratio_same:.2f}x the same job")

        # 3. filter: what the child version adds to the workspace, against the parent's segments.
        # The catalog row (SQLite) is left out: it is a few hundred bytes in a shared file.
        from assay.core.store import Store
        store = Store(str(ws))
        parent = store.load_manifest(imp["version"])
        parent_bytes = sum(os.path.getsize(store.segment_path(s)) for s in {p.segment for p in parent.parts})
        where = f"length(output) >= {synth['output_len_threshold']}"
        before = files_under(ws, ("objects", "manifests"))
        flt = run_child("filter", ws=str(ws), version=parent.id, where=where)
        after = files_under(ws, ("objects", "manifests"))
        new_files = {p: size for p, size in after.items() if p not in before}
        written = sum(new_files.values())
        assert flt["records"] == synth["expected_kept"], (flt, synth)
        results["filter"] = {**flt, "where": where, "kept_fraction": flt["records"] / n,
                             "parent_segment_bytes": parent_bytes, "parent_segments": len(parent.parts),
                             "child_bytes_written": written, "child_files_written": len(new_files),
                             "bytes_ratio": written / parent_bytes}
        print(f"\n[3] filter  where {where!r}: kept {flt['records']:,} of {n:,} "
              f"({flt['records'] / n:.1%}) in {flt['seconds']:.1f} s, peak RSS {flt['peak_rss_mb']:,.0f} MB")
        print(f"            child wrote {written:,} bytes in {len(new_files)} files; parent segments "
              f"{mb(parent_bytes)} ({len(parent.parts)} files): ratio {written / parent_bytes:.4%} (goal <= 1%)")

        # 4. paging: first, middle and last page of each version, cold then warm
        # A fresh process's first page is noisy (it is mostly imports), so each cell runs
        # --page-runs times and reports the median, with the slowest run beside it.
        pages = []
        for label, version, records in (("parent", parent.id, n), ("child", flt["version"], flt["records"])):
            last = (records - 1) // PAGE_SIZE
            for where_in, k in (("first", 0), ("middle", last // 2), ("last", last)):
                runs: dict[str, list[dict]] = {"cold": [], "warm": []}
                for _ in range(args.page_runs):
                    for cache in ("cold", "warm"):
                        if cache == "cold":
                            evict_from_page_cache(ws)
                        r = run_child("page", ws=str(ws), version=version, page=k, size=PAGE_SIZE)
                        assert r["rows"] == min(PAGE_SIZE, records - k * PAGE_SIZE), (label, k, r)
                        runs[cache].append(r)
                for cache, rs in runs.items():
                    med = {key: float(np.median([r[key] for r in rs])) for key in rs[0]}
                    pages.append({"version": label, "records": records, "position": where_in, "page": k,
                                  "cache": cache, **med, "max_seconds": max(r["seconds"] for r in rs),
                                  "peak_rss_mb": max(r["peak_rss_mb"] for r in rs), "runs": rs})
        results["paging"] = pages
        print(f"\n[4] paging  store.page(version, k, {PAGE_SIZE}), each run in a fresh process; medians of "
              f"{args.page_runs} runs.\n"
              "    first call: opening the store, reading the manifest, the page (what a new process pays);\n"
              "    again: the same call repeated in that process; import: `import assay.core.store` before both")
        print(f"    {'version':<8}{'page':>7} {'position':<9}{'cache':<6}{'first call':>11}{'slowest':>9}{'read':>10}"
              f"{'again':>9}{'read':>10}{'import':>8}{'RSS after imports':>19}{'peak RSS':>10}")
        for p in pages:
            print(f"    {p['version']:<8}{p['page']:>7} {p['position']:<9}{p['cache']:<6}{p['seconds']:>9.3f} s"
                  f"{p['max_seconds']:>7.3f} s{mb(p['bytes_read']):>10}{p['repeat_seconds']:>7.3f} s"
                  f"{mb(p['repeat_bytes_read']):>10}{p['import_seconds']:>6.2f} s"
                  f"{p['rss_after_imports_mb']:>16,.0f} MB{p['peak_rss_mb']:>7,.0f} MB")
        worst = max(pages, key=lambda p: p["seconds"])  # the worst median
        results["load_average_end"] = os.getloadavg()

        # 5. summary against the goals
        results["goals"] = {"filter_bytes_ratio_le_1pct": results["filter"]["bytes_ratio"] <= 0.01,
                            "page_lt_1s": worst["seconds"] < 1.0}
        m = results["machine"]
        print("\n" + "=" * 78)
        print(f"SUMMARY  {n:,} records; {m['cpus']} CPUs, {m['memory_gib']} GiB; Python {m['python']}, "
              f"polars {m['polars']}, pyarrow {m['pyarrow']}, datasets {m['datasets']}")
        print(f"  import   assay {imp['records_per_s']:,.0f} rec/s   datasets {hf['records_per_s']:,.0f} rec/s   "
              f"ratio {ratio:.2f}x;  datasets doing the same job {same['records_per_s']:,.0f} rec/s   "
              f"ratio {ratio_same:.2f}x")
        print(f"  filter   child wrote {results['filter']['bytes_ratio']:.4%} of the parent's bytes "
              f"({written:,} of {parent_bytes:,})   goal <= 1%: "
              f"{'met' if results['goals']['filter_bytes_ratio_le_1pct'] else 'MISSED'}")
        print(f"  paging   worst first call {worst['seconds']:.3f} s median, "
              f"{max(p['max_seconds'] for p in pages):.3f} s "
              f"slowest run ({worst['version']} {worst['position']} page, {worst['cache']}),\n"
              f"           worst repeated call {max(p['repeat_seconds'] for p in pages):.3f} s, "
              f"max peak RSS {max(p['peak_rss_mb'] for p in pages):,.0f} MB   goal < 1 s: "
              f"{'met' if results['goals']['page_lt_1s'] else 'MISSED'}")
        print(f"  load average (1, 5, 15 min) at start {results['load_average_start']}, "
              f"at end {results['load_average_end']}")
        print("=" * 78)
        write_json(args.json_out, results)
        return results
    finally:
        if args.keep:
            print(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000, help="records to synthesise (default 1,000,000)")
    parser.add_argument("--workdir", default=None, help="folder for the temporary data (default: the system temp dir)")
    parser.add_argument("--json-out", default=None, help="also write the figures as JSON to this path")
    parser.add_argument("--import-runs", type=int, default=3, help="runs of each import, median reported (default 3)")
    parser.add_argument("--page-runs", type=int, default=3, help="fresh processes per paging figure (default 3)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data (default: delete it)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)  # internal: one timed step
    args = parser.parse_args()
    if args.child:
        spec = json.loads(args.child)
        print(json.dumps(CHILD_TASKS[spec.pop("task")](**spec)))
    else:
        main(args)
