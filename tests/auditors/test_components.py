"""Connected components over pairs (auditors/components.py)."""

from __future__ import annotations

import numpy as np

from assay.auditors.components import merge_min_labels, union_find_min


def test_union_find_gives_each_component_its_smallest_node():
    rng = np.random.default_rng(0)
    n = 2000
    left, right = rng.integers(0, n, 1500), rng.integers(0, n, 1500)
    parent = list(range(n))

    def find(x):
        while parent[x] != x:
            x = parent[x]
        return x

    for a, b in zip(left, right):
        ra, rb = find(int(a)), find(int(b))
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    assert union_find_min(n, left, right).tolist() == [find(i) for i in range(n)]
    # a long chain collapses onto its first node
    chain = np.arange(999, 0, -1)
    assert (union_find_min(1000, chain, chain - 1) == 0).all()


def test_edges_merged_in_parts_give_the_labels_of_all_edges_at_once():
    rng = np.random.default_rng(1)
    n = 3000
    left, right = rng.integers(0, n, 2500), rng.integers(0, n, 2500)
    label = np.arange(n, dtype=np.int64)
    for part in np.array_split(np.arange(left.size), 7):  # as the semantic auditor finds pairs per block
        merge_min_labels(label, left[part], right[part])
    assert label.tolist() == union_find_min(n, left, right).tolist()
    assert (union_find_min(5, np.array([], dtype=np.int64), np.array([], dtype=np.int64)) == np.arange(5)).all()
