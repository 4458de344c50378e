#!/usr/bin/env python
"""Assay's MinHash auditor against its peers on the same planted near-duplicates (issue 13,
"Peers, side by side"). Called by `bench/scale_bench.py --peers`; also runs alone:

    bash bench/peers_env.sh                               # once: bench/.venv-peers
    PYTHONPATH=... python bench/scale_peers.py --records 20000 [--tools datatrove,text-dedup,datasketch]

The records are bench/minhash_bench.py's `synthesise` (planted edited copies, fixed seed), written
once to a temporary folder as JSONL shards and Parquet. Each tool then runs in a fresh process
(bench/peers_driver.py; the peers with bench/.venv-peers/bin/python, Assay with this Python), one
after the other, with Assay's MinHashConfig defaults mapped onto its own settings:

- shingles, 5 words (Assay's word rule): datasketch, the same regex and 5-grams (minhash_reference.py);
  text-dedup, its own split on `\\W` with `--ngram 5` (`--min_length 0`: keep short records);
  datatrove, Assay's regex as its word tokenizer (see peers_driver.py) with `n_grams=5`.
- num_perm 128: datasketch 128; text-dedup `--num_perm 128`; datatrove computes only
  bands x rows values (`num_buckets` x `hashes_per_bucket`).
- bands x rows (Assay's, chosen for its candidate threshold): datasketch `params=(bands, rows)`;
  text-dedup `--b`, `--r`; datatrove `num_buckets`, `hashes_per_bucket`.
- `TOOL@t` (datatrove@t, text-dedup@t): the same tool with bands x rows tuned for the threshold
  itself (weights 0.5/0.5: what text-dedup and datasketch choose for `--threshold 0.8` alone), since
  Assay's banding, tuned below the threshold because Assay verifies its candidates, costs the tools
  that verify none their precision.
- threshold 0.8 with candidates verified (Assay: exact Jaccard near the threshold): datasketch keeps
  a candidate whose estimated Jaccard is >= 0.8; text-dedup and datatrove verify nothing (every
  record sharing a band with another is its duplicate), so the threshold reaches them only through
  the banding, and they cannot match this setting.
- seed 1: datatrove `seed=1`; text-dedup 0.4 takes `--seed` but draws its permutations from a
  module-level seed 42; datasketch uses its own fixed seed.
- text-dedup hashes shingles with xxh3 (`--hash_func xxh3`, its faster choice); datatrove with xxhash
  (its default); workers: 2 for text-dedup (`--num_proc`) and datatrove (local executor), as many as
  Assay's signature kernel uses here.

Measured per tool: `wall s`, the tool's own work (reading its input included; the interpreter's
start, imports and reading back the clusters not); `process s`, the whole child process; peak RSS,
the largest resident set of the child or of a worker it reaped (wait4), and tree RSS, the largest
sum over the child and all its descendants (sampled from /proc every 0.2 s; shared pages count once
per process, so forked workers are overcounted); precision/recall on the planted pairs by
minhash_bench.py's `score`.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import polars as pl
from minhash_bench import score, synthesise
from minhash_reference import WORD_RE, ref_shingles

from assay.auditors.minhash import MinHashConfig, MinHashDuplicates
from assay.auditors.minhash_lsh import optimal_bands_rows

HERE = Path(__file__).resolve().parent
PEERS_PYTHON = HERE / ".venv-peers" / "bin" / "python"
PAGE = os.sysconf("SC_PAGE_SIZE")
# "@t": the same tool with its banding tuned for the threshold itself (datasketch's and text-dedup's own
# choice for --threshold 0.8, weights 0.5/0.5): fairer to the tools that verify no candidate
PEERS = ("datatrove", "text-dedup", "datasketch", "datatrove@t", "text-dedup@t")


def settings(config: MinHashConfig, workers: int) -> dict:
    """What each driver reads: Assay's own config, and the same settings as the peers take them."""
    bands, rows = MinHashDuplicates(config).effective_bands_rows()
    t_bands, t_rows = optimal_bands_rows(config.threshold, config.num_perm, 0.5, 0.5)
    return {"assay_config": asdict(config), "threshold": config.threshold, "num_perm": config.num_perm,
            "ngram": config.ngram, "bands": bands, "rows": rows, "threshold_bands": t_bands,
            "threshold_rows": t_rows, "seed": config.seed,
            "word_regex": WORD_RE.pattern, "workers": workers}


def write_inputs(docs: list[str], folder: Path, shards: int) -> None:
    frame = pl.DataFrame({"id": np.arange(len(docs)), "text": docs})
    frame.write_parquet(folder / "records.parquet")
    (folder / "shards").mkdir()
    bounds = np.linspace(0, len(docs), shards + 1).astype(int)
    for k in range(shards):
        frame.slice(bounds[k], bounds[k + 1] - bounds[k]).write_ndjson(folder / "shards" / f"{k:05d}.jsonl")
    (folder / "shards.json").write_text(json.dumps(np.diff(bounds).tolist()))


class TreeRss(threading.Thread):
    """Largest sum of the resident sets of a process and all its descendants, sampled from /proc every
    `every` seconds. wait4's ru_maxrss misses workers that the child does not reap itself (datatrove's
    forkserver pool: its workers are the forkserver's children) and never adds workers running together."""

    def __init__(self, pid: int, every: float = 0.2):
        super().__init__(daemon=True)
        self.pid, self.every, self.peak, self.stop = pid, every, 0, threading.Event()

    def tree_bytes(self) -> int:
        children: dict[int, list[int]] = {}
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                try:
                    stat = Path(entry.path, "stat").read_text()
                except OSError:
                    continue
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
        total, todo = 0, [self.pid]
        while todo:
            pid = todo.pop()
            todo.extend(children.get(pid, ()))
            try:
                total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
            except OSError:
                pass
        return total

    def run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, self.tree_bytes())
            self.stop.wait(self.every)


def run_one(tool: str, folder: Path, settings_path: Path, peers_python: Path = PEERS_PYTHON,
            timeout_s: int | None = None) -> dict:
    """One tool in a fresh process: its figures and labels, or the error it stopped with."""
    python = sys.executable if tool == "assay" else str(peers_python)
    # coreutils' timeout reaps the tool, so wait4 on it still reports the tool's peak RSS
    limit = ["timeout", str(timeout_s)] if timeout_s else []
    out = folder / f"{tool}.json"
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with open(folder / f"{tool}.stderr", "w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen([*limit, python, str(HERE / "peers_driver.py"), tool, str(folder), str(out),
                                 str(settings_path)], env=env, stdout=subprocess.DEVNULL, stderr=err)
        sampler = TreeRss(proc.pid)
        sampler.start()
        # wait4's rusage is this child's alone (its own and its reaped workers' largest RSS), unlike
        # RUSAGE_CHILDREN, a running maximum over every child this process has reaped so far
        _, status, usage = os.wait4(proc.pid, 0)
        process_s = time.perf_counter() - start
        sampler.stop.set()
        sampler.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        tail = err.read()[-3000:]
    if proc.returncode != 0:
        last = tail.strip().splitlines()[-1] if tail.strip() else f"exit {proc.returncode}"
        if timeout_s and proc.returncode == 124:
            last = f"stopped after the {timeout_s} s limit"
        return {"tool": tool, "error": last, "stderr_tail": tail}
    got = json.loads(out.read_text())
    return {"tool": tool, "wall_s": got["seconds"], "process_s": process_s,
            "peak_rss_mb": usage.ru_maxrss / 1024, "peak_tree_rss_mb": sampler.peak / 2**20,
            "labels": np.array(got["labels"])}


def compare(n: int, tools: tuple[str, ...] = PEERS, seed: int = 0, workers: int = 2,
            peers_python: Path = PEERS_PYTHON, timeout_s: int | None = None) -> dict:
    """Every tool on the same n synthesised records; figures per tool and Assay's speed ratio.
    `peers_python`: the interpreter the peers run with (the suite's test runs datasketch, a test
    dependency, with its own)."""
    docs, planted = synthesise(n, seed)
    config = MinHashConfig()
    truth_j = np.array([len(ref_shingles(docs[a]) & ref_shingles(docs[b]))
                        / len(ref_shingles(docs[a]) | ref_shingles(docs[b])) for a, b, _ in planted])
    peers = [t for t in tools if t != "assay"]
    if peers and not Path(peers_python).exists():
        raise SystemExit(f"{peers_python} not found: run bash bench/peers_env.sh first")
    rows = []
    with tempfile.TemporaryDirectory(prefix="scale-peers-") as tmp:
        folder = Path(tmp)
        write_inputs(docs, folder, shards=workers)
        settings_path = folder / "settings.json"
        s = settings(config, workers)
        settings_path.write_text(json.dumps(s))
        for tool in ("assay", *peers):
            res = run_one(tool, folder, settings_path, peers_python, timeout_s)
            if "labels" in res:
                labels = res.pop("labels")
                res["score"] = score(labels, planted, truth_j, config.threshold)
                res["duplicates"] = int((labels != np.arange(n)).sum())
            rows.append(res)
            print(f"  {tool}: {_line(res)}", flush=True)
    ok = [r for r in rows if r["tool"] != "assay" and "wall_s" in r]
    assay = rows[0]
    ratio = None
    if ok and "wall_s" in assay:
        fastest = min(ok, key=lambda r: r["wall_s"])
        ratio = {"fastest_peer": fastest["tool"], "wall": round(fastest["wall_s"] / assay["wall_s"], 1)}
    return {"records": n, "planted_pairs": len(planted),
            "planted_at_or_above_threshold": int((truth_j >= config.threshold).sum()),
            "settings": {k: v for k, v in s.items() if k != "assay_config"}, "tools": rows,
            "assay_speed_over_fastest_peer": ratio}


def _line(r: dict) -> str:
    if "error" in r:
        return f"FAILED: {r['error']}"
    p = r["score"]["all_planted"]
    return (f"{r['wall_s']:.2f} s (process {r['process_s']:.2f} s), peak RSS {r['peak_rss_mb']:.0f} MB "
            f"(process tree {r['peak_tree_rss_mb']:.0f} MB), "
            f"P={p['precision']} R={p['recall']}, {r['duplicates']} flagged, "
            f"{r['score']['flagged_not_planted']} not planted")


def table(figures: dict) -> str:
    lines = [f"{figures['records']:,} records, {figures['planted_pairs']:,} planted pairs "
             f"({figures['planted_at_or_above_threshold']:,} with true Jaccard >= threshold); settings "
             f"{figures['settings']}",
             "| tool | wall s | process s | peak RSS MB | tree RSS MB | precision | recall | flagged not planted |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in figures["tools"]:
        if "error" in r:
            lines.append(f"| {r['tool']} | failed: {r['error']} | | | | | | |")
            continue
        p = r["score"]["all_planted"]
        lines.append(f"| {r['tool']} | {r['wall_s']:.2f} | {r['process_s']:.2f} | {r['peak_rss_mb']:.0f} | "
                     f"{r['peak_tree_rss_mb']:.0f} | "
                     f"{p['precision']} | {p['recall']} | {r['score']['flagged_not_planted']} |")
    ratio = figures["assay_speed_over_fastest_peer"]
    if ratio:
        lines.append(f"Assay: {ratio['wall']}x the fastest peer ({ratio['fastest_peer']}) in wall time (goal >= 5x)")
    return "\n".join(lines)


def main() -> None:
    from common import write_json

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=20_000)
    ap.add_argument("--tools", default=",".join(PEERS), help="peers to run, comma-separated (Assay always runs)")
    ap.add_argument("--workers", type=int, default=2, help="worker processes for datatrove and text-dedup")
    ap.add_argument("--tool-timeout", type=int, default=None, help="stop a tool after this many seconds")
    ap.add_argument("--json-out", default=None)
    args = ap.parse_args()
    figures = compare(args.records, tuple(t for t in args.tools.split(",") if t), workers=args.workers,
                      timeout_s=args.tool_timeout)
    print(table(figures))
    write_json(args.json_out, figures)


if __name__ == "__main__":
    main()
