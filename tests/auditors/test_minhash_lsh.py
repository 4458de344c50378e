"""MinHash LSH banding (auditors/minhash_lsh.py)."""

from __future__ import annotations

from assay.auditors.minhash import MinHashConfig, MinHashDuplicates
from assay.auditors.minhash_lsh import optimal_bands_rows


def test_bands_and_rows_are_chosen_like_datasketch():
    from datasketch.lsh import _optimal_param

    for threshold, weights in [(0.8, (0.1, 0.9)), (0.8, (0.5, 0.5)), (0.5, (0.5, 0.5)), (0.9, (0.3, 0.7))]:
        assert optimal_bands_rows(threshold, 128, *weights) == _optimal_param(threshold, 128, *weights)
    # the default banding is tuned for the candidate threshold, 0.1 below the threshold (candidates are verified)
    assert MinHashDuplicates().effective_bands_rows() == _optimal_param(0.7, 128, 0.1, 0.9)
    assert MinHashDuplicates(MinHashConfig(candidate_threshold=0.8)).effective_bands_rows() == (14, 9)
    # explicit bands x rows win over the threshold
    assert MinHashDuplicates(MinHashConfig(threshold=0.5, bands=16, rows=8)).effective_bands_rows() == (16, 8)
