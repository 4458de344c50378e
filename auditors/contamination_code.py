"""The contamination auditor's code tier: canonical-token shingles of a record's code against those of
every benchmark item's code (its solution with its prompt; its prompt alone where the benchmark has no
solutions).

Per batch (pure, so it runs on any engine): the code of each record is extracted (fenced blocks, else
its run of code lines, auditors/code_canon.py) and canonicalised; the canonical stream, with every
renamed identifier as one placeholder `v` (numbering by first appearance shifts every later name when a
rephrasing adds or reorders one variable), is cut into word shingles of `code_ngram` tokens and hashed
by the MinHash auditor's shingler (auditors/minhash_signatures.py). The benchmark side is small (a few
hundred items), so every record's exact Jaccard to every item that shares a shingle comes from one
sorted-array join of the record shingles against an inverted index of the item shingles, not from a
MinHash estimate. Each record keeps its best item and its `code_candidates` best items above
`code_threshold - 0.2`: `reduce` turns those into each benchmark item's top records.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

import numpy as np
import polars as pl

from .code_canon import Canonical, canonicalise, extract_code, may_hold_code
from .minhash import MinHashConfig
from .minhash_signatures import shingle_hashes

_RENAMED = re.compile(r"^v\d+$")
PAIR_BUDGET = 1 << 22  # (record, item) shingle pairs scored at once: ~100 MB of temporaries
CANDIDATE_MARGIN = 0.2  # candidates: Jaccard within this of the threshold (to calibrate, and for the judge)

CODE_SCHEMA = {
    "contamination_code": pl.Boolean,
    "contamination_code_similarity": pl.Float64,
    "code_item_index": pl.Int32,  # position in the loaded items of the best code match; null: none
    "code_candidates": pl.List(pl.Int32),
    "code_candidate_scores": pl.List(pl.Float32),
    "code_found": pl.Boolean,  # the record has code
    "code_fallback": pl.Boolean,  # its code did not parse as Python: token-level canonical form
}


def shingle_text(tokens: list[str]) -> str:
    """The canonical tokens as the text the word shingler reads: renamed identifiers all `v`."""
    return " ".join("v" if _RENAMED.match(t) else t for t in tokens)


@dataclass
class CodeView:
    """An item's code view: which part of the item it came from."""
    source: str  # solution, prompt or none
    code: str


def item_code(text: str, code: str | None) -> CodeView:
    if code:
        return CodeView("solution", code)
    found = extract_code(text)
    return CodeView("prompt", found) if found else CodeView("none", "")


class CodeIndex:
    """The benchmark items' canonical shingles, inverted: sorted unique hashes -> the items holding them."""

    def __init__(self, items: pl.DataFrame, ngram: int):
        self.ngram = ngram
        codes = items["code"].to_list() if "code" in items.columns else [None] * items.height
        self.views = [item_code(t, c) for t, c in zip(items["text"].to_list(), codes)]
        texts = [shingle_text(canonicalise(v.code).tokens) if v.code else "" for v in self.views]
        rec, hashes = _unique_shingles(pl.Series(texts, dtype=pl.String), ngram)
        self.sizes = np.bincount(rec, minlength=items.height).astype(np.int64)
        order = np.lexsort((rec, hashes))
        hashes, rec = hashes[order], rec[order]
        self.keys, starts = np.unique(hashes, return_index=True)
        self.ptr = np.append(starts, hashes.size).astype(np.int64)
        self.owner = rec.astype(np.int64)
        self.items = items.height

    def _score(self, rec, pos, per, sizes, threshold, candidates, best_sim, best_item, cand_items, cand_scores):
        """Exact Jaccard of every (record, item) pair sharing a shingle, for hits of whole records."""
        pair_rec = np.repeat(rec, per)
        # the owners of each hit: its run of the inverted index, laid out back to back
        run_start = np.repeat(self.ptr[pos] - np.cumsum(per) + per, per)
        pair_item = self.owner[run_start + np.arange(per.sum())]
        keys, inter = np.unique(pair_rec * self.items + pair_item, return_counts=True)
        r, i = keys // self.items, keys % self.items
        sim = inter / (sizes[r] + self.sizes[i] - inter)
        order = np.lexsort((i, -sim, r))  # by record, best first (ties: the earlier item)
        r, i, sim = r[order], i[order], sim[order]
        first = np.flatnonzero(np.r_[True, r[1:] != r[:-1]])
        best_sim[r[first]], best_item[r[first]] = sim[first], i[first]
        rank = np.arange(r.size) - np.repeat(first, np.diff(np.r_[first, r.size]))
        keep = (sim >= threshold - CANDIDATE_MARGIN) & (rank < candidates)
        for rr, ii, ss in zip(r[keep].tolist(), i[keep].tolist(), sim[keep].tolist()):
            cand_items[rr].append(ii)
            cand_scores[rr].append(ss)

    def match(self, texts: pl.Series, threshold: float, candidates: int) -> pl.DataFrame:
        """CODE_SCHEMA columns for each text."""
        n = texts.len()
        maybe = may_hold_code(texts).to_list()
        codes = [extract_code(t) if m else "" for t, m in zip(texts.fill_null("").to_list(), maybe, strict=True)]
        memo: dict[str, Canonical] = {}  # duplicated code (copies, templated answers) is canonicalised once
        canon = [memo[c] if c in memo else memo.setdefault(c, canonicalise(c)) for c in codes]
        found = np.array([bool(c.tokens) for c in canon])
        fallback = np.array([c.fallback for c in canon])
        rec, hashes = _unique_shingles(pl.Series([shingle_text(c.tokens) for c in canon], dtype=pl.String),
                                       self.ngram)
        sizes = np.bincount(rec, minlength=n).astype(np.int64)
        best_sim = np.zeros(n)
        best_item = np.full(n, -1, dtype=np.int64)
        cand_items: list[list[int]] = [[] for _ in range(n)]
        cand_scores: list[list[float]] = [[] for _ in range(n)]
        if hashes.size and self.keys.size:
            pos = np.minimum(np.searchsorted(self.keys, hashes), self.keys.size - 1)
            hit = self.keys[pos] == hashes
            rec, pos = rec[hit], pos[hit]
            per = self.ptr[pos + 1] - self.ptr[pos]  # items holding each shared shingle
            # common shingles (`) : NL IN`) are in most items: the (record, item) pairs are cut into
            # chunks of whole records, so memory stays bounded on a batch of any size
            ends = np.cumsum(per)  # pairs up to and including each hit
            run_end = np.r_[np.flatnonzero(rec[1:] != rec[:-1]) + 1, rec.size]  # hits: records are runs
            pairs_at = ends[run_end - 1] if rec.size else ends
            start = 0
            while start < rec.size:
                done = ends[start - 1] if start else 0
                fits = int(np.searchsorted(pairs_at, done + PAIR_BUDGET, "right"))  # runs within the budget
                own = int(run_end[np.searchsorted(run_end, start, "right")])  # at least the next record
                stop = max(own, int(run_end[fits - 1]) if fits else 0)
                self._score(rec[start:stop], pos[start:stop], per[start:stop], sizes, threshold, candidates,
                            best_sim, best_item, cand_items, cand_scores)
                start = stop
        return pl.DataFrame({
            "contamination_code": best_sim >= threshold,
            "contamination_code_similarity": np.where(found, np.round(best_sim, 6), np.nan),
            "code_item_index": np.where(best_item >= 0, best_item, -1),
            "code_candidates": cand_items,
            "code_candidate_scores": cand_scores,
            "code_found": found,
            "code_fallback": fallback,
        }, schema=CODE_SCHEMA).with_columns(
            contamination_code_similarity=pl.col("contamination_code_similarity").fill_nan(None),
            code_item_index=pl.when(pl.col("code_item_index") >= 0).then(pl.col("code_item_index")))


def _unique_shingles(texts: pl.Series, ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """(owner text of each distinct shingle, its 64-bit hash): empty texts have none."""
    cfg = MinHashConfig(shingle="word", ngram=ngram, lowercase=False)
    hashes, offsets = shingle_hashes(texts, cfg)
    counts = np.diff(offsets)
    rec = np.repeat(np.arange(counts.size, dtype=np.int64), counts)
    empty = (texts.str.len_bytes().fill_null(0) == 0).to_numpy()
    keep = ~empty[rec]
    rec, hashes = rec[keep], hashes[keep]
    order = np.lexsort((hashes, rec))
    rec, hashes = rec[order], hashes[order]
    distinct = np.r_[True, (rec[1:] != rec[:-1]) | (hashes[1:] != hashes[:-1])] if rec.size else np.zeros(0, bool)
    return rec[distinct], hashes[distinct]


def canonical_overlap(record_text: str, item_code_text: str) -> dict:
    """For the evidence: both canonical forms' longest shared run of tokens and the share of the item's
    canonical tokens that line up with the record's."""
    a = canonicalise(extract_code(record_text)).tokens
    b = canonicalise(item_code_text).tokens
    a_s, b_s = shingle_text(a).split(), shingle_text(b).split()
    matcher = difflib.SequenceMatcher(None, a_s, b_s, autojunk=False)
    longest = matcher.find_longest_match(0, len(a_s), 0, len(b_s))
    matched = sum(block.size for block in matcher.get_matching_blocks())
    return {"record_canonical": " ".join(a)[:2000], "item_canonical": " ".join(b)[:2000],
            "aligned_item_tokens": round(matched / max(len(b_s), 1), 4),
            "longest_shared_run": " ".join(a_s[longest.a:longest.a + longest.size])[:500]}
