"""Near-duplicates by MinHash LSH: records whose shingle sets have an estimated Jaccard similarity
of at least `threshold` end up in one cluster; the cluster's first member (in version order) is
its representative and every other member is flagged `minhash_duplicate`.

Pipeline (vectorised numpy over the whole batch; no Python loop per record):

1. Shingles. `word` (default): after lowercasing, a word is a maximal run of ASCII letters, digits
   and `_`, or of any non-ASCII characters; every other ASCII character (space, punctuation,
   symbols) separates words and is dropped, so "Hello,  world!" and "hello world" give the same
   words. A shingle is `ngram` consecutive words (default 5: long enough that stock phrases like
   "write a function that" do not make unrelated instructions look alike, short enough that one
   edited word in a 100-word record costs at most 5 of its ~96 shingles, so a lightly edited copy
   keeps a Jaccard near 0.9). `char`: `ngram` consecutive characters (code points) of the text
   after lowercasing and, with `normalise_whitespace`, collapsing whitespace runs to one space;
   prefer it for scripts written without spaces (Chinese, Japanese), where a "word" above is a
   whole sentence. A record with fewer than `ngram` words (characters) has one shingle, all of
   them. A record with no word at all (empty, or only punctuation) has no shingles: it is never
   a MinHash duplicate (`minhash_no_shingles` says so; empty texts are the exact auditor's job).
2. Shingle hashes, computed on the UTF-8 bytes of the whole batch at once: each word (or
   character window) is read 8 bytes at a time through a multiply-xorshift bijection (so distinct
   words of up to 8 bytes never collide), n consecutive word values are combined as a polynomial
   mod 2^64 and finished with murmur3's 64-bit mixer; the shingle's 32-bit value is the top half.
   Nothing depends on Python's or Polars' hash, so cached signatures stay valid across processes,
   machines and library upgrades.
3. Signatures: `num_perm` hash functions h_i(x) = (a_i * x + b_i) mod 2^32 (a_i odd, a_i and b_i
   drawn from `seed`), the minimum over a record's shingles for each. The modulus is 2^32 rather
   than a Mersenne prime so numpy stays in 32-bit SIMD lanes; this is sound because x is already
   a well-mixed hash (measured: unbiased Jaccard estimates with binomial variance). Records are
   processed in batches of similar shingle counts, padded with their own first shingle (which
   leaves every minimum unchanged) so each minimum is a dense column reduction.
   Signatures are per-record content work: they go through the record cache, keyed by record id
   and by the settings that change them (column, shingles, ngram, num_perm, seed, normalisation),
   so a child version or a re-audit at another threshold recomputes none for known records.
4. LSH: bands x rows of the signature (explicit `bands`/`rows`, or, from `candidate_threshold`
   (default `threshold` - 0.1) alone, the pair minimising the weighted integral of false-positive
   and false-negative probability, as datasketch's `_optimal_param` does; computed exactly here by
   Gauss-Legendre quadrature, since 1-(1-s^r)^b is a polynomial of degree b*r <= num_perm). Each
   band slice is hashed to 64 bits; records sharing a band hash are candidates. Records with
   identical signatures are grouped first (exact copies), so a large group of copies costs one pair
   per copy, not all pairs. Why tune the banding below the threshold: banding tuned for 0.8 itself
   (14 x 9) makes a pair of true Jaccard 0.8 a candidate only 87% of the time, and a pair LSH misses
   is never seen again; tuned for 0.7 (20 x 6) it is 99.8%. The extra candidates are verified.
5. Verification and clustering: with `verify="exact"` (default) a candidate pair whose estimated
   Jaccard is within `VERIFY_MARGIN` (0.2) of the threshold is decided by the true Jaccard of the
   two records' shingle sets (shingled again for just those records and intersected by a join), so
   the estimate's noise (sd ~0.035 at 0.8 with 128 values) no longer decides pairs near the
   threshold; pairs further away are decided by the estimate. With `verify="estimate"` every pair
   is decided by the estimate, as datasketch's MinHash.jaccard does. Kept pairs are merged by
   union-find (vectorised min-label propagation), and the cluster label is the smallest version
   position in it. Clusters are transitive: a member's Jaccard to its representative
   (`minhash_jaccard`, estimated) can be below the threshold when it joined through another member.
   Everything here is a function of the version's rows and their cached signatures, so a cached
   re-audit gives exactly the clusters a cold audit of the same version gives.

Bucket guard: a band bucket with more than `MAX_BUCKET_PAIRS_SIZE` distinct signatures (heavily
templated data) is linked as a star (each member against the bucket's first member) instead of
all pairs; the summary counts such buckets (`oversized_buckets`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from assay.core.errors import AssayError

from .base import AuditContext, Auditor, AuditResult, Rows
from .components import union_find_min
from .minhash_lsh import (
    SignatureRows,
    _Clusters,
    _sorted_unique,
    cluster,
    exact_jaccard,
    head_keys,
    local_candidates,
    optimal_bands_rows,
)
from .minhash_parts import PartSignatures, signatures_stay_in_cache
from .minhash_signatures import shingle_hashes, signatures

CALIBRATION_WINDOW = 0.15  # calibration pairs have an estimated Jaccard within threshold +- this
CANDIDATE_MARGIN = 0.1  # default candidate_threshold = threshold - this
TEXT_PREVIEW = 500
_TEXT_CHUNK = 4 << 20  # bytes of text shingled and signed at a time
# candidate pairs verified at once: their texts are read from the version together, so a batch costs
# one read of the row groups it touches; 250k pairs is at most 500k texts (a few hundred MB)
VERIFY_BATCH = 250_000


@dataclass
class MinHashConfig:
    column: str = field(default="text", metadata={
        "help": "text compared: text (prompt + response), prompt or response"})
    shingle: str = field(default="word", metadata={
        "help": "shingle unit: word (runs of letters/digits; punctuation separates) or char (for unspaced scripts)"})
    ngram: int = field(default=5, metadata={
        "help": "words (or characters) per shingle; 5 words: one edited word in a 100-word text keeps Jaccard ~0.9, "
                "while shared stock phrases do not make different texts look alike"})
    num_perm: int = field(default=128, metadata={
        "help": "hash functions per signature (Jaccard estimate sd ~ 0.035 at 0.8)"})
    threshold: float = field(default=0.8, metadata={
        "help": "estimated Jaccard at or above which two records are near-duplicates, in (0, 1]"})
    candidate_threshold: float | None = field(default=None, metadata={
        "help": "Jaccard the LSH banding is tuned for (bands/rows chosen for it); default threshold - 0.1, so "
                "pairs just above the threshold are almost never missed (candidates are verified anyway)"})
    verify: str = field(default="exact", metadata={
        "help": "how a candidate pair is decided: exact (the true Jaccard of the two shingle sets, for pairs "
                "whose estimate is within 0.2 of the threshold) or estimate (the signatures' share of equal "
                "minima, as datasketch does)"})
    bands: int | None = field(default=None, metadata={
        "help": "LSH bands; with rows, overrides the bands/rows chosen from the candidate threshold "
                "(bands*rows <= num_perm)"})
    rows: int | None = field(default=None, metadata={"help": "LSH rows per band (give with bands)"})
    false_positive_weight: float = field(default=0.1, metadata={
        "help": "weight of false positives when choosing bands/rows (candidates are verified, so they are cheap)"})
    false_negative_weight: float = field(default=0.9, metadata={
        "help": "weight of false negatives when choosing bands/rows (a pair LSH misses is never seen again)"})
    seed: int = field(default=1, metadata={"help": "seed of the hash functions"})
    lowercase: bool = field(default=True, metadata={"help": "fold case before shingling"})
    normalise_whitespace: bool = field(default=True, metadata={
        "help": "char shingles: collapse whitespace runs to one space and trim (word shingles always split on it)"})
    calibration_pairs: int = field(default=50, metadata={
        "help": "candidate pairs near the threshold kept with their true Jaccard, to inspect before dropping"})

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        def bad(msg: str) -> AssayError:
            return AssayError(f"minhash: {msg}")

        def is_int(v: Any) -> bool:
            return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

        def is_num(v: Any) -> bool:
            return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)

        if self.column not in ("text", "prompt", "response"):
            raise bad(f"column must be text, prompt or response, not {self.column!r}")
        if self.shingle not in ("word", "char"):
            raise bad(f"shingle must be word or char, not {self.shingle!r}")
        if not is_int(self.ngram) or not 1 <= self.ngram <= 64:
            raise bad(f"ngram must be an integer from 1 to 64, not {self.ngram!r}")
        if not is_int(self.num_perm) or not 2 <= self.num_perm <= 4096:
            raise bad(f"num_perm must be an integer from 2 to 4096, not {self.num_perm!r}")
        if not is_num(self.threshold) or not 0 < self.threshold <= 1:
            raise bad(f"threshold must be a number in (0, 1], not {self.threshold!r}")
        if self.candidate_threshold is not None and (
                not is_num(self.candidate_threshold) or not 0 < self.candidate_threshold <= 1):
            raise bad(f"candidate_threshold must be a number in (0, 1], not {self.candidate_threshold!r}")
        if self.verify not in ("exact", "estimate"):
            raise bad(f"verify must be exact or estimate, not {self.verify!r}")
        if (self.bands is None) != (self.rows is None):
            raise bad("give bands and rows together (or neither, to choose them from the threshold)")
        if self.bands is not None:
            if not is_int(self.bands) or not is_int(self.rows) or self.bands < 1 or self.rows < 1:
                raise bad(f"bands and rows must be positive integers, not {self.bands!r} x {self.rows!r}")
            if self.bands * self.rows > self.num_perm:
                raise bad(f"bands x rows = {self.bands * self.rows} exceeds num_perm = {self.num_perm}")
        for name in ("false_positive_weight", "false_negative_weight"):
            v = getattr(self, name)
            if not is_num(v) or v < 0:
                raise bad(f"{name} must be a number >= 0, not {v!r}")
        if self.false_positive_weight + self.false_negative_weight <= 0:
            raise bad("false_positive_weight and false_negative_weight cannot both be 0")
        if not is_int(self.seed) or self.seed < 0:
            raise bad(f"seed must be an integer >= 0, not {self.seed!r}")
        if not is_int(self.calibration_pairs) or self.calibration_pairs < 0:
            raise bad(f"calibration_pairs must be an integer >= 0, not {self.calibration_pairs!r}")


# ---- the auditor -----------------------------------------------------------------------------------

class _SignatureKey:
    """What the record cache is keyed by: the settings that change a signature (not the threshold,
    bands or calibration), so re-auditing at another threshold reuses every signature."""

    name = "minhash"

    def __init__(self, auditor: MinHashDuplicates):
        c = auditor.config
        self.fields = {"revision": auditor.revision, "column": c.column, "shingle": c.shingle, "ngram": c.ngram,
                       "num_perm": c.num_perm, "seed": c.seed, "lowercase": c.lowercase,
                       "normalise_whitespace": c.normalise_whitespace if c.shingle == "char" else None}

    def config_hash(self) -> str:
        blob = json.dumps({"auditor": self.name, "signature": self.fields}, sort_keys=True)
        return "sig-" + hashlib.blake2b(blob.encode(), digest_size=8).hexdigest()


class MinHashDuplicates(Auditor):
    name = "minhash"
    Config = MinHashConfig
    revision = 2  # 2: signatures cached as an Array(UInt32) column (was fixed-size binary)

    def candidate_threshold(self) -> float:
        c: MinHashConfig = self.config
        if c.candidate_threshold is not None:
            return float(c.candidate_threshold)
        return round(max(float(c.threshold) - CANDIDATE_MARGIN, 0.05), 6)

    def effective_bands_rows(self) -> tuple[int, int]:
        c: MinHashConfig = self.config
        if c.bands is not None and c.rows is not None:
            return int(c.bands), int(c.rows)
        return optimal_bands_rows(self.candidate_threshold(), int(c.num_perm), float(c.false_positive_weight),
                                  float(c.false_negative_weight))

    def validate(self) -> None:
        self.config.validate()

    def map_columns(self) -> list[str]:
        return [self.config.column]

    def map_key(self) -> _SignatureKey:
        return _SignatureKey(self)

    def map(self, records: pl.DataFrame) -> pl.DataFrame:
        """`id`, `minhash_sig` (the num_perm uint32 values, an Array column) and `shingles` (how many
        the record has) for the given rows."""
        c: MinHashConfig = self.config
        texts = records[c.column].cast(pl.String).fill_null("")
        # a few MB of text at a time: bounded memory, and arrays small enough to stay in cache
        cumulative = texts.str.len_bytes().cast(pl.Int64).cum_sum().to_numpy()
        total = int(cumulative[-1]) if cumulative.size else 0
        ends = np.searchsorted(cumulative, np.arange(_TEXT_CHUNK, total + _TEXT_CHUNK, _TEXT_CHUNK), side="right")
        cuts = np.unique(np.concatenate([[0], np.clip(ends, 1, None), [texts.len()]]))
        sig = np.empty((texts.len(), c.num_perm), dtype=np.uint32)
        shingles = np.empty(texts.len(), dtype=np.uint32)
        for lo, hi in zip(cuts[:-1], cuts[1:]):
            hashes, offsets = shingle_hashes(texts[int(lo):int(hi)], c)
            sig[lo:hi] = signatures(hashes, offsets, c.num_perm, c.seed)
            shingles[lo:hi] = np.diff(offsets)
        return pl.DataFrame({"id": records["id"], "minhash_sig": pl.Series(sig, dtype=pl.Array(pl.UInt32, c.num_perm)),
                             "shingles": shingles})

    def for_reduce(self, part: pl.DataFrame, ctx: AuditContext) -> pl.DataFrame:
        """On Ray, and locally for a version whose signatures are too many to hold, they stay in the
        record cache: the reduce gets each row's head key (8 bytes, to group exact copies) and
        shingle count, and reads the signatures part by part (see auditors/minhash_parts.py)."""
        if not signatures_stay_in_cache(ctx, self.config.num_perm):
            return part
        sig = self._checked(SignatureRows(part["minhash_sig"]))
        return pl.DataFrame({"minhash_head": head_keys(sig), "shingles": part["shingles"]})

    def _checked(self, sig: SignatureRows) -> SignatureRows:
        if sig.shape[1] != self.config.num_perm:
            raise AssayError(f"minhash: cached signatures are not {self.config.num_perm} values each; clear the "
                             f"workspace's cache/minhash folder")
        return sig

    def reduce(self, mapped: pl.DataFrame, rows: Rows, ctx: AuditContext) -> AuditResult:
        c: MinHashConfig = self.config
        bands, rows_per_band = self.effective_bands_rows()
        # signatures left in the record cache (on Ray, or too many to hold): band buckets grouped and
        # signature pairs compared part by part, in Ray tasks on Ray (auditors/minhash_parts.py)
        if "minhash_sig" not in mapped.columns:
            sig = PartSignatures(self, ctx, mapped["minhash_head"].to_numpy(), c.num_perm)
            candidates = sig.candidates
        else:
            sig, candidates = self._checked(SignatureRows(mapped["minhash_sig"])), local_candidates
        has_shingles = mapped["shingles"].to_numpy() > 0
        verify = None if c.verify == "estimate" else (lambda a, b: self._true_jaccard(rows, a, b))
        result = cluster(sig, has_shingles, bands, rows_per_band, float(c.threshold), verify, candidates)

        n = mapped.height
        label = result.label
        positions = np.arange(n)
        size = np.bincount(label, minlength=n)[label]
        duplicate = label != positions
        jaccard = np.ones(n)
        dup_rows = np.flatnonzero(duplicate)
        jaccard[dup_rows] = sig.matches(dup_rows, label[dup_rows]) / np.float64(c.num_perm)
        columns = pl.DataFrame({
            "minhash_cluster": label.astype(np.int64),
            "minhash_duplicate": duplicate,
            "minhash_jaccard": jaccard,
            "minhash_cluster_size": size.astype(np.int64),
            "minhash_no_shingles": ~has_shingles,
        })
        calibration = self._calibration(rows, result)
        counts = ctx.map_cache.get(self.name, {"hits": 0, "misses": 0})
        summary = self._summary(rows, columns, result, bands, rows_per_band, counts, calibration)
        return AuditResult(columns=columns, summary=summary, details={"calibration": calibration})

    def _true_jaccard(self, rows: Rows, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """The true Jaccard of each pair's shingle sets, the texts read from the version a batch of
        pairs at a time (bounded memory whatever the number of near pairs)."""
        column = self.config.column
        out = np.empty(left.size, dtype=np.float64)
        for s in range(0, left.size, VERIFY_BATCH):
            a, b = left[s:s + VERIFY_BATCH], right[s:s + VERIFY_BATCH]
            needed = _sorted_unique(np.concatenate([a, b]))
            texts = rows.at(needed, [column])[column]
            out[s:s + a.size] = exact_jaccard(texts, np.searchsorted(needed, a), np.searchsorted(needed, b),
                                              self.config)
        return out

    def _calibration(self, rows: Rows, result: _Clusters) -> pl.DataFrame:
        """A sample of candidate pairs with an estimated Jaccard near the threshold, with the true
        Jaccard of their shingle sets and both texts, to see false positives and negatives."""
        c: MinHashConfig = self.config
        t = float(c.threshold)
        near = np.flatnonzero(np.abs(result.pair_jaccard - t) <= CALIBRATION_WINDOW + 1e-12)
        if near.size > c.calibration_pairs:
            near = np.sort(np.random.default_rng(c.seed).choice(near, c.calibration_pairs, replace=False))
        left, right = result.pair_left[near], result.pair_right[near]
        true = result.pair_true[near]
        todo = np.flatnonzero(np.isnan(true))
        true[todo] = self._true_jaccard(rows, left[todo], right[todo])
        estimated = result.pair_jaccard[near]
        accepted = result.pair_accepted[near]
        truly = true >= t
        outcome = np.where(accepted, np.where(truly, "true positive", "false positive"),
                           np.where(truly, "false negative", "true negative"))
        a, b = rows.at(left, ["id", c.column]), rows.at(right, ["id", c.column])
        return pl.DataFrame({
            "pos_a": left.astype(np.int64), "pos_b": right.astype(np.int64),
            "id_a": a["id"], "id_b": b["id"],
            "estimated_jaccard": estimated, "true_jaccard": true, "accepted": accepted,
            "outcome": pl.Series(outcome, dtype=pl.String),
            "text_a": a[c.column].cast(pl.String).fill_null("").str.slice(0, TEXT_PREVIEW),
            "text_b": b[c.column].cast(pl.String).fill_null("").str.slice(0, TEXT_PREVIEW),
        }).sort("estimated_jaccard", "pos_a", "pos_b")

    def _summary(self, rows: Rows, columns: pl.DataFrame, result: _Clusters, bands: int, rows_per_band: int,
                 cache: dict[str, int], calibration: pl.DataFrame) -> dict[str, Any]:
        c: MinHashConfig = self.config
        n = columns.height
        dup = int(columns["minhash_duplicate"].sum())
        sizes = columns.filter(pl.col("minhash_cluster_size") > 1).group_by("minhash_cluster").agg(
            size=pl.len()).sort(["size", "minhash_cluster"], descending=[True, False])
        top = sizes.head(5)
        # each example cluster's first duplicate member, and both texts in one read
        shown = pl.col("minhash_cluster").is_in(top["minhash_cluster"].implode())
        firsts = (columns.with_row_index("pos").filter(pl.col("minhash_duplicate") & shown)
                  .group_by("minhash_cluster").agg(pl.col("pos").first(), pl.col("minhash_jaccard").first()))
        firsts = top.join(firsts, on="minhash_cluster", how="left", maintain_order="left")
        texts = rows.at(np.concatenate([top["minhash_cluster"].to_numpy(), firsts["pos"].to_numpy()]),
                        [c.column])[c.column].fill_null("").to_list()
        examples = [{"cluster": int(cl), "size": int(size), "text": texts[k][:300], "duplicate_pos": int(other),
                     "duplicate_text": texts[top.height + k][:300], "jaccard": float(jac)}
                    for k, (cl, size, other, jac) in enumerate(firsts.iter_rows())]
        return {
            "duplicate_records": dup,
            "duplicate_rate": dup / n if n else 0.0,
            "clusters": int(sizes.height),
            "largest_cluster": int(sizes["size"].max()) if sizes.height else 1,
            "no_shingle_records": int(columns["minhash_no_shingles"].sum()),
            "threshold": float(c.threshold),
            "bands": bands,
            "rows": rows_per_band,
            "lsh_threshold": round((1 / bands) ** (1 / rows_per_band), 4),  # where the banding's S-curve is steepest
            "candidate_pairs": result.candidate_pairs,
            "accepted_pairs": int(result.pair_accepted.sum()),
            "verified_pairs": int((~np.isnan(result.pair_true)).sum()),
            "verify": c.verify,
            "candidate_threshold": self.candidate_threshold(),
            "oversized_buckets": result.oversized,
            "signatures_computed": cache["misses"],
            "signatures_reused": cache["hits"],
            "calibration_pairs": calibration.height,
            "calibration_false_positives": int((calibration["outcome"] == "false positive").sum()),
            "calibration_false_negatives": int((calibration["outcome"] == "false negative").sum()),
            "examples": examples,
        }


__all__ = ["MinHashConfig", "MinHashDuplicates", "optimal_bands_rows", "shingle_hashes", "signatures",
           "union_find_min", "cluster"]
