#!/usr/bin/env python
"""Scale bench (issue 13, "Peers, side by side") -- UNFINISHED first cut: Assay's MinHash step only.

Run by hand:  PYTHONPATH=... python bench/scale_bench.py --records 20000

Reuses bench/minhash_bench.py's synthesis (planted edited copies, fixed seed; truth = exact Jaccard of
word 5-gram sets >= threshold) and scoring. Still to do: import -> audit -> filter -> report in fresh
subprocesses. `--peers`: the datatrove / text-dedup / datasketch peers on the same records
(bench/scale_peers.py, in bench/.venv-peers).
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import polars as pl
import scale_peers
from common import write_json
from minhash_bench import run_assay, score, synthesise
from minhash_reference import ref_shingles

from assay.auditors.minhash import MinHashConfig


def assay_side(n: int, seed: int = 0) -> dict:
    """Planted near-duplicates through Assay's MinHash auditor; precision/recall on the planted pairs."""
    docs, planted = synthesise(n, seed)
    config = MinHashConfig()
    truth_j = np.array([len(ref_shingles(docs[a]) & ref_shingles(docs[b])) / len(ref_shingles(docs[a])
                        | ref_shingles(docs[b])) for a, b, _ in planted])
    frame = pl.DataFrame({"id": [f"r{i}" for i in range(n)], "text": docs})
    with tempfile.TemporaryDirectory() as ws:
        result, (wall, cpu), _ = run_assay(frame, config, Path(ws))
    labels = result.columns["minhash_cluster"].to_numpy()
    return {"records": n, "wall_s": wall, "cpu_s": cpu, "score": score(labels, planted, truth_j, config.threshold)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=20_000)
    ap.add_argument("--peers", action="store_true",
                    help="also run datatrove, text-dedup and datasketch on the same records (bench/scale_peers.py; "
                         "needs bench/.venv-peers from bench/peers_env.sh)")
    ap.add_argument("--json-out", default=None)
    args = ap.parse_args()
    figures = assay_side(args.records)
    print(figures)
    if args.peers:
        figures = {"assay": figures, "peers": scale_peers.compare(args.records)}
        print(scale_peers.table(figures["peers"]))
    write_json(args.json_out, figures)


if __name__ == "__main__":
    main()
