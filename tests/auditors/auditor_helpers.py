"""Data and reference code the auditor tests share (importable as `auditor_helpers`: this folder's
conftest.py puts it on the path). The datasketch reference pipeline is the benchmark's own
(bench/minhash_reference.py), so the agreement test and the benchmark compare against the same code."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from minhash_reference import WORD_RE, datasketch_labels, jaccard, ref_shingles  # noqa: E402

__all__ = ["WORD_RE", "codealpaca", "datasketch_labels", "jaccard", "ref_shingles", "seed_tasks"]


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
