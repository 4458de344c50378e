"""Benchmark contamination: records that contain (or rephrase) items of evaluation benchmarks.

Two tiers, run on one text view of every record (`column`, default `text` = prompt + response):

(a) n-gram overlap, as GPT-3's decontamination and lm-evaluation-harness do it: text normalised
    (lowercased, Unicode punctuation and symbols deleted, split on whitespace), every run of `ngram`
    consecutive tokens (13 by default) of the record looked up in the set of all benchmark n-grams; a
    record that shares at least `min_overlap` distinct n-grams (1 by default, as in GPT-3) is flagged.
    Fast path: n-grams are hashed to uint64 (a compiled numba kernel over the records' UTF-8 bytes,
    or Polars + numpy without numba) and looked up in a hash set of the benchmark n-gram hashes;
    records with a hit are then confirmed against the exact n-gram strings, so the flags and counts
    equal a plain Python set-of-n-grams scan (a hash collision cannot add a flag).
(b) embedding nearest neighbour, as lm-sys llm-decontaminator's first stage: cosine similarity of
    the record's embedding (the shared embedding cache, `auditors/embeddings.py`) to every benchmark
    item; at or above `threshold` the record is flagged. Catches rephrasings the n-grams miss.
(c) optionally, an LLM judge over the nearest neighbours (llm-decontaminator's second stage), through the
    project's LLM client: column `contamination_judge` (null where not judged or the call failed).

Per-record results depend only on the record, the loaded benchmark texts and the config, so they
are cached by record id under a namespace that includes a fingerprint of the benchmark texts.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from assay.core.errors import AssayError

from .base import AuditContext, Auditor, AuditResult
from .benchmarks import Benchmark, benchmark_items, fingerprint, load_benchmarks
from .embeddings import DEFAULT_MODEL, embed_records

@dataclass
class ContaminationConfig:
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
    threshold: float = field(default=0.85, metadata={
        "help": "cosine similarity at or above which the embedding tier flags a record"})
    model: str = field(default=DEFAULT_MODEL, metadata={
        "help": "sentence-transformers model of the embedding tier (name or local path)"})
    llm_judge: bool = field(default=False, metadata={
        "help": "ask an LLM whether each record and its nearest benchmark item are the same problem "
                "(llm-decontaminator's second stage); a 'same' verdict flags the record"})
    judge_min_similarity: float = field(default=0.6, metadata={
        "help": "records whose nearest benchmark item is at least this cosine-similar go to the judge"})
    judge_base_url: str | None = field(default=None, metadata={
        "help": "OpenAI-compatible endpoint for the judge (default: $ASSAY_LLM_BASE_URL, else the embedded server)"})
    judge_model: str | None = field(default=None, metadata={"help": "model name at that endpoint"})


# ---- the n-gram tier ---------------------------------------------------------------------------
#
# Normalisation (the reference semantics, as lm-evaluation-harness): `text.lower()`, every Unicode
# punctuation or symbol character (categories P*, S*) deleted, then `str.split()` (Unicode whitespace
# and \x1c-\x1f). Two engines compute the same flags:
# - "numba" (used when numba imports): one compiled pass over the UTF-8 bytes of a batch of records
#   that tokenises (ASCII rules; a record with any non-ASCII byte is first normalised by Polars with
#   the Unicode rules), hashes tokens and rolling n-grams, and probes a hash table of the benchmark
#   n-grams. Only records with a probe hit go on to the exact check.
# - "numpy" (fallback): Polars tokenises (Unicode regexes), numpy builds n-gram hashes from Polars'
#   token hashes with sliding windows, and a binary search in the sorted benchmark hashes finds hits.
# Either way a hit is only a candidate: the record's exact n-gram strings are compared with those of
# the benchmark items sharing its hashes, so flags and counts equal a plain set-of-n-grams scan.

PUNCT = r"[\p{P}\p{S}]"  # deleted, not replaced by a space: "don't" -> "dont", as the harness does
SPACE = r"[\s\x1c-\x1f]+"  # what str.split() splits on: Unicode whitespace plus \x1c-\x1f
MAX_NGRAM = 64


def tokenize(texts: pl.Series) -> pl.Series:
    """Normalised tokens per text; equals `text.lower().translate(<delete P*, S*>).split()`."""
    return (texts.fill_null("").str.to_lowercase().str.replace_all(PUNCT, "")
            .str.extract_all(r"[^\s\x1c-\x1f]+").fill_null([]))


def _normalise_text(texts: pl.Series) -> pl.Series:
    """The normalised text with single spaces between tokens (what the byte kernel gets for a
    record that is not pure ASCII: the kernel's ASCII rules leave it unchanged)."""
    return (texts.fill_null("").str.to_lowercase().str.replace_all(PUNCT, "")
            .str.replace_all(SPACE, " "))


def _ngram_strings(tokens: list[str], n: int) -> list[str]:
    return [" ".join(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


class _NumpyEngine:
    """Polars tokens, numpy n-gram hashes: sum_j hash(token_j) * M_j mod 2^64 over the n tokens."""

    name = "numpy"
    MULTIPLIERS = (np.random.default_rng(0x5EED_C0DE).integers(1, 2**62, size=MAX_NGRAM, dtype=np.uint64)
                   * np.uint64(2) + np.uint64(1))

    def grams(self, texts: pl.Series, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(hash, text index) of every n-gram of every text; texts shorter than n have none."""
        tokens = tokenize(texts)
        lengths = tokens.list.len().fill_null(0).to_numpy().astype(np.int64)
        flat = tokens.explode().drop_nulls()
        th = flat.hash(seed=0x1A55A7).to_numpy().astype(np.uint64, copy=False) if flat.len() else np.zeros(0, np.uint64)
        windows = th.size - n + 1
        if windows <= 0:
            return np.zeros(0, np.uint64), np.zeros(0, np.int64)
        grams = th[:windows] * self.MULTIPLIERS[0]
        tmp = np.empty_like(grams)
        for j in range(1, n):
            np.multiply(th[j:j + windows], self.MULTIPLIERS[j], out=tmp)
            grams += tmp  # wraps mod 2^64
        owner = np.repeat(np.arange(lengths.size, dtype=np.int64), lengths)
        valid = owner[:windows] == owner[n - 1:]  # the window does not cross into the next text
        return grams[valid], owner[:windows][valid]

    def prepare(self, index: "_BenchmarkIndex") -> None:
        pass

    def hits(self, texts: pl.Series, index: "_BenchmarkIndex") -> tuple[np.ndarray, np.ndarray]:
        """(text index, hash) of the n-grams whose hash is a benchmark n-gram hash."""
        grams, owner = self.grams(texts, index.n)
        hit = index.contains(grams)
        return owner[hit], grams[hit]


try:  # the compiled engine; without numba (or with a numba that does not fit this numpy) the fallback
    import numba as _nb

    _P = np.uint64(0x9E3779B97F4A7C15)
    _M = np.uint64(0xBF58476D1CE4E5B9)
    _SEED = np.uint64(0x243F6A8885A308D3)

    @_nb.njit(inline="always")
    def _nb_tokens(data, a, b, table, buf):
        """Raw token hashes of data[a:b] into buf; returns (token count, OR of the mapped bytes:
        >= 128 means the text is not pure ASCII). `table` maps a byte to 0 (deleted), 1 (space) or
        its lowercase. Branch-free: the token/space/deleted pattern of text defeats prediction."""
        m = 0
        h = _SEED
        in_token = False
        acc = 0
        for k in range(a, b):
            v = table[data[k]]
            acc |= v
            is_token = v > 1
            h2 = ((h << np.uint64(7)) | (h >> np.uint64(57))) ^ np.uint64(v)
            end = (v == 1) & in_token
            in_token = (in_token | is_token) & (v != 1)
            buf[m] = h  # the finished token's hash when `end` (a space does not change h)
            m += end
            h = h2 if is_token else (_SEED if end else h)  # nested: a 3-cycle dependency chain
        buf[m] = h
        m += in_token
        return m, acc

    @_nb.njit(inline="always")
    def _nb_ngram(g, buf, i, n, pn):
        """Roll the n-gram hash g (sum of token hash * P^k, k the distance from the window's end)
        forward by token i."""
        g = g * _P + buf[i]
        if i >= n:
            g -= buf[i - n] * pn
        return g

    @_nb.njit(inline="always")
    def _nb_final(g):
        g = (g ^ (g >> np.uint64(29))) * _M
        return (g ^ (g >> np.uint64(32))) | np.uint64(1)  # never 0: 0 marks an empty table slot

    @_nb.njit(cache=True, nogil=True)
    def _nb_emit(data, offsets, table, n, pn, out_hash, out_owner):
        """Every n-gram hash of every text (rolling polynomial over mixed token hashes), with the
        text's index; returns how many were written."""
        longest = 0
        for r in range(offsets.size - 1):
            longest = max(longest, offsets[r + 1] - offsets[r])
        buf = np.empty(longest + 2, np.uint64)
        written = 0
        for r in range(offsets.size - 1):
            m, _ = _nb_tokens(data, offsets[r], offsets[r + 1], table, buf)
            g = np.uint64(0)
            for i in range(m):
                g = _nb_ngram(g, buf, i, n, pn)
                if i >= n - 1:
                    out_hash[written] = _nb_final(g)
                    out_owner[written] = r
                    written += 1
        return written

    @_nb.njit(cache=True, nogil=True)
    def _nb_count(data, offsets, table, n, pn, grams, mask, bits, bshift, counts, flag_non_ascii):
        """counts[r]: how many of text r's n-gram hashes are in the open-addressing hash set
        `grams` (the bitmap `bits` first); -1 for a text with non-ASCII bytes when flag_non_ascii."""
        longest = 0
        for r in range(offsets.size - 1):
            longest = max(longest, offsets[r + 1] - offsets[r])
        buf = np.empty(longest + 2, np.uint64)
        for r in range(offsets.size - 1):
            m, acc = _nb_tokens(data, offsets[r], offsets[r + 1], table, buf)
            if flag_non_ascii and acc >= 128:
                counts[r] = -1
                continue
            found = 0
            g = np.uint64(0)
            for i in range(m):
                g = _nb_ngram(g, buf, i, n, pn)
                if i >= n - 1:
                    x = _nb_final(g)
                    bit = x >> bshift
                    if bits[bit >> np.uint64(3)] & (np.uint8(1) << np.uint8(bit & np.uint64(7))):
                        j = x & mask
                        while True:
                            y = grams[j]
                            if y == x:
                                found += 1
                                break
                            if y == 0:
                                break
                            j = (j + np.uint64(1)) & mask
            counts[r] = found

    @_nb.njit(cache=True, nogil=True)
    def _nb_table(grams, size):
        table = np.zeros(size, np.uint64)
        mask = np.uint64(size - 1)
        for x in grams:
            i = x & mask
            while table[i] != 0 and table[i] != x:
                i = (i + np.uint64(1)) & mask
            table[i] = x
        return table

    HAVE_NUMBA = True
except Exception:  # ImportError, or numba refusing this numpy version
    HAVE_NUMBA = False


def _byte_table() -> np.ndarray:
    """The kernel's byte map: ASCII punctuation and symbols -> 0 (deleted), the bytes str.split()
    splits on -> 1, A-Z -> a-z, anything else -> itself (bytes 0 and 1 -> 2: a hash may merge
    tokens, never split one; the exact check sorts that out)."""
    import string

    table = np.arange(256, dtype=np.uint8)
    table[65:91] += 32
    table[:2] = 2
    for ch in string.punctuation:
        table[ord(ch)] = 0
    for ch in "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f ":
        table[ord(ch)] = 1
    return table


def _power(n: int) -> np.uint64:
    """P^n mod 2^64, the factor that drops a token leaving the rolling n-gram window."""
    return np.uint64(pow(0x9E3779B97F4A7C15, n, 2**64))


def _utf8(texts: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """The UTF-8 bytes of all texts and their offsets (no copy beyond Polars' export to Arrow)."""
    import pyarrow as pa

    arr = texts.fill_null("").to_arrow(compat_level=pl.CompatLevel.oldest())
    if arr.type != pa.large_string():
        arr = arr.cast(pa.large_string())
    _, offsets, data = arr.buffers()
    off = np.frombuffer(offsets, np.int64)[arr.offset:arr.offset + len(arr) + 1]
    return (np.frombuffer(data, np.uint8) if data is not None else np.zeros(1, np.uint8)), off


class _NumbaEngine:
    name = "numba"
    BITMAP_BITS = 20  # a 128 KiB bitmap in front of the hash table: most probes stop there
    PARALLEL_BYTES = 4_000_000  # above this much text, one thread per core

    def __init__(self):
        self.table = _byte_table()

    def _kernel_ready(self, texts: pl.Series) -> pl.Series:
        non_ascii = texts.fill_null("").str.contains(r"[^\x00-\x7f]")
        if not non_ascii.any():
            return texts
        idx = non_ascii.arg_true()
        return texts.fill_null("").scatter(idx, _normalise_text(texts.gather(idx)))

    def grams(self, texts: pl.Series, n: int) -> tuple[np.ndarray, np.ndarray]:
        data, off = _utf8(self._kernel_ready(texts))
        size = int(off[-1] - off[0]) + 1
        out_hash, out_owner = np.empty(size, np.uint64), np.empty(size, np.int64)
        written = _nb_emit(data, off, self.table, n, _power(n), out_hash, out_owner)
        return out_hash[:written].copy(), out_owner[:written].copy()

    def prepare(self, index: "_BenchmarkIndex") -> None:
        size = 1 << max(4, int(2 * index.unique.size + 2).bit_length())
        index.table = _nb_table(index.unique, size)
        index.mask = np.uint64(size - 1)
        index.bshift = np.uint64(64 - self.BITMAP_BITS)
        present = np.zeros(1 << self.BITMAP_BITS, bool)
        present[(index.unique >> index.bshift).astype(np.int64)] = True
        index.bits = np.packbits(present, bitorder="little")  # 128 KiB: stays in the L2 cache

    def _counts(self, texts: pl.Series, index: "_BenchmarkIndex", flag_non_ascii: bool) -> np.ndarray:
        data, off = _utf8(texts)
        counts = np.zeros(texts.len(), np.int64)

        def scan(lo: int, hi: int) -> None:
            _nb_count(data, off[lo:hi + 1], self.table, index.n, _power(index.n), index.table, index.mask,
                      index.bits, index.bshift, counts[lo:hi], flag_non_ascii)

        parts = min(os.cpu_count() or 1, 8) if off[-1] - off[0] > self.PARALLEL_BYTES else 1
        if parts == 1:
            scan(0, texts.len())
            return counts
        # the kernel releases the GIL: threads over equal byte ranges of the records
        bounds = np.searchsorted(off, np.linspace(off[0], off[-1], parts + 1)).tolist()
        bounds[0], bounds[-1] = 0, texts.len()
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(parts) as pool:
            list(pool.map(scan, bounds[:-1], bounds[1:]))
        return counts

    def hits(self, texts: pl.Series, index: "_BenchmarkIndex") -> tuple[np.ndarray, np.ndarray]:
        counts = self._counts(texts, index, True)
        non_ascii = np.flatnonzero(counts < 0)
        if non_ascii.size:  # normalised by Polars first (Unicode rules), then the same kernel
            counts[non_ascii] = self._counts(_normalise_text(texts.gather(non_ascii)), index, False)
        candidates = np.flatnonzero(counts > 0)
        if not candidates.size:
            return np.zeros(0, np.int64), np.zeros(0, np.uint64)
        grams, owner = self.grams(texts.gather(candidates), index.n)
        hit = index.contains(grams)
        return candidates[owner[hit]], grams[hit]


DEFAULT_ENGINE: str | None = None  # None: numba when it imports; tests and the bench set "numpy"


def engine(name: str | None = None):
    """The n-gram engine: "numba" when available, else "numpy"; `name` forces one (tests, bench)."""
    name = name or DEFAULT_ENGINE or ("numba" if HAVE_NUMBA else "numpy")
    if name == "numba":
        if not HAVE_NUMBA:
            raise AssayError("contamination: the numba engine needs the 'numba' package")
        return _NumbaEngine()
    if name == "numpy":
        return _NumpyEngine()
    raise AssayError(f"contamination: unknown n-gram engine {name!r} (numba, numpy)")


class _BenchmarkIndex:
    """The benchmark side of the n-gram tier: sorted n-gram hashes with the item each comes from,
    and the exact n-gram strings of an item on demand (for confirming hits)."""

    def __init__(self, items: pl.DataFrame, n: int, eng=None):
        self.n = n
        self.engine = eng or engine()
        self.texts = items["text"]
        grams, owner = self.engine.grams(self.texts, n)
        order = np.lexsort((owner, grams))
        self.grams, self.owner = grams[order], owner[order]
        first = np.ones(self.grams.size, bool)
        first[1:] = self.grams[1:] != self.grams[:-1]
        self.unique = self.grams[first]
        self.engine.prepare(self)
        self._strings: dict[int, set[str]] = {}

    def contains(self, grams: np.ndarray) -> np.ndarray:
        if not self.unique.size:
            return np.zeros(grams.size, bool)
        pos = np.minimum(np.searchsorted(self.unique, grams), self.unique.size - 1)
        return self.unique[pos] == grams

    def items_of(self, grams: np.ndarray) -> np.ndarray:
        lo, hi = np.searchsorted(self.grams, grams, "left"), np.searchsorted(self.grams, grams, "right")
        return np.unique(np.concatenate([self.owner[a:b] for a, b in zip(lo.tolist(), hi.tolist())]))

    def strings(self, items: list[int]) -> dict[int, set[str]]:
        """item -> its exact n-gram strings, tokenising only items not seen before."""
        new = [i for i in items if i not in self._strings]
        if new:
            for i, tokens in zip(new, tokenize(self.texts.gather(new)).to_list()):
                self._strings[i] = set(_ngram_strings(tokens, self.n))
        return {i: self._strings[i] for i in items}


CHUNK_RECORDS = 100_000  # records scanned at once: bounds the memory of the n-gram tier
EXAMPLE_NGRAMS = 5  # matched n-grams kept per record as evidence


def ngram_matches(texts: pl.Series, index: _BenchmarkIndex) -> dict[int, tuple[int, int, list[str]]]:
    """text index -> (exact count of its distinct n-grams found in the benchmarks, best item (most
    shared n-grams, then the earliest), a few of the n-grams it shares with that item, in text
    order) for every text that shares at least one n-gram."""
    out: dict[int, tuple[int, int, list[str]]] = {}
    if index.unique.size == 0:
        return out
    for start in range(0, texts.len(), CHUNK_RECORDS):
        chunk = texts.slice(start, CHUNK_RECORDS)
        owner, grams = index.engine.hits(chunk, index)
        if not owner.size:
            continue
        # distinct (text, n-gram hash) hits, grouped by text
        pairs = np.unique(np.stack([owner.astype(np.uint64), grams], axis=1), axis=0)
        recs, first = np.unique(pairs[:, 0], return_index=True)
        tokens = tokenize(chunk.gather(recs.astype(np.int64))).to_list()
        candidates = [index.items_of(g).tolist() for g in np.split(pairs[:, 1], first[1:])]
        item_strings = index.strings(sorted({i for c in candidates for i in c}))
        for rec, rec_tokens, rec_items in zip(recs.tolist(), tokens, candidates):
            strings = _ngram_strings(rec_tokens, index.n)
            found: set[str] = set()
            best, best_shared = -1, set()
            for item in rec_items:  # ascending: ties go to the earlier item
                shared = item_strings[item].intersection(strings)
                if len(shared) > len(best_shared):
                    best, best_shared = item, shared
                found |= shared
            if found:  # else only a hash collision
                examples = [s for s in dict.fromkeys(strings) if s in best_shared][:EXAMPLE_NGRAMS]
                out[start + rec] = (len(found), best, examples)
    return out


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
    # evidence, kept in the cache but not among the audit columns
    "ngram_benchmark": pl.String,
    "ngram_item": pl.String,
    "ngram_examples": pl.List(pl.String),
    "nearest_benchmark": pl.String,
    "nearest_item": pl.String,
}
COLUMNS = [c for c in CACHE_SCHEMA if c.startswith("contamination_")]


JUDGE_PROMPT = Path(__file__).parent / "templates" / "contamination_judge.j2"


def _parse_verdict(reply: str) -> bool:
    """The judge's answer: JSON {"same": bool} where the endpoint gives it, else a leading yes/no."""
    from assay.core.llm import parse_json

    try:
        value = parse_json(reply)
        if isinstance(value, dict) and isinstance(value.get("same"), bool):
            return value["same"]
    except Exception:  # not JSON: read the words
        pass
    match = re.search(r"\b(yes|no|true|false)\b", (reply or "").lower())
    if not match:
        raise ValueError("the judge answered neither yes nor no")
    return match.group(1) in ("yes", "true")


class Contamination(Auditor):
    name = "contamination"
    Config = ContaminationConfig

    def __init__(self, config: ContaminationConfig | None = None):
        super().__init__(config)
        cfg: ContaminationConfig = self.config
        if cfg.llm_judge and not cfg.semantic:
            raise AssayError("contamination: the LLM judge reads the embedding tier's nearest items: "
                             "turn semantic on, or llm_judge off")
        if cfg.column not in ("text", "prompt", "response"):
            raise AssayError(f"contamination: column must be text, prompt or response, not {cfg.column!r}")
        if isinstance(cfg.benchmarks, str):
            cfg.benchmarks = [cfg.benchmarks]
        if not isinstance(cfg.ngram, int) or not 1 <= cfg.ngram <= MAX_NGRAM:
            raise AssayError(f"contamination: ngram must be an integer from 1 to {MAX_NGRAM}, not {cfg.ngram!r}")
        if not isinstance(cfg.min_overlap, int) or cfg.min_overlap < 1:
            raise AssayError(f"contamination: min_overlap must be an integer >= 1, not {cfg.min_overlap!r}")
        if not isinstance(cfg.threshold, (int, float)) or not 0 < cfg.threshold <= 1:
            raise AssayError(f"contamination: threshold must be a cosine similarity in (0, 1], not {cfg.threshold!r}")

    def run(self, records: pl.DataFrame, ctx: AuditContext) -> AuditResult:
        cfg: ContaminationConfig = self.config
        benchmarks = load_benchmarks(list(cfg.benchmarks))
        items = benchmark_items(benchmarks)
        state: dict = {}

        def index() -> _BenchmarkIndex:
            if "index" not in state:
                state["index"] = _BenchmarkIndex(items, cfg.ngram)
            return state["index"]

        cache = ctx.cached(self, fingerprint(items))
        found = cache.get_or_compute(records.select("id", cfg.column),
                                     lambda missing: self._compute(missing, items, index(), ctx))
        columns = found.select(COLUMNS)
        summary = self._summary(found, records, benchmarks, items, cache.hits)
        if cfg.llm_judge:
            verdicts, judge_summary = self._judge(found, records, items, ctx)
            columns = columns.with_columns(contamination_judge=verdicts).with_columns(
                contamination_flagged=pl.col("contamination_flagged") | pl.col("contamination_judge").fill_null(False))
            summary["judge"] = judge_summary
            summary["flagged_records"] = int(columns["contamination_flagged"].sum())
        details = {"evidence": self._evidence(found, records, items),
                   "near_misses": self._near_misses(found, records, items)}
        return AuditResult(columns=columns, summary=summary, details=details)

    # per record ------------------------------------------------------------------------------

    def _compute(self, missing: pl.DataFrame, items: pl.DataFrame, index: _BenchmarkIndex,
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
        if cfg.semantic:
            similarity, nearest = self._nearest(missing, items, ctx)
        semantic_flag = similarity >= cfg.threshold  # NaN (tier off) compares False

        chosen = np.where(ngram_flag, ngram_best, np.where(semantic_flag, nearest, -1))

        def pick(values: list[str], idx: np.ndarray) -> list[str | None]:
            return [values[i] if i >= 0 else None for i in idx.tolist()]

        return pl.DataFrame({
            "id": missing["id"],
            "contamination_flagged": ngram_flag | semantic_flag,
            "contamination_ngram": ngram_flag,
            "contamination_semantic": semantic_flag,
            "contamination_benchmark": pick(bench_names, chosen),
            "contamination_item": pick(item_ids, chosen),
            "contamination_similarity": [None if np.isnan(s) else round(float(s), 6) for s in similarity],
            "contamination_matched_ngrams": matched,
            "ngram_benchmark": pick(bench_names, ngram_best),
            "ngram_item": pick(item_ids, ngram_best),
            "ngram_examples": examples,
            "nearest_benchmark": pick(bench_names, nearest),
            "nearest_item": pick(item_ids, nearest),
        }, schema=CACHE_SCHEMA)

    def _nearest(self, missing: pl.DataFrame, items: pl.DataFrame, ctx: AuditContext) -> tuple[np.ndarray, np.ndarray]:
        """Cosine similarity to, and index of, every record's nearest benchmark item."""
        import hashlib

        cfg: ContaminationConfig = self.config
        # benchmark items go through the same embedding cache, keyed by a hash of their text
        keyed = pl.DataFrame({
            "id": [hashlib.blake2b(t.encode("utf-8"), digest_size=16).hexdigest() for t in items["text"].to_list()],
            "benchmark_text": items["text"]})
        bench = embed_records(ctx, keyed, "benchmark_text", cfg.model)
        vectors = embed_records(ctx, missing, cfg.column, cfg.model)
        sims = np.empty(missing.height, dtype=np.float64)
        nearest = np.empty(missing.height, dtype=np.int64)
        for start in range(0, missing.height, 4096):
            block = vectors[start:start + 4096] @ bench.T
            nearest[start:start + 4096] = block.argmax(axis=1)
            sims[start:start + 4096] = block.max(axis=1)
        return np.clip(sims, -1.0, 1.0), nearest

    # tier (c): the LLM judge -------------------------------------------------------------------

    def _judge(self, found: pl.DataFrame, records: pl.DataFrame, items: pl.DataFrame,
               ctx: AuditContext) -> tuple[pl.Series, dict]:
        """Ask the LLM about every record whose nearest benchmark item is close enough. Calls go
        through the LLM layer's journal and cache (run `contamination-judge-<version>`), so a
        re-audit asks nothing twice; a failed call leaves the verdict null and is listed with its
        raw reply by `assay runs show RUN --failures`."""
        from jinja2 import Template

        from assay.core.llm import LLMClient, LLMConfig, Request

        cfg: ContaminationConfig = self.config
        texts = dict(zip(zip(items["benchmark"].to_list(), items["item"].to_list()), items["text"].to_list()))
        frame = found.select("id", "contamination_similarity", "nearest_benchmark", "nearest_item").with_columns(
            text=records[cfg.column])
        candidates = frame.filter(pl.col("contamination_similarity") >= cfg.judge_min_similarity).unique(
            ["id", "nearest_item"], keep="first", maintain_order=True)
        prompt = Template(JUDGE_PROMPT.read_text(encoding="utf-8"))
        requests = [Request(key=f"{r['id']}:{r['nearest_benchmark']}:{r['nearest_item']}",
                            messages=[{"role": "user", "content": prompt.render(
                                record=r["text"][:4000],
                                item=texts[(r["nearest_benchmark"], r["nearest_item"])][:4000])}],
                            params={"max_tokens": 64}, parse=_parse_verdict)
                    for r in candidates.iter_rows(named=True)]
        run_id = f"contamination-judge-{ctx.version_id[:16]}"
        llm = LLMConfig(**{k: v for k, v in (("base_url", cfg.judge_base_url), ("model", cfg.judge_model))
                           if v is not None}, temperature=0.0, seed=0)
        results = LLMClient(llm).run_batch(run_id, requests, ctx.store) if requests else []
        verdict = {r.key: (r.value if r.ok else None) for r in results}
        keys = frame.select(pl.concat_str(["id", "nearest_benchmark", "nearest_item"], separator=":"))[:, 0]
        eligible = (frame["contamination_similarity"] >= cfg.judge_min_similarity).fill_null(False)
        values = [verdict.get(k) if ok else None for k, ok in zip(keys.to_list(), eligible.to_list())]
        series = pl.Series("contamination_judge", values, dtype=pl.Boolean)
        return series, {"run_id": run_id, "judged": len(requests), "same": sum(1 for r in results if r.ok and r.value),
                        "failed": sum(1 for r in results if not r.ok)}

    # summary and details ---------------------------------------------------------------------

    def _summary(self, found: pl.DataFrame, records: pl.DataFrame, benchmarks: list[Benchmark],
                 items: pl.DataFrame, cached: int) -> dict:
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
        texts = records[cfg.column]
        examples = []
        pos = np.flatnonzero(found["contamination_flagged"].to_numpy())
        for p in pos[:5].tolist():
            r = found.row(p, named=True)
            examples.append({"row": p, "benchmark": r["contamination_benchmark"], "item": r["contamination_item"],
                             "tier": _tier(r), "matched_ngrams": r["contamination_matched_ngrams"],
                             "ngrams": r["ngram_examples"][:2], "similarity": r["contamination_similarity"],
                             "text": texts[p][:300]})
        return {
            "flagged_records": flagged.height,
            "flagged_rate": flagged.height / max(found.height, 1),
            "ngram_records": int(found["contamination_ngram"].sum()),
            "semantic_records": int(found["contamination_semantic"].sum()),
            "semantic_only_records": int((found["contamination_semantic"] & ~found["contamination_ngram"]).sum()),
            "benchmark_items": items.height,
            "benchmark_fingerprint": fingerprint(items),
            "cached_records": cached,
            "benchmarks": per,
            "examples": examples,
        }

    def _joined(self, found: pl.DataFrame, records: pl.DataFrame) -> pl.DataFrame:
        cfg: ContaminationConfig = self.config
        return found.with_columns(record_text=records[cfg.column]).with_row_index("row")

    def _evidence(self, found: pl.DataFrame, records: pl.DataFrame, items: pl.DataFrame) -> pl.DataFrame:
        """One row per flagged record: the benchmark item beside the record, and why."""
        bench = items.select(pl.col("benchmark").alias("contamination_benchmark"),
                             pl.col("item").alias("contamination_item"), pl.col("text").alias("benchmark_text"))
        flagged = self._joined(found, records).filter(pl.col("contamination_flagged"))
        tier = (pl.when(pl.col("contamination_ngram") & pl.col("contamination_semantic")).then(pl.lit("ngram+semantic"))
                .when(pl.col("contamination_ngram")).then(pl.lit("ngram")).otherwise(pl.lit("semantic")))
        return flagged.join(bench, on=["contamination_benchmark", "contamination_item"], how="left",
                            maintain_order="left").select(
            "row", "id", tier.alias("tier"),
            pl.col("contamination_benchmark").alias("benchmark"), pl.col("contamination_item").alias("item"),
            "benchmark_text", "record_text",
            pl.col("contamination_matched_ngrams").alias("matched_ngrams"),
            pl.col("ngram_examples").alias("ngrams"),
            pl.col("contamination_similarity").alias("similarity"))

    def _near_misses(self, found: pl.DataFrame, records: pl.DataFrame, items: pl.DataFrame) -> pl.DataFrame:
        """Unflagged records closest to being flagged (similarity within 0.1 of the threshold, or some
        shared n-grams below min_overlap), to calibrate the threshold: at most 50, closest first."""
        cfg: ContaminationConfig = self.config
        bench = items.select(pl.col("benchmark").alias("near_benchmark"), pl.col("item").alias("near_item"),
                             pl.col("text").alias("benchmark_text"))
        by_ngram = pl.col("contamination_matched_ngrams") > 0  # shared n-grams: show that item, else the nearest
        near = self._joined(found, records).with_columns(
            near_benchmark=pl.when(by_ngram).then("ngram_benchmark").otherwise("nearest_benchmark"),
            near_item=pl.when(by_ngram).then("ngram_item").otherwise("nearest_item"),
        ).filter(
            ~pl.col("contamination_flagged")
            & ((pl.col("contamination_similarity") >= cfg.threshold - 0.1) | (pl.col("contamination_matched_ngrams") > 0)))
        near = near.sort(["contamination_matched_ngrams", "contamination_similarity"], descending=True,
                         nulls_last=True).head(50)
        return near.join(bench, on=["near_benchmark", "near_item"], how="left", maintain_order="left").select(
            "row", "id", pl.col("near_benchmark").alias("benchmark"), pl.col("near_item").alias("item"),
            "benchmark_text", "record_text", pl.col("contamination_similarity").alias("similarity"),
            pl.col("contamination_matched_ngrams").alias("matched_ngrams"), pl.col("ngram_examples").alias("ngrams"))


def _tier(row: dict) -> str:
    if row["contamination_ngram"] and row["contamination_semantic"]:
        return "ngram+semantic"
    return "ngram" if row["contamination_ngram"] else "semantic"
