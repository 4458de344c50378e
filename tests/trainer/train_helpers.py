"""Shared set-up of the trainer tests (importable: pytest puts tests/trainer on the path)."""

from __future__ import annotations

from helpers import SHARED_DATA

from assay.trainer.config import TrainConfig

SHARED = SHARED_DATA
GSM8K = SHARED / "benchmarks" / "gsm8k_test.jsonl"
REVIEWS = SHARED / "domain" / "ecomgpt_EN-ABSA-CLS-review_topic_category.json"


def smoke(**overrides) -> TrainConfig:
    """cpu-smoke with the fixed evaluation sets of these tests (GSM8K as reference and contamination
    probe, restaurant reviews as the forgetting probe)."""
    base = dict(reference="gsm8k", reference_records=8, benchmarks=[f"{GSM8K}:question"], benchmark_items=4,
                forgetting=f"{REVIEWS}:sentences", forgetting_items=8, rouge_records=2, max_new_tokens=16)
    return TrainConfig.from_preset("cpu-smoke", **{**base, **overrides})


def quick(**overrides) -> TrainConfig:
    """cpu-smoke cut to a quarter of the tokens a step, for the tests that do not test the preset."""
    return smoke(**{"batch_size": 4, "max_seq_len": 64, **overrides})
