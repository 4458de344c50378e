"""The reference near-duplicate pipeline written with datasketch, shared by bench/minhash_bench.py
and the agreement test (tests/auditors/auditor_helpers.py imports it), so both measure against the
same code.

Words by a Python regex (the rule Assay's word shingles follow, written independently of it: after
lowercasing, a word is a run of ASCII letters, digits and "_" or of non-ASCII characters), 5-gram
shingles joined by spaces, `MinHash.bulk`, `MinHashLSH(threshold, num_perm, params=(bands, rows))`,
every record inserted then queried, candidates kept when `MinHash.jaccard >= threshold`, union-find
with the smallest position as root. Records without shingles are not indexed.
"""

from __future__ import annotations

import re

import numpy as np

WORD_RE = re.compile(r"[0-9a-z_\u0080-\U0010ffff]+")


def ref_shingles(text: str, n: int = 5) -> set[str]:
    words = WORD_RE.findall(text.lower())
    if len(words) >= n:
        return {" ".join(words[i:i + n]) for i in range(len(words) - n + 1)}
    return {" ".join(words)} if words else set()


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b)


def datasketch_labels(texts: list[str], threshold: float, num_perm: int, params: tuple[int, int]) -> np.ndarray:
    """Per record, the smallest position of its cluster (itself when it is no duplicate)."""
    from datasketch import MinHash, MinHashLSH

    sets = [ref_shingles(t) for t in texts]
    indexed = [i for i, s in enumerate(sets) if s]
    hashes = MinHash.bulk([[s.encode() for s in sets[i]] for i in indexed], num_perm=num_perm)
    by_pos = dict(zip(indexed, hashes))
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, params=params)
    for i, m in by_pos.items():
        lsh.insert(i, m)
    parent = list(range(len(texts)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, m in by_pos.items():
        for j in lsh.query(m):
            if j != i and m.jaccard(by_pos[j]) >= threshold:
                a, b = find(i), find(j)
                if a != b:
                    parent[max(a, b)] = min(a, b)
    return np.array([find(i) for i in range(len(texts))])
