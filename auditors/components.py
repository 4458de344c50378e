"""Connected components over pairs of rows, labelled by their smallest row: the clustering step that
the duplicate auditors (minhash's LSH pairs, the semantic-duplicate auditor's cosine pairs) share.
One implementation, on scipy's connected_components (C, linear in the edges)."""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components


def union_find_min(n: int, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Connected components of the graph on 0..n-1 with edges (left, right); each node's label is the
    smallest node of its component."""
    label = np.arange(n, dtype=np.int64)
    merge_min_labels(label, np.asarray(left, dtype=np.int64), np.asarray(right, dtype=np.int64))
    return label


def merge_min_labels(label: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
    """Union the clusters of a[k] and b[k], in place; every label stays its cluster's smallest position.
    Only the clusters the edges touch are relabelled, so edges can be merged in as they are found."""
    if a.size == 0:
        return
    ra, rb = label[a], label[b]
    roots, inverse = np.unique(np.concatenate([ra, rb]), return_inverse=True)
    m = roots.size
    graph = coo_matrix((np.ones(a.size, dtype=np.int8), (inverse[:a.size], inverse[a.size:])), shape=(m, m))
    ncomp, comp = connected_components(graph, directed=False)
    new_root = np.full(ncomp, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(new_root, comp, roots)
    remap = np.arange(label.size, dtype=np.int64)
    remap[roots] = new_root[comp]
    label[:] = remap[label]
