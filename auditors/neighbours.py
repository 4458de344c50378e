"""Nearest-neighbour search over L2-normalised embeddings (cosine similarity = inner product), shared
by the auditors that need neighbours: `embed` (each record's nearest earlier records, clustered at a
threshold), `diversity` (each record's nearest other record) and contamination's semantic tier
(each record's nearest benchmark item).

Two methods, chosen per search by `SearchOptions.search`:

- **exact**: blocked float32 matrix products, every pair compared. A block of queries against a
  block of indexed rows holds at most `BLOCK_BYTES` of similarities, so memory stays bounded at any
  size; the time is O(n m d), fine to about 50k x 50k (seconds), hours at 1M x 1M.
- **approximate**: a faiss HNSW graph (Malkov & Yashunin) over 8-bit (or float16) scalar-quantised
  vectors, inner-product metric. The graph returns `candidates` rows per query, which are re-ranked by their
  exact float32 cosine from the caller's vectors, so the similarities (and the decisions built on
  them) are exact for every pair that is found; only a pair the graph misses can change a result.
  8-bit codes keep the index at about d + 8 M bytes per vector (650 B for 384-d MiniLM vectors at
  M = 32: 6.5 GB at 10M vectors, against 15 GB for float32 codes). Measured recall@10 and speed:
  bench/ann_bench.py, docs/benchmarks.md.

"auto" (the default) runs exact below `exact_below` indexed vectors, so small versions get exactly the
results they always had, and approximate from there. Queries and additions go through in batches
(`BATCH`), so no n x n matrix ever exists and the only memory that grows with n is the index and the
per-row results. The caller's vectors may be a numpy memmap: they are read batch by batch.

Every search reports what ran (`SearchInfo.as_dict`), which the auditors put in their summary.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from assay.core.errors import AssayError

from .components import merge_min_labels

SEARCH_MODES = ("auto", "exact", "approximate")
CODES = ("sq8", "fp16")
BLOCK_BYTES = 128 * 2**20  # exact search: similarities held at once (float32), whatever the sizes
EDGE_BATCH = 2_000_000  # pairs >= threshold merged per union-find step
BATCH = 4096  # approximate search: rows added to / searched in the index per call
TRAIN_ROWS = 65_536  # rows the 8-bit quantiser's per-dimension ranges are fitted on (a spread sample)


@dataclass
class SearchOptions:
    """Nearest-neighbour search settings; the embed, diversity and contamination configs carry them."""
    search: str = field(default="auto", metadata={
        "help": "nearest-neighbour search: auto (exact below exact_below vectors, approximate from there), exact "
                "(every pair; O(n^2) time, bounded memory) or approximate (faiss HNSW graph, exact re-rank)"})
    exact_below: int = field(default=50_000, metadata={
        "help": "with search=auto: searched sets smaller than this many vectors (the version; for contamination "
                "the benchmark items) are searched exactly; at 50k exact search takes minutes on 2 cores"})
    candidates: int = field(default=32, metadata={
        "help": "approximate search: rows the graph returns per query, re-ranked by exact cosine; embed links a "
                "record to at most this many earlier records (enough to join any cluster)"})
    hnsw_m: int = field(default=32, metadata={
        "help": "approximate search: graph links per vector (HNSW M); more is higher recall, more memory "
                "(8 M bytes per vector) and slower building"})
    ef_construction: int = field(default=100, metadata={
        "help": "approximate search: candidate list while building the graph (efConstruction); more is a "
                "better graph and slower building"})
    ef_search: int = field(default=128, metadata={
        "help": "approximate search: candidate list per query (efSearch, at least `candidates`); more is higher "
                "recall and slower queries"})
    codes: str = field(default="sq8", metadata={
        "help": "approximate search: how the graph stores vectors: sq8 (8-bit, d + 8 M bytes per vector: 650 B for "
                "MiniLM, 6.5 GB at 10M) or fp16 (2 d + 8 M bytes; about 2x faster to build)"})


def check_search(cfg: SearchOptions, auditor: str) -> None:
    """AssayError naming the auditor, the option and the value for any bad search setting."""
    if cfg.search not in SEARCH_MODES:
        raise AssayError(f"{auditor}: search must be auto, exact or approximate, not {cfg.search!r}")
    if cfg.codes not in CODES:
        raise AssayError(f"{auditor}: codes must be sq8 or fp16, not {cfg.codes!r}")
    limits = {"exact_below": (0, None), "candidates": (1, 1024), "hnsw_m": (4, 128),
              "ef_construction": (8, 4096), "ef_search": (1, 4096)}
    for name, (low, high) in limits.items():
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < low or (high and value > high):
            span = f"from {low} to {high}" if high else f">= {low}"
            raise AssayError(f"{auditor}: {name} must be an integer {span}, not {value!r}")


def options_of(cfg: Any) -> SearchOptions:
    """The search settings of an auditor config (any object with SearchOptions' fields)."""
    return SearchOptions(**{f: getattr(cfg, f) for f in SearchOptions.__dataclass_fields__})


def method_for(vectors: int, cfg: SearchOptions | None) -> str:
    """"exact" or "approximate" for a search over `vectors` indexed rows."""
    cfg = cfg or SearchOptions()
    if cfg.search == "auto":
        return "approximate" if vectors >= cfg.exact_below else "exact"
    return cfg.search


@dataclass
class SearchInfo:
    method: str
    cfg: SearchOptions
    vectors: int  # rows indexed
    queries: int
    seconds: float = 0.0
    index_bytes: int | None = None  # approximate: the faiss index's own size

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"method": self.method, "requested": self.cfg.search, "exact_below": self.cfg.exact_below,
                               "vectors": self.vectors, "queries": self.queries, "seconds": round(self.seconds, 3)}
        if self.method == "approximate":
            import faiss

            out |= {"library": f"faiss {faiss.__version__}",
                    "index": f"HNSW{self.cfg.hnsw_m},{self.cfg.codes.upper()} inner product",
                    "hnsw_m": self.cfg.hnsw_m, "codes": self.cfg.codes, "ef_construction": self.cfg.ef_construction,
                    "ef_search": max(self.cfg.ef_search, self.cfg.candidates), "candidates": self.cfg.candidates,
                    "rerank": "exact float32 cosine", "index_bytes": self.index_bytes}
        return out


class HnswIndex:
    """A faiss HNSW graph over 8-bit codes of rows 0..size-1 of `base`, searched with exact re-ranking."""

    def __init__(self, base: np.ndarray, cfg: SearchOptions):
        import faiss

        self.base, self.cfg = base, cfg
        n, d = base.shape
        codes = faiss.ScalarQuantizer.QT_8bit if cfg.codes == "sq8" else faiss.ScalarQuantizer.QT_fp16
        self.index = faiss.IndexHNSWSQ(d, codes, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = cfg.ef_construction
        self.index.hnsw.efSearch = max(cfg.ef_search, cfg.candidates)
        step = max(1, n // TRAIN_ROWS)  # evenly spread rows: the quantiser learns each dimension's range
        self.index.train(np.ascontiguousarray(base[::step][:TRAIN_ROWS], dtype=np.float32))
        self.size = 0

    def add_until(self, stop: int) -> None:
        """Add rows size..stop-1 of the base, in batches."""
        for a in range(self.size, stop, BATCH):
            self.index.add(np.ascontiguousarray(self.base[a:min(stop, a + BATCH)], dtype=np.float32))
        self.size = max(self.size, stop)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k rows most similar to each query, best first, by exact cosine among the graph's
        candidates; similarity -inf and row -1 where fewer than k rows are indexed."""
        m = queries.shape[0]
        c = min(max(k, self.cfg.candidates), max(self.size, 1))
        _, idx = self.index.search(queries, c)
        safe = np.maximum(idx, 0)
        sims = np.einsum("qd,qcd->qc", queries, np.asarray(self.base[safe.ravel()], dtype=np.float32)
                         .reshape(m, c, -1), dtype=np.float32)
        sims[idx < 0] = -np.inf
        return top_k(sims, idx, k)

    def nbytes(self) -> int:
        """The index's memory: the 8-bit codes plus the graph's links, levels and offsets (counted from
        faiss' own arrays, not by serialising a copy of an index that may be gigabytes)."""
        hnsw = self.index.hnsw
        import faiss

        code_size = faiss.downcast_index(self.index.storage).code_size
        return int(self.index.ntotal * code_size + hnsw.neighbors.size() * 4
                   + hnsw.levels.size() * 4 + hnsw.offsets.size() * 8)


def top_k(sims: np.ndarray, idx: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the k largest of `sims` (best first; ties: the smaller column first) with their `idx`."""
    m, c = sims.shape
    if c < k:
        sims = np.hstack([sims, np.full((m, k - c), -np.inf, dtype=sims.dtype)])
        idx = np.hstack([idx, np.full((m, k - c), -1, dtype=idx.dtype)])
    elif c > k:
        part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        sims, idx = np.take_along_axis(sims, part, 1), np.take_along_axis(idx, part, 1)
    order = np.lexsort((idx, -sims), axis=1) if k > 1 else np.zeros((m, 1), dtype=np.int64)
    sims, idx = np.take_along_axis(sims, order, 1), np.take_along_axis(idx, order, 1)
    idx = np.where(np.isneginf(sims), -1, idx)
    return sims, idx


def _exact_knn(base: np.ndarray, queries: np.ndarray, k: int, self_offset: int | None,
               block_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    n, m = base.shape[0], queries.shape[0]
    if n == 0 or m == 0:
        return np.full((m, k), -np.inf, dtype=np.float32), np.full((m, k), -1, dtype=np.int64)
    cols = int(min(n, max(1, block_bytes // (4 * 256))))  # index rows per block: >= 256 query rows fit
    rows = int(max(1, min(m, block_bytes // (4 * max(cols, 1)))))
    best_sim = np.full((m, k), -np.inf, dtype=np.float32)
    best_idx = np.full((m, k), -1, dtype=np.int64)
    for qa in range(0, m, rows):
        qb = min(m, qa + rows)
        q = np.asarray(queries[qa:qb], dtype=np.float32)
        run_s, run_i = best_sim[qa:qb], best_idx[qa:qb]
        for ca in range(0, n, cols):
            cb = min(n, ca + cols)
            sims = q @ np.asarray(base[ca:cb], dtype=np.float32).T
            if self_offset is not None:  # query r is index row r + self_offset: never its own neighbour
                r = np.arange(qa, qb) + self_offset
                mine = (r >= ca) & (r < cb)
                sims[np.flatnonzero(mine), r[mine] - ca] = -np.inf
            if k == 1:  # argmax: the first of equal maxima, as a plain argmax over the whole row
                j = sims.argmax(axis=1)
                s = sims[np.arange(qb - qa), j]
                better = s > run_s[:, 0]
                run_s[better, 0], run_i[better, 0] = s[better], j[better] + ca
            else:  # the block's own top k first, so only (rows, 2k) arrays are merged
                if sims.shape[1] > k:
                    j = np.argpartition(-sims, k - 1, axis=1)[:, :k]
                    s = np.take_along_axis(sims, j, 1)
                else:
                    j = np.broadcast_to(np.arange(sims.shape[1]), sims.shape)
                    s = sims
                run_s, run_i = top_k(np.hstack([run_s, s]), np.hstack([run_i, j + ca]), k)
        best_sim[qa:qb], best_idx[qa:qb] = run_s, run_i
    best_idx[np.isneginf(best_sim)] = -1
    return best_sim, best_idx


def knn(base: np.ndarray, queries: np.ndarray, k: int, cfg: SearchOptions | None = None, *,
        exclude_self: bool = False, block_bytes: int = BLOCK_BYTES) -> tuple[np.ndarray, np.ndarray, SearchInfo]:
    """Each query's k most similar rows of `base` (both L2-normalised, float32): cosine similarities
    (m, k) best first and row indices (m, k), -inf / -1 where `base` has fewer rows. With
    `exclude_self`, `queries` is `base` itself and a row is never its own neighbour (an identical
    copy elsewhere still is)."""
    cfg = cfg or SearchOptions()
    n, m = base.shape[0], queries.shape[0]
    method = method_for(n, cfg)
    info = SearchInfo(method, cfg, n, m)
    t0 = time.perf_counter()
    if method == "exact" or n == 0 or m == 0:
        sims, idx = _exact_knn(base, queries, k, 0 if exclude_self else None, block_bytes)
    else:
        index = HnswIndex(base, cfg)
        index.add_until(n)
        sims = np.empty((m, k), dtype=np.float32)
        idx = np.empty((m, k), dtype=np.int64)
        extra = 1 if exclude_self else 0
        for a in range(0, m, BATCH):
            b = min(m, a + BATCH)
            s, i = index.search(np.ascontiguousarray(queries[a:b], dtype=np.float32), k + extra)
            if exclude_self:
                s = np.where(i == np.arange(a, b)[:, None], -np.inf, s)
                s, i = top_k(s, i, k)
            sims[a:b], idx[a:b] = s, i
        info.index_bytes = index.nbytes()
    info.seconds = time.perf_counter() - t0
    return sims, idx, info


@dataclass
class Neighbours:
    label: np.ndarray  # int64: the cluster's smallest position (its representative)
    neighbor: np.ndarray  # int64: nearest earlier row, -1 for row 0
    neighbor_similarity: np.ndarray  # float32: cosine to it, nan for row 0
    pairs: int  # pairs (i < j) with cosine >= threshold (approximate: among the pairs found)
    search: SearchInfo | None = None


def nearest_and_clusters(vectors: np.ndarray, threshold: float, block_bytes: int = BLOCK_BYTES,
                         edge_batch: int = EDGE_BATCH, options: SearchOptions | None = None,
                         batch_rows: int = BATCH) -> Neighbours:
    """For each row its nearest earlier row, and clusters of rows linked by cosine >= threshold.

    `vectors` are L2-normalised (n, d). Exact (below the threshold of `options`, or when asked): every
    pair is compared, in row blocks of bounded size. Approximate: each row is linked to its
    `candidates` nearest earlier rows (found through the HNSW graph, re-ranked exactly); rows go
    through in batches of `batch_rows`, each compared exactly with itself."""
    x = vectors if isinstance(vectors, np.memmap) else np.ascontiguousarray(vectors, dtype=np.float32)
    n = x.shape[0]
    cfg = options or SearchOptions()
    method = method_for(n, cfg)
    t0 = time.perf_counter()
    if method == "exact" or n == 0:
        found = _exact_clusters(np.ascontiguousarray(x, dtype=np.float32), threshold, block_bytes, edge_batch)
        found.search = SearchInfo("exact", cfg, n, n)
    else:
        found = _approximate_clusters(x, threshold, cfg, batch_rows)
    found.search.seconds = time.perf_counter() - t0
    return found


def _exact_clusters(x: np.ndarray, threshold: float, block_bytes: int, edge_batch: int) -> Neighbours:
    n = x.shape[0]
    label = np.arange(n, dtype=np.int64)
    neighbor = np.full(n, -1, dtype=np.int64)
    neighbor_sim = np.full(n, np.nan, dtype=np.float32)
    pairs = 0
    rows_per_block = int(max(1, min(n, block_bytes // (4 * max(n, 1)))))
    thr = np.float32(threshold)
    for a in range(0, n, rows_per_block):
        b = min(n, a + rows_per_block)
        sims = x[a:b] @ x[:b].T  # (b - a, b): this block against every earlier row and itself
        own = sims[:, a:b]
        own[~np.tri(b - a, k=-1, dtype=bool)] = -np.inf  # only j < i
        best = sims.argmax(axis=1)
        best_sim = sims[np.arange(b - a), best]
        has = np.isfinite(best_sim)
        neighbor[a:b] = np.where(has, best, -1)
        neighbor_sim[a:b] = np.where(has, best_sim, np.nan)
        hits = sims >= thr
        per_row = hits.sum(axis=1)
        total = int(per_row.sum())
        if not total:
            continue
        pairs += total
        # merge in batches of rows holding at most edge_batch pairs (one row may exceed it alone)
        start = 0
        cum = np.cumsum(per_row)
        while start < b - a:
            base = cum[start - 1] if start else 0
            stop = int(np.searchsorted(cum, base + edge_batch, side="right"))
            stop = max(stop, start + 1)
            r, c = np.nonzero(hits[start:stop])
            if r.size:
                merge_min_labels(label, (r + a + start).astype(np.int64), c.astype(np.int64))
            start = stop
    return Neighbours(label, neighbor, neighbor_sim, pairs)


def _approximate_clusters(x: np.ndarray, threshold: float, cfg: SearchOptions, batch: int) -> Neighbours:
    """Rows in batches: a batch searches the graph of all earlier batches, and itself exactly (it is
    not in the graph yet), then joins the graph. Memory: the graph, one batch and n * candidates
    pairs at most."""
    n = x.shape[0]
    k = cfg.candidates
    label = np.arange(n, dtype=np.int64)
    neighbor = np.full(n, -1, dtype=np.int64)
    neighbor_sim = np.full(n, np.nan, dtype=np.float32)
    pairs = 0
    index = HnswIndex(x, cfg)
    thr = np.float32(threshold)
    for a in range(0, n, batch):
        b = min(n, a + batch)
        q = np.ascontiguousarray(x[a:b], dtype=np.float32)
        own = q @ q.T
        own[~np.tri(b - a, k=-1, dtype=bool)] = -np.inf  # only j < i
        own_idx = np.broadcast_to(np.arange(a, b, dtype=np.int64), own.shape)
        if a:
            s, i = index.search(q, k)
            sims, idx = top_k(np.hstack([s, own]), np.hstack([i, own_idx]), k)
        else:
            sims, idx = top_k(own, own_idx, k)
        has = np.isfinite(sims[:, 0])
        neighbor[a:b] = np.where(has, idx[:, 0], -1)
        neighbor_sim[a:b] = np.where(has, sims[:, 0], np.nan)
        r, c = np.nonzero(sims >= thr)
        if r.size:
            pairs += int(r.size)
            merge_min_labels(label, (r + a).astype(np.int64), idx[r, c])
        index.add_until(b)
    return Neighbours(label, neighbor, neighbor_sim, pairs, SearchInfo("approximate", cfg, n, n,
                                                                        index_bytes=index.nbytes()))


def clustered_vectors(n: int, d: int = 384, *, topics: int = 1000, noise: float = 1.5, duplicates: float = 0.02,
                      seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Synthetic L2-normalised vectors shaped like sentence embeddings, to measure the search on
    (bench/ann_bench.py and the tests; real embeddings of 100k texts take hours on a small CPU):
    `topics` random directions plus a shared mean direction (sentence embeddings are anisotropic),
    per-vector Gaussian noise (1.5: a row's nearest other row at cosine ~0.5, like human-written
    instructions; 2.0: ~0.33, almost structureless), and a fraction `duplicates` of planted near
    copies (an earlier row plus a little noise, cosine ~0.98). Returns (vectors (n, d) float32, the
    planted rows (sorted), the earlier row each one copies). Where that earlier row is planted too, the
    copy is of its value before it was overwritten, so the two need not be similar."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((topics, d)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    mean = rng.standard_normal(d).astype(np.float32)
    mean /= np.linalg.norm(mean)
    x = centres[rng.integers(0, topics, n)]
    x += np.float32(0.5) * mean
    scale = np.float32(noise / np.sqrt(d))
    for a in range(0, n, BATCH):  # float32, a batch at a time: the only large array is x itself
        x[a:a + BATCH] += scale * rng.standard_normal((min(n, a + BATCH) - a, d), dtype=np.float32)
    dup = np.sort(rng.choice(np.arange(1, n), int(n * duplicates), replace=False))
    src = (rng.random(dup.size) * dup).astype(np.int64)  # an earlier row
    x[dup] = x[src] + 0.2 * rng.standard_normal((dup.size, d), dtype=np.float32) / np.sqrt(d)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x, dup, src


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean over queries of |found ∩ truth| / k, for (m, k) row indices (-1 never counts as found)."""
    hits = ((found[:, :, None] == truth[:, None, :]) & (truth[:, None, :] >= 0)).any(axis=2).sum(axis=1)
    return float(hits.mean() / truth.shape[1])


__all__ = ["BLOCK_BYTES", "EDGE_BATCH", "SEARCH_MODES", "HnswIndex", "Neighbours", "SearchInfo", "SearchOptions",
           "check_search", "clustered_vectors", "knn", "method_for", "nearest_and_clusters", "options_of",
           "recall_at_k", "top_k"]
