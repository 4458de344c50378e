"""Exact duplicates on normalised text: every row whose normalised text appeared earlier in the
version is a duplicate of that first row (the cluster's kept representative)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import polars as pl

from .base import AuditContext, Auditor, AuditResult


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

    def run(self, records: pl.DataFrame, ctx: AuditContext) -> AuditResult:
        cfg: ExactConfig = self.config
        if cfg.column not in ("text", "prompt", "response"):
            from assay.core.errors import AssayError
            raise AssayError(f"exact: column must be text, prompt or response, not {cfg.column!r}")
        # the normalised text's digest is per-record content work: cached by record id, so a
        # filtered child only groups
        def digest(missing: pl.DataFrame) -> pl.DataFrame:
            norm = missing.select(normalise(pl.col(cfg.column), cfg))[:, 0].to_list()
            return pl.DataFrame({"id": missing["id"],
                                 "key": [hashlib.blake2b(t.encode(), digest_size=16).hexdigest() for t in norm],
                                 "empty": [t == "" for t in norm]})

        cached = ctx.cached(self).get_or_compute(records.select("id", cfg.column), digest)
        keyed = records.select(pl.col(cfg.column).alias("raw")).with_columns(
            norm=cached["key"], empty=cached["empty"]).with_row_index("pos")
        # the representative is the first row (in version order) with the same normalised text
        keyed = keyed.with_columns(
            cluster=pl.col("pos").min().over("norm"),
            size=pl.len().over("norm"),
        )
        columns = keyed.select(
            exact_cluster=pl.col("cluster").cast(pl.Int64),
            exact_duplicate=pl.col("pos") != pl.col("cluster"),
            exact_cluster_size=pl.col("size").cast(pl.Int64),
            exact_empty=pl.col("empty"),
        )
        groups = keyed.filter(pl.col("size") > 1).group_by("cluster").agg(
            size=pl.len(), example=pl.col("raw").first()).sort(["size", "cluster"], descending=[True, False])
        dup = int(columns["exact_duplicate"].sum())
        summary = {
            "duplicate_records": dup,
            "duplicate_rate": dup / records.height,
            "clusters_with_duplicates": groups.height,
            "largest_cluster": int(groups["size"].max() or 1) if groups.height else 1,
            "empty_text_records": int(columns["exact_empty"].sum()),
            "examples": [{"cluster": int(r["cluster"]), "size": int(r["size"]), "text": r["example"][:300]}
                         for r in groups.head(5).iter_rows(named=True)],
        }
        return AuditResult(columns=columns, summary=summary)
