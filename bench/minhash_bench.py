#!/usr/bin/env python
"""Benchmark of near-duplicate detection: raw text to clusters, Assay's MinHash auditor against the
same pipeline written with datasketch.

Run by hand (it is not a test):

    python bench/minhash_bench.py                  # 100,000 documents
    python bench/minhash_bench.py --docs 20000 --json-out bench/out/minhash.json

Data: N synthetic documents of ~100 words (uniform 80-120) drawn from a fixed vocabulary of 30,000
made-up words with a Zipf-like frequency (p ~ 1/(rank+10)), fixed seed. The last 5% are planted
copies of distinct earlier documents with a few words edited (each edit substitutes, inserts or
deletes one word; 1 edit for 40% of the copies, 2 for 20%, 3 for 20%, 6 for 20%), so their exact
Jaccard spans ~0.5 to ~0.95 around the 0.8 threshold. Truth for a planted pair: its exact Jaccard
of word 5-gram sets >= threshold.

Timed, same process, one after the other:
1. Assay: `MinHashDuplicates().run(frame, ctx)` on a frame of the texts (ids precomputed, as in a
   stored version) with a fresh workspace, so the record cache is cold (the signatures are computed
   and written to it). Then once more with the warm cache (figure shown, not the headline).
2. Reference (datasketch): words by a Python regex (the same rule as Assay's), 5-gram shingles,
   `MinHash.bulk`, `MinHashLSH(threshold, num_perm, params=(bands, rows))` with Assay's bands/rows,
   insert all, query each, keep candidates with `MinHash.jaccard >= threshold`, union-find with the
   smallest position as root.
3. Signature back-ends on the same shingle hashes: Assay's numpy kernel and rensa's
   `digest_matrix_from_flat_token_hashes` (+ export to numpy), if rensa is installed.

Printed: wall and CPU seconds of each, the speed ratio, precision/recall of both on the planted
pairs (all of them, and the clear-cut ones whose exact Jaccard is not within 0.05 of the threshold),
records flagged that are not planted copies, and the duplicate-flag agreement of the two.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
from common import write_json
from minhash_reference import datasketch_labels, ref_shingles

from assay.auditors.base import AuditContext
from assay.auditors.minhash import MinHashConfig, MinHashDuplicates, shingle_hashes, signatures
from assay.core.store import Store

SEED = 20240607
VOCAB = 30_000
WORDS = (80, 120)
PLANTED = 0.05
EDITS = [(1, 0.4), (2, 0.2), (3, 0.2), (6, 0.2)]  # (edits, share of planted copies)


# ---- data -------------------------------------------------------------------------------------------

def vocabulary(rng: np.random.Generator) -> np.ndarray:
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    lengths = rng.integers(2, 10, VOCAB)
    words = {"".join(rng.choice(letters, n)) for n in lengths}
    while len(words) < VOCAB:
        words.add("".join(rng.choice(letters, 8)))
    return np.array(sorted(words)[:VOCAB])


def synthesise(n_docs: int, seed: int) -> tuple[list[str], list[tuple[int, int, int]]]:
    """Documents, and the planted pairs as (original position, copy position, edits)."""
    rng = np.random.default_rng(seed)
    vocab = vocabulary(rng)
    p = 1.0 / (np.arange(VOCAB) + 10.0)
    p /= p.sum()
    n_planted = int(round(n_docs * PLANTED))
    n_base = n_docs - n_planted
    lengths = rng.integers(WORDS[0], WORDS[1] + 1, n_base)
    flat = rng.choice(VOCAB, size=int(lengths.sum()), p=p)
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    docs_words = [flat[bounds[i]:bounds[i + 1]] for i in range(n_base)]
    originals = rng.choice(n_base, n_planted, replace=False)
    edit_counts = rng.choice([e for e, _ in EDITS], size=n_planted, p=[s for _, s in EDITS])
    planted = []
    for k, (orig, edits) in enumerate(zip(originals, edit_counts)):
        words = list(docs_words[orig])
        for _ in range(int(edits)):
            op = rng.integers(3)
            at = int(rng.integers(len(words)))
            new = int(rng.choice(VOCAB, p=p))
            if op == 0:
                words[at] = new
            elif op == 1:
                words.insert(at, new)
            else:
                del words[at]
        docs_words.append(np.array(words))
        planted.append((int(orig), n_base + k, int(edits)))
    # sentence case and a little punctuation, so the word rule has something to do
    docs = []
    for words in docs_words:
        text = " ".join(vocab[words])
        docs.append(text[:1].upper() + text[1:] + ".")
    return docs, planted


# ---- the two pipelines --------------------------------------------------------------------------------

def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def run_assay(frame: pl.DataFrame, config: MinHashConfig, workspace: Path):
    store = Store(workspace)
    auditor = MinHashDuplicates(config)
    result, wall, cpu = timed(lambda: auditor.run(frame, AuditContext(store, "bench")))
    warm, wall_warm, cpu_warm = timed(lambda: auditor.run(frame, AuditContext(store, "bench")))
    assert warm.summary["signatures_computed"] == 0
    return result, (wall, cpu), (wall_warm, cpu_warm)


def run_datasketch(texts: list[str], threshold: float, num_perm: int, params: tuple[int, int]):
    import datasketch  # noqa: F401  imported before the clock starts, like Assay's modules

    return timed(lambda: datasketch_labels(texts, threshold, num_perm, params))


def backends(frame: pl.DataFrame, config: MinHashConfig) -> dict:
    hashes, offsets = shingle_hashes(frame["text"], config)
    out = {"shingles": int(hashes.size)}
    _, wall, cpu = timed(lambda: signatures(hashes, offsets, config.num_perm, config.seed))
    out["numpy"] = {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3)}
    try:
        import rensa
    except ImportError:
        out["rensa"] = "not installed"
        return out
    flat = (hashes >> np.uint64(32)).astype(np.uint64)
    offs = offsets.astype(np.uint64)
    matrix, wall, cpu = timed(lambda: rensa.RMinHash.digest_matrix_from_flat_token_hashes(flat, offs, config.num_perm,
                                                                                          config.seed))
    _, wall2, cpu2 = timed(lambda: np.array(matrix.to_rows(), dtype=np.uint32))
    out["rensa"] = {"compute_wall_s": round(wall, 3), "compute_cpu_s": round(cpu, 3),
                    "export_to_numpy_wall_s": round(wall2, 3), "export_to_numpy_cpu_s": round(cpu2, 3),
                    "wall_s": round(wall + wall2, 3), "cpu_s": round(cpu + cpu2, 3)}
    return out


# ---- scoring ---------------------------------------------------------------------------------------------

def score(labels: np.ndarray, planted: list[tuple[int, int, int]], truth_j: np.ndarray, threshold: float,
          margin: float = 0.05) -> dict:
    found = np.array([labels[a] == labels[b] for a, b, _ in planted])
    truth = truth_j >= threshold

    def pr(mask: np.ndarray) -> dict:
        tp = int((found & truth & mask).sum())
        fp = int((found & ~truth & mask).sum())
        fn = int((~found & truth & mask).sum())
        return {"pairs": int(mask.sum()), "true_pos": tp, "false_pos": fp, "false_neg": fn,
                "precision": round(tp / (tp + fp), 4) if tp + fp else None,
                "recall": round(tp / (tp + fn), 4) if tp + fn else None}

    clear = np.abs(truth_j - threshold) > margin
    copies = {b for _, b, _ in planted}
    duplicate = labels != np.arange(labels.size)
    spurious = int(sum(1 for i in np.flatnonzero(duplicate) if int(i) not in copies))
    bands = {}
    for lo, hi in [(0.0, 0.7), (0.7, 0.8), (0.8, 0.9), (0.9, 1.01)]:
        m = (truth_j >= lo) & (truth_j < hi)
        bands[f"J in [{lo:.1f},{min(hi, 1.0):.1f})"] = {"pairs": int(m.sum()), "found": int((found & m).sum())}
    return {"all_planted": pr(np.ones(len(planted), bool)), "clear_cut": pr(clear),
            "by_true_jaccard": bands, "flagged_not_planted": spurious}


def machine() -> dict:
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 2**20:.1f} GiB"
    except OSError:
        pass
    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    import datasketch

    return {"nproc": os.cpu_count(), "memory": mem, "cpu": cpu, "load_average_at_start": os.getloadavg(),
            "python": platform.python_version(), "numpy": np.__version__, "polars": pl.__version__,
            "datasketch": datasketch.__version__}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, default=100_000, help="documents, planted copies included")
    ap.add_argument("--threshold", type=float, default=0.8)
    ap.add_argument("--num-perm", type=int, default=128)
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--json-out", help="also write the figures here")
    args = ap.parse_args()

    info = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "machine": machine()}
    print(f"machine: {json.dumps(info['machine'])}")
    docs, planted = synthesise(args.docs, args.seed)
    truth_j = np.array([len(ref_shingles(docs[a]) & ref_shingles(docs[b]))
                        / len(ref_shingles(docs[a]) | ref_shingles(docs[b]))
                        for a, b, _ in planted])
    print(f"data: {len(docs)} documents, {len(planted)} planted copies; exact Jaccard of planted pairs: "
          f"min {truth_j.min():.3f} median {np.median(truth_j):.3f} max {truth_j.max():.3f}, "
          f"{int((truth_j >= args.threshold).sum())} at or above {args.threshold}")
    frame = pl.DataFrame({"id": [hashlib.blake2b(t.encode(), digest_size=16).hexdigest() for t in docs],
                          "text": docs, "prompt": docs, "response": [""] * len(docs)})
    config = MinHashConfig(threshold=args.threshold, num_perm=args.num_perm)
    bands, rows = MinHashDuplicates(config).effective_bands_rows()

    import pyarrow.compute  # noqa: F401  imported once per process (by Polars' Arrow import); not timed, like datasketch's imports
    workspace = Path(tempfile.mkdtemp(prefix="minhash-bench-"))
    try:
        result, (a_wall, a_cpu), (w_wall, w_cpu) = run_assay(frame, config, workspace)
    finally:
        shutil.rmtree(workspace, ignore_errors=True)
    assay_labels = result.columns["minhash_cluster"].to_numpy()
    print(f"assay: {a_wall:.2f} s wall, {a_cpu:.2f} s CPU (cold cache); warm cache {w_wall:.2f} s wall; "
          f"bands x rows {bands} x {rows}; {result.summary['duplicate_records']} duplicates")

    ref_labels, r_wall, r_cpu = run_datasketch(docs, args.threshold, args.num_perm, (bands, rows))
    print(f"datasketch: {r_wall:.2f} s wall, {r_cpu:.2f} s CPU; "
          f"{int((ref_labels != np.arange(len(docs))).sum())} duplicates")

    speed = {"wall": round(r_wall / a_wall, 1), "cpu": round(r_cpu / a_cpu, 1)}
    print(f"speed ratio (datasketch / assay): {speed['wall']}x wall, {speed['cpu']}x CPU (goal >= 20x)")
    quality = {"assay": score(assay_labels, planted, truth_j, args.threshold),
               "datasketch": score(ref_labels, planted, truth_j, args.threshold)}
    for name, q in quality.items():
        print(f"{name:>10}: all planted P={q['all_planted']['precision']} R={q['all_planted']['recall']}  "
              f"clear-cut (|J-t|>0.05) P={q['clear_cut']['precision']} R={q['clear_cut']['recall']}  "
              f"flagged but not planted: {q['flagged_not_planted']}  by J: {q['by_true_jaccard']}")
    dup_a = assay_labels != np.arange(len(docs))
    dup_r = ref_labels != np.arange(len(docs))
    agreement = float((dup_a == dup_r).mean())
    print(f"duplicate-flag agreement: {agreement:.5f} ({int((dup_a != dup_r).sum())} records differ)")
    kernels = backends(frame, config)
    print(f"signature kernels on the same {kernels['shingles']} shingle hashes: numpy {kernels['numpy']}, "
          f"rensa {kernels['rensa']}")

    out = {**info, "docs": len(docs), "planted": len(planted), "threshold": args.threshold,
           "num_perm": args.num_perm, "bands": bands, "rows": rows,
           "assay": {"wall_s": round(a_wall, 3), "cpu_s": round(a_cpu, 3), "warm_wall_s": round(w_wall, 3),
                     "warm_cpu_s": round(w_cpu, 3)},
           "datasketch": {"wall_s": round(r_wall, 3), "cpu_s": round(r_cpu, 3)},
           "speed_ratio": speed, "quality": quality, "agreement": agreement, "signature_kernels": kernels}
    write_json(args.json_out, out)


if __name__ == "__main__":
    main()
