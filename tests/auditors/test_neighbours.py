"""The shared neighbour search (auditors/neighbours.py): the faiss HNSW graph against exact search on a
few thousand synthetic 384-d vectors shaped like sentence embeddings (`clustered_vectors`: topics, an
anisotropic mean, planted near copies; real MiniLM embeddings of thousands of texts take minutes on a
small CPU), the exact fallback below `exact_below`, and the `embed` clusters under both searches.
Recall at 100k vectors and speed are bench/ann_bench.py's (docs/benchmarks.md)."""

import numpy as np
import pytest

from assay.auditors.neighbours import (
    SearchOptions,
    clustered_vectors,
    knn,
    method_for,
    nearest_and_clusters,
    recall_at_k,
)

N = 2000
K = 10


@pytest.fixture(scope="module")
def vectors():
    return clustered_vectors(N, seed=3)


@pytest.fixture(scope="module")
def exact_knn(vectors):
    x, _, _ = vectors
    return knn(x, x, K, SearchOptions(search="exact"), exclude_self=True)


def test_the_graph_finds_the_exact_ten_nearest(vectors, exact_knn):
    x, _, _ = vectors
    true_sims, truth, _ = exact_knn
    sims, found, info = knn(x, x, K, SearchOptions(search="approximate"), exclude_self=True)
    assert info.method == "approximate" and info.index_bytes > 0
    # the graph is really searched: an index of 8-bit codes and links, far smaller than the float32 rows
    assert info.index_bytes < x.nbytes
    assert not (found == np.arange(N)[:, None]).any()  # a row is never its own neighbour
    assert recall_at_k(found, truth) >= 0.99
    # re-ranked by exact cosine: a pair that is found carries its exact similarity, best first
    np.testing.assert_allclose(sims, np.einsum("qd,qkd->qk", x, x[found]), atol=1e-5)
    assert (np.diff(sims, axis=1) <= 0).all()
    same = found == truth
    np.testing.assert_allclose(sims[same], true_sims[same], atol=1e-5)


def test_a_starved_graph_search_loses_recall(vectors, exact_knn):
    """The recall measure can tell: the same graph searched with a one-entry candidate list and no
    spare candidates to re-rank misses neighbours that exact search finds."""
    x, _, _ = vectors
    _, truth, _ = exact_knn
    _, found, _ = knn(x, x, K, SearchOptions(search="approximate", ef_search=1, candidates=1), exclude_self=True)
    assert recall_at_k(found, truth) < 0.95


def test_below_the_threshold_auto_is_exact_search(vectors, exact_knn):
    x, _, _ = vectors
    true_sims, truth, _ = exact_knn
    sims, found, info = knn(x, x, K, SearchOptions(), exclude_self=True)  # auto, exact_below 50,000
    np.testing.assert_array_equal(found, truth)
    np.testing.assert_array_equal(sims, true_sims)
    summary = info.as_dict()
    assert summary["method"] == "exact" and summary["requested"] == "auto" and summary["vectors"] == N
    assert "index_bytes" not in summary and "library" not in summary
    # from the threshold on, auto builds the graph, and the summary says so
    _, _, info = knn(x, x, K, SearchOptions(exact_below=N), exclude_self=True)
    summary = info.as_dict()
    assert summary["method"] == "approximate" and summary["requested"] == "auto"
    assert summary["library"].startswith("faiss ") and summary["index_bytes"] > 0
    assert method_for(N - 1, SearchOptions(exact_below=N)) == "exact"


def test_below_the_threshold_auto_clusters_are_exact(vectors):
    x, _, _ = vectors
    auto = nearest_and_clusters(x, 0.95)
    exact = nearest_and_clusters(x, 0.95, options=SearchOptions(search="exact"))
    assert auto.search.as_dict()["method"] == "exact"
    np.testing.assert_array_equal(auto.label, exact.label)
    np.testing.assert_array_equal(auto.neighbor, exact.neighbor)
    np.testing.assert_array_equal(auto.neighbor_similarity, exact.neighbor_similarity)
    assert auto.pairs == exact.pairs


def test_forced_approximate_search_finds_the_same_duplicate_clusters(vectors):
    """Small batches, so most rows find their earlier rows through the graph, not the batch's own exact block."""
    x, dup, src = vectors
    exact = nearest_and_clusters(x, 0.95, options=SearchOptions(search="exact"))
    approx = nearest_and_clusters(x, 0.95, options=SearchOptions(search="approximate"), batch_rows=256)
    assert approx.search.as_dict()["method"] == "approximate" and approx.search.index_bytes > 0
    assert dup.size == N * 2 // 100
    # a copy of a row that is itself planted copies that row's value before it was overwritten: left out
    direct = ~np.isin(src, dup)
    dup, src = dup[direct], src[direct]
    assert dup.size > N / 100
    for found in (exact, approx):  # every planted copy joins the cluster of the row it copies
        np.testing.assert_array_equal(found.label[dup], found.label[src])
    assert (exact.label != np.arange(N)).sum() >= dup.size  # real clusters
    np.testing.assert_array_equal(approx.label, exact.label)
    assert approx.pairs == exact.pairs
    # each row's nearest earlier row: the graph may miss a far one, never a duplicate's source
    assert (approx.neighbor == exact.neighbor).mean() >= 0.99
    np.testing.assert_array_equal(approx.neighbor[dup], exact.neighbor[dup])
    assert approx.neighbor[0] == -1 and np.isnan(approx.neighbor_similarity[0])


def test_forced_approximate_search_on_fewer_rows_than_k():
    x, _, _ = clustered_vectors(6, seed=1, duplicates=0.0)
    exact_sims, exact_idx, _ = knn(x, x, K, SearchOptions(search="exact"), exclude_self=True)
    sims, idx, info = knn(x, x, K, SearchOptions(search="approximate"), exclude_self=True)
    assert info.method == "approximate"
    np.testing.assert_array_equal(idx, exact_idx)  # 5 others, then -1 padding
    assert (idx[:, 5:] == -1).all() and np.isneginf(sims[:, 5:]).all()
    np.testing.assert_allclose(sims[:, :5], exact_sims[:, :5], atol=1e-5)
