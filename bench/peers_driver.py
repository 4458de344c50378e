#!/usr/bin/env python
"""One MinHash dedup run, in a fresh process, for bench/scale_peers.py (which starts it and measures it).

    python bench/peers_driver.py TOOL INPUT_DIR OUT_JSON SETTINGS_JSON

TOOL is datatrove, text-dedup or datasketch (TOOL@t: with bands x rows tuned for the threshold; run
with bench/.venv-peers/bin/python, where those are installed) or assay (run with the project's
Python). INPUT_DIR holds the records written by scale_peers.py: shards/NNNNN.jsonl (`id` = the
record's position, `text`) and records.parquet (the same rows). The timed section is the tool's own
work, reading its input included, and not the interpreter's start, the imports or the reading back
of the clusters. Written to OUT_JSON: `seconds` (the timed section) and `labels` (per position, the
smallest position of its cluster; itself when the tool kept it as no duplicate).

Only numpy, the standard library and the tool itself are imported here, so that it runs in either
environment.
"""
from __future__ import annotations

import json
import os
import struct
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def min_labels(n: int, pairs) -> np.ndarray:
    """Clusters from (position, position) edges, each labelled by its smallest position."""
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        ra, rb = find(int(a)), find(int(b))
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return np.array([find(i) for i in range(n)])


def shard_offsets(input_dir: Path) -> list[int]:
    counts = json.loads((input_dir / "shards.json").read_text())
    return [int(x) for x in np.concatenate([[0], np.cumsum(counts)])]


# ---- the tools ------------------------------------------------------------------------------------------

def run_assay(input_dir: Path, work: Path, s: dict):
    import polars as pl

    from assay.auditors.base import AuditContext
    from assay.auditors.minhash import MinHashConfig, MinHashDuplicates
    from assay.core.store import Store

    frame = pl.read_parquet(input_dir / "records.parquet").with_columns(pl.col("id").cast(pl.String))
    auditor = MinHashDuplicates(MinHashConfig(**s["assay_config"]))
    store = Store(work / "workspace")
    t = time.perf_counter()
    result = auditor.run(frame, AuditContext(store, "bench"))
    seconds = time.perf_counter() - t
    return seconds, result.columns["minhash_cluster"].to_numpy()


def run_datasketch(input_dir: Path, work: Path, s: dict):
    import datasketch  # noqa: F401  imported before the clock starts
    import pyarrow.parquet as pq
    from minhash_reference import datasketch_labels

    t = time.perf_counter()
    texts = pq.read_table(input_dir / "records.parquet", columns=["text"]).column("text").to_pylist()
    labels = datasketch_labels(texts, s["threshold"], s["num_perm"], (s["bands"], s["rows"]))
    return time.perf_counter() - t, labels


def run_text_dedup(input_dir: Path, work: Path, s: dict):
    from text_dedup import minhash

    args = ["--path", "json", "--data_files", str(input_dir / "shards" / "*.jsonl"), "--split", "train",
            "--cache_dir", str(work / "hf-cache"), "--output", str(work / "out"), "--column", "text",
            "--idx_column", "id", "--debug", "--num_proc", str(s["workers"]),
            "--ngram", str(s["ngram"]), "--min_length", "0", "--num_perm", str(s["num_perm"]),
            "--threshold", str(s["threshold"]), "--b", str(s["bands"]), "--r", str(s["rows"]),
            "--seed", str(s["seed"]), "--hash_func", "xxh3"]
    t = time.perf_counter()
    minhash.main.main(args=args, standalone_mode=False)
    seconds = time.perf_counter() - t
    import pickle

    with open(work / "out" / "uf.pkl", "rb") as f:
        uf = pickle.load(f)  # noqa: S301  written by the run just made
    n = shard_offsets(input_dir)[-1]
    return seconds, min_labels(n, ((x, uf.find(x)) for x in list(uf.parent)))


def run_datatrove(input_dir: Path, work: Path, s: dict):
    import re

    from datatrove.executor.local import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter
    from datatrove.utils.hashing import HashConfig
    from datatrove.utils.word_tokenizers import WordTokenizer

    word_re = re.compile(s["word_regex"])

    class AssayWords(WordTokenizer):
        """Assay's word rule. datatrove's English tokenizer is NLTK's, which needs the punkt data
        downloaded from NLTK's own server at run time (not reachable here); this one gives both
        tools the same words."""

        def word_tokenize(self, text: str) -> list[str]:
            return word_re.findall(text.lower())

        def sent_tokenize(self, text: str) -> list[str]:
            return [text]

        def span_tokenize(self, text: str) -> list[tuple[int, int]]:
            return [(0, len(text))]

    config = MinhashConfig(n_grams=s["ngram"], num_buckets=s["bands"], hashes_per_bucket=s["rows"], seed=s["seed"],
                           hash_config=HashConfig(precision=64, hash_fc="xxhash"))
    shards = len(list((input_dir / "shards").glob("*.jsonl")))
    w = s["workers"]
    logs = work / "logs"

    def reader():
        return JsonlReader(str(input_dir / "shards"), glob_pattern="*.jsonl")

    stages = [
        LocalPipelineExecutor(pipeline=[reader(), MinhashDedupSignature(
            output_folder=str(work / "sigs"), config=config, language=AssayWords())],
            tasks=shards, workers=w, logging_dir=str(logs / "1")),
        LocalPipelineExecutor(pipeline=[MinhashDedupBuckets(
            input_folder=str(work / "sigs"), output_folder=str(work / "buckets"), config=config)],
            tasks=config.num_buckets, workers=w, logging_dir=str(logs / "2")),
        LocalPipelineExecutor(pipeline=[MinhashDedupCluster(
            input_folder=str(work / "buckets"), output_folder=str(work / "remove"), config=config,
            save_cluster_id=True)], tasks=1, logging_dir=str(logs / "3")),
        LocalPipelineExecutor(pipeline=[reader(), MinhashDedupFilter(
            input_folder=str(work / "remove"), exclusion_writer=JsonlWriter(str(work / "removed"))),
            JsonlWriter(str(work / "kept"))], tasks=shards, workers=w, logging_dir=str(logs / "4")),
    ]
    t = time.perf_counter()
    for stage in stages:
        stage.run()
    seconds = time.perf_counter() - t
    # stage 3's NNNNNN.clusters: (document index in signature task NNNNNN's file, cluster id) for every
    # record in a cluster of two or more; one input file per task, so task + index -> position
    offsets = shard_offsets(input_dir)
    first: dict[int, int] = {}
    pairs = []
    for path in sorted((work / "remove").glob("*.clusters")):
        base = offsets[int(path.stem)]
        data = path.read_bytes()
        for doc, cluster in struct.iter_unpack("<II", data):
            pos = base + doc
            pairs.append((first.setdefault(cluster, pos), pos))
    return seconds, min_labels(offsets[-1], pairs)


TOOLS = {"assay": run_assay, "datasketch": run_datasketch, "text-dedup": run_text_dedup, "datatrove": run_datatrove}


def main() -> None:
    tool, input_dir, out_json, settings = sys.argv[1:5]
    s = json.loads(Path(settings).read_text())
    work = Path(out_json).parent / f"work-{tool.replace('@', '-')}"
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    name, _, variant = tool.partition("@")
    if variant == "t":  # banding tuned for the threshold itself (see scale_peers.py)
        s = {**s, "bands": s["threshold_bands"], "rows": s["threshold_rows"]}
    seconds, labels = TOOLS[name](Path(input_dir), work, s)
    Path(out_json).write_text(json.dumps({"seconds": seconds, "labels": [int(x) for x in labels]}))


if __name__ == "__main__":
    main()
