"""Test-sized version of bench/scale_bench.py: Assay finds the planted near-duplicates (issue 13)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from scale_bench import assay_side  # noqa: E402


def test_planted_duplicates_found_at_2000_records():
    pr = assay_side(2000)["score"]["all_planted"]
    assert pr["precision"] >= 0.95 and pr["recall"] >= 0.95, pr
