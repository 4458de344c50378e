"""Exact duplicates on normalised text: every row whose normalised text appeared earlier in the
version is a duplicate of that first row (the cluster's kept representative)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import polars as pl

from assay.core.errors import AssayError

from .base import AuditContext, Auditor, AuditResult, Rows


@dataclass
class ExactConfig:
    column: str = field(default="text", metadata={
        "help": "text compared: text (prompt + response), prompt or response"})
    lowercase: bool = field(default=True, metadata={"help": "fold case before comparing"})
    collapse_whitespace: bool = field(default=True, metadata={
        "help": "treat any run of whitespace as one space, trim ends"})
    strip_punctuation: bool = field(default=True, metadata={"help": "drop punctuation and symbols (Unicode P* and S*)"})
    unicode_nfkc: bool = field(default=True, metadata={"help": "NFKC-normalise (full-width letters, ligatures, ...)"})


def normalise(expr: pl.Expr, cfg: ExactConfig) -> pl.Expr:
    if cfg.unicode_nfkc:
        expr = expr.str.normalize("NFKC")
    if cfg.lowercase:
        expr = expr.str.to_lowercase()
    if cfg.strip_punctuation:
        expr = expr.str.replace_all(r"[\p{P}\p{S}]", "")
    if cfg.collapse_whitespace:
        expr = expr.str.replace_all(r"\s+", " ").str.strip_chars()
    return expr


class ExactDuplicates(Auditor):
    name = "exact"
    Config = ExactConfig

    def validate(self) -> None:
        cfg: ExactConfig = self.config
        if cfg.column not in ("text", "prompt", "response"):
            raise AssayError(f"exact: column must be text, prompt or response, not {cfg.column!r}")

    def map_columns(self) -> list[str]:
        return [self.config.column]

    def map(self, batch: pl.DataFrame) -> pl.DataFrame:
        # the normalised text's digest is per-record content work: cached by record id, so a
        # filtered child only groups
        norm = batch.select(normalise(pl.col(self.config.column), self.config))[:, 0].to_list()
        return pl.DataFrame({"id": batch["id"],
                             "key": [hashlib.blake2b(t.encode(), digest_size=16).hexdigest() for t in norm],
                             "empty": [t == "" for t in norm]})

    def reduce(self, mapped: pl.DataFrame, rows: Rows, ctx: AuditContext) -> AuditResult:
        # the representative is the first row (in version order) with the same normalised text
        keyed = mapped.select(norm="key", empty="empty").with_row_index("pos").with_columns(
            cluster=pl.col("pos").min().over("norm"),
            size=pl.len().over("norm"),
        )
        columns = keyed.select(
            exact_cluster=pl.col("cluster").cast(pl.Int64),
            exact_duplicate=pl.col("pos") != pl.col("cluster"),
            exact_cluster_size=pl.col("size").cast(pl.Int64),
            exact_empty=pl.col("empty"),
        )
        clusters = keyed.filter(pl.col("size") > 1).group_by("cluster").agg(size=pl.len())
        groups = clusters.sort(["size", "cluster"], descending=[True, False]).head(5)
        examples = rows.at(groups["cluster"].to_numpy(), [self.config.column])[:, 0].to_list()
        dup = int(columns["exact_duplicate"].sum())
        summary = {
            "duplicate_records": dup,
            "duplicate_rate": dup / mapped.height,
            "clusters_with_duplicates": clusters.height,
            "largest_cluster": int(keyed["size"].max() or 1),
            "empty_text_records": int(columns["exact_empty"].sum()),
            "examples": [{"cluster": int(r["cluster"]), "size": int(r["size"]), "text": text[:300]}
                         for r, text in zip(groups.iter_rows(named=True), examples)],
        }
        return AuditResult(columns=columns, summary=summary)
