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
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import polars as pl

from assay.core.errors import AssayError

from .base import AuditContext, Auditor, AuditResult

U64 = np.uint64
MAX_BUCKET_PAIRS_SIZE = 500  # all pairs up to this many distinct signatures in one band bucket
CALIBRATION_WINDOW = 0.15  # calibration pairs have an estimated Jaccard within threshold +- this
# verify="exact" checks the true Jaccard of candidates whose estimate is within this of the threshold:
# 0.2 is over 4.5 standard deviations of a 128-value estimate, so a pair outside it is on the side
# its estimate says with probability > 0.99999
VERIFY_MARGIN = 0.2
CANDIDATE_MARGIN = 0.1  # default candidate_threshold = threshold - this
TEXT_PREVIEW = 500
_SIG_BATCH = 1 << 18  # shingles per signature batch (1 MB of uint32): stays in cache
_THREADS = min(4, os.cpu_count() or 1)  # signature batches computed at once
_TEXT_CHUNK = 4 << 20  # bytes of text shingled and signed at a time
_PAIR_CHUNK = 1 << 17  # pairs compared at once when estimating Jaccard

_BYTE_MASKS = np.array([(1 << (8 * i)) - 1 for i in range(8)] + [2**64 - 1], dtype=np.uint64)
_WORD_BYTE = np.array([c >= 0x80 or chr(c).isalnum() or c == 0x5F for c in range(256)], dtype=bool)
_B = U64(0xD1B54A32D192ED03)  # odd base of the n-gram polynomial
_B_POW = {k: U64(pow(int(_B), k, 2**64)) for k in (1, 2, 4, 8, 16, 32, 64)}


@dataclass
class MinHashConfig:
    column: str = field(default="text", metadata={"help": "text compared: text (prompt + response), prompt or response"})
    shingle: str = field(default="word", metadata={
        "help": "shingle unit: word (runs of letters/digits; punctuation separates) or char (for unspaced scripts)"})
    ngram: int = field(default=5, metadata={
        "help": "words (or characters) per shingle; 5 words: one edited word in a 100-word text keeps Jaccard ~0.9, "
                "while shared stock phrases do not make different texts look alike"})
    num_perm: int = field(default=128, metadata={"help": "hash functions per signature (Jaccard estimate sd ~ 0.035 at 0.8)"})
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
        "help": "LSH bands; with rows, overrides the bands/rows chosen from the candidate threshold (bands*rows <= num_perm)"})
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


# ---- LSH parameters -------------------------------------------------------------------------------

def optimal_bands_rows(threshold: float, num_perm: int, false_positive_weight: float = 0.5,
                       false_negative_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows) minimising fp_weight * P(candidate | s < threshold) + fn_weight * P(miss | s >= t),
    both integrated over s uniform, over all bands*rows <= num_perm: datasketch's `_optimal_param`
    (same search order, first minimum wins), with exact quadrature instead of scipy's `quad`."""
    pairs = [(b, r) for b in range(1, num_perm + 1) for r in range(1, num_perm // b + 1)]
    bands = np.array([p[0] for p in pairs], dtype=np.float64)[:, None]
    rows = np.array([p[1] for p in pairs], dtype=np.float64)[:, None]
    # 1 - (1 - s^r)^b is a polynomial of degree b*r <= num_perm: exact with num_perm/2 + 1 nodes
    nodes, weights = np.polynomial.legendre.leggauss(num_perm // 2 + 2)

    def integral(lo: float, hi: float, false_negative: bool, part: slice) -> np.ndarray:
        if hi <= lo:
            return np.zeros(bands[part].shape[0])
        s = (hi - lo) / 2 * nodes[None, :] + (hi + lo) / 2
        p = 1 - (1 - s ** rows[part]) ** bands[part]
        return ((1 - p) if false_negative else p) @ weights * (hi - lo) / 2

    error = np.empty(len(pairs))
    for s in range(0, len(pairs), 2048):  # bounded memory for large num_perm
        part = slice(s, s + 2048)
        error[part] = (false_positive_weight * integral(0.0, threshold, False, part)
                       + false_negative_weight * integral(threshold, 1.0, True, part))
    return pairs[int(np.argmin(error))]


# ---- shingles and their hashes --------------------------------------------------------------------

def _fmix64(x: np.ndarray) -> np.ndarray:
    """murmur3's 64-bit finaliser, in place on a uint64 array (returned)."""
    x ^= x >> U64(33)
    x *= U64(0xFF51AFD7ED558CCD)
    x ^= x >> U64(33)
    x *= U64(0xC4CEB9FE1A85EC53)
    x ^= x >> U64(33)
    return x


def _utf8(texts: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """The UTF-8 bytes of all texts, back to back, and the (n+1) byte offsets of the texts."""
    arr = texts.to_arrow(compat_level=pl.CompatLevel.oldest())
    import pyarrow as pa

    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if arr.type != pa.large_string():
        arr = arr.cast(pa.large_string())
    _, offsets_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int64, count=len(arr) + 1, offset=arr.offset * 8)
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    data = data[offsets[0]:offsets[-1]]
    return data, offsets - offsets[0]


def _mix(x: np.ndarray) -> np.ndarray:
    """A cheap bijection on uint64 (multiply, then fold the high half down), in place."""
    x *= U64(0x9E3779B97F4A7C15)
    x ^= x >> U64(32)
    return x


def _span_hashes(data: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """A 64-bit value per byte span data[start:start+length] (length >= 1), read 8 bytes at a time.
    Spans hold no NUL byte, so a span of up to 8 bytes maps to a distinct value (the map is a
    bijection of its zero-padded bytes); longer spans chain 8-byte chunks through the mixer."""
    n = data.size
    padded = np.zeros(n + 8, dtype=np.uint8)
    padded[:n] = data
    words = np.ndarray((n + 1,), dtype="<u8", buffer=padded, strides=(1,))  # unaligned 8-byte reads
    h = words[starts]
    h &= _BYTE_MASKS[np.minimum(lengths, 8)]
    h = _mix(h)
    longer = np.flatnonzero(lengths > 8)
    done = 8
    while longer.size:
        rest = lengths[longer] - done
        chunk = words[starts[longer] + done] & _BYTE_MASKS[np.minimum(rest, 8)]
        h[longer] = _mix(_mix(h[longer]) ^ chunk)
        longer = longer[rest > 8]
        done += 8
    return h


def _polynomial(values: np.ndarray, n: int) -> np.ndarray:
    """out[i] = sum_j B^(n-1-j) * values[i+j] (mod 2^64) for every i (values past the end count as 0),
    by doubling: about log2(n) + popcount(n) multiplications instead of n."""
    total = values.size
    # runs[k] = R_k with R_k[i] = sum_{j<k} B^(k-1-j) values[i+j], for k = 1, 2, 4, ... <= n
    runs = {1: values}
    k = 1
    while 2 * k <= n:
        r = runs[k]
        nxt = r * _B_POW[k]
        nxt[:-k] += r[k:]
        runs[2 * k] = nxt
        k *= 2
    out, have = None, 0
    for k in sorted(runs, reverse=True):
        if have + k <= n:
            if out is None:
                out = runs[k].copy() if k == 1 else runs[k]
            else:  # R_{have+k}[i] = R_have[i] * B^k + R_k[i + have]
                out *= _B_POW[k]
                out[:total - have] += runs[k][have:]
            have += k
    return out


def _windows(counts: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For units (words or characters) grouped per record with `counts`, the shingle windows:
    (first unit of each window relative to its record, record-local window length, shingle offsets).
    A record with fewer than n units has one window of all of them; one with none has no window."""
    per = np.where(counts >= n, counts - n + 1, np.minimum(counts, 1))
    offsets = np.zeros(counts.size + 1, dtype=np.int64)
    np.cumsum(per, out=offsets[1:])
    local = np.arange(offsets[-1], dtype=np.int64) - np.repeat(offsets[:-1], per)
    length = np.repeat(np.minimum(counts, n), per)
    return local, length, offsets


def shingle_hashes(texts: pl.Series, config: MinHashConfig) -> tuple[np.ndarray, np.ndarray]:
    """(64-bit hash of every shingle of every text, back to back; the n+1 offsets per text).
    Duplicated shingles within a text are kept (they change no minimum)."""
    texts = texts.cast(pl.String).fill_null("")
    if config.lowercase:
        texts = texts.str.to_lowercase()
    n = config.ngram
    if config.shingle == "char":
        if config.normalise_whitespace:
            texts = texts.str.replace_all(r"\s+", " ").str.strip_chars()
        data, offsets = _utf8(texts)
        # code point starts: every byte that is not a UTF-8 continuation byte
        cp = np.flatnonzero((data & np.uint8(0xC0)) != np.uint8(0x80))
        cp_offsets = np.searchsorted(cp, offsets)
        cp_end = np.append(cp, data.size)
        local, length, sh_offsets = _windows(np.diff(cp_offsets), n)
        first = np.repeat(cp_offsets[:-1], np.diff(sh_offsets)) + local
        begin = cp_end[first]
        return _span_hashes(data, begin, cp_end[first + length] - begin), sh_offsets
    # words: a trailing separator per text, so no word runs from one text into the next
    data, offsets = _utf8(texts + " ")
    is_word = _WORD_BYTE[data]
    edge = np.empty(data.size, dtype=bool)
    edge[:1] = is_word[:1]
    np.not_equal(is_word[1:], is_word[:-1], out=edge[1:])
    bounds = np.flatnonzero(edge)  # start, end, start, end, ...: every text ends in a separator
    starts, ends = bounds[0::2], bounds[1::2]
    word_hash = _span_hashes(data, starts, ends - starts)
    word_offsets = np.searchsorted(starts, offsets)
    counts = np.diff(word_offsets)
    per = np.where(counts >= n, counts - n + 1, np.minimum(counts, 1))
    sh_offsets = np.zeros(counts.size + 1, dtype=np.int64)
    np.cumsum(per, out=sh_offsets[1:])
    # full n-grams: a polynomial over all word positions, keeping those where a window starts
    combined = _polynomial(word_hash, n)
    keep = np.ones(word_hash.size, dtype=bool)
    long_ends = word_offsets[1:][counts >= n]
    for j in range(1, n):
        keep[long_ends - j] = False
    short = np.flatnonzero((counts > 0) & (counts < n))  # one shingle of all their words
    for j in range(1, n):
        inside = counts[short] > j
        keep[word_offsets[short[inside]] + j] = False
    h = combined[keep]
    if short.size:
        value = np.zeros(short.size, dtype=np.uint64)
        for j in range(n):
            inside = counts[short] > j
            value[inside] = value[inside] * _B_POW[1] + word_hash[word_offsets[short[inside]] + j]
        value ^= counts[short].astype(np.uint64) * U64(0xD6E8FEB86659FD93)  # apart from full n-grams
        h[sh_offsets[short]] = value
    return _fmix64(h), sh_offsets


# ---- signatures ------------------------------------------------------------------------------------

def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([seed, 0x4D696E48])
    a = rng.integers(0, 2**32, num_perm, dtype=np.uint64).astype(np.uint32) | np.uint32(1)
    b = rng.integers(0, 2**32, num_perm, dtype=np.uint64).astype(np.uint32)
    return a, b


def signatures(hashes: np.ndarray, offsets: np.ndarray, num_perm: int, seed: int) -> np.ndarray:
    """(records, num_perm) uint32 MinHash signatures of 64-bit shingle hashes grouped by `offsets`.
    A record without shingles gets all 0xFFFFFFFF (callers treat it as unclusterable)."""
    a, b = permutations(num_perm, seed)
    x = hashes.view(np.uint32)[1::2] if sys.byteorder == "little" else (hashes >> U64(32)).astype(np.uint32)
    counts = np.diff(offsets)
    records = counts.size
    out = np.full((num_perm, records), np.uint32(0xFFFFFFFF), dtype=np.uint32)
    order = np.argsort(counts, kind="stable")
    order = order[counts[order] > 0]
    sorted_counts = counts[order]
    batches = []
    i = 0
    while i < order.size:
        # a batch of records of similar shingle counts, padded to the longest: (width, records)
        take = max(1, _SIG_BATCH // int(sorted_counts[i]))
        j = min(order.size, i + take)
        while j - i > 1 and int(sorted_counts[j - 1]) * (j - i) > 2 * _SIG_BATCH:
            j = i + max(1, (j - i) // 2)
        batches.append((order[i:j], int(sorted_counts[j - 1])))
        i = j

    def sign(batch: tuple[np.ndarray, int]) -> None:
        members, width = batch
        index = offsets[members][None, :] + np.minimum(np.arange(width)[:, None], counts[members][None, :] - 1)
        block = x[index]
        work = np.empty_like(block)
        result = np.empty((num_perm, members.size), dtype=np.uint32)
        for p in range(num_perm):
            np.multiply(block, a[p], out=work)
            work += b[p]
            work.min(axis=0, out=result[p])
        out[:, members] = result

    # batches are independent and numpy releases the GIL in each operation: one thread per core
    threads = min(_THREADS, len(batches))
    if threads > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(sign, batches))
    else:
        for batch in batches:
            sign(batch)
    return np.ascontiguousarray(out.T)


# ---- candidate pairs and clusters ----------------------------------------------------------------------

def _band_keys(sig: np.ndarray, bands: int, rows: int, step: int = 4096) -> np.ndarray:
    """(bands, records) 64-bit keys of the signature's bands sig[:, b*rows:(b+1)*rows] (a uint32
    matrix): equal band values, equal keys. Done a few thousand records at a time so each block is
    transposed inside the CPU cache (column-wise reads of the whole matrix were 4x slower)."""
    n = sig.shape[0]
    out = np.empty((bands, n), dtype=np.uint64)
    for s in range(0, n, step):
        block = sig[s:s + step, :bands * rows].T.astype(np.uint64).reshape(bands, rows, -1)
        key = block[:, 0].copy()
        for j in range(1, rows):
            key *= _B
            key += block[:, j]
        out[:, s:s + step] = key
    return _fmix64(out)


def _sorted_unique(values: np.ndarray) -> np.ndarray:
    """np.unique by sorting: numpy 2's np.unique hashes 64-bit integers, several times slower here."""
    values = np.sort(values)
    return values[np.concatenate([[True], values[1:] != values[:-1]])] if values.size else values


def _groups(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The elements whose key occurs more than once, as runs of equal keys: (element indices sorted by
    key then index, start of each run in that list, run lengths). Only the repeated keys are
    arg-sorted; finding them takes one (SIMD) sort of the values and a hash lookup."""
    ordered = np.sort(keys)
    repeated = _sorted_unique(ordered[1:][ordered[1:] == ordered[:-1]])
    dup = np.flatnonzero(pl.Series(keys).is_in(pl.Series(repeated).implode()).to_numpy())
    order = dup[np.argsort(keys[dup], kind="stable")]
    sorted_keys = keys[order]
    new_run = np.empty(order.size, dtype=bool)
    new_run[:1] = True
    np.not_equal(sorted_keys[1:], sorted_keys[:-1], out=new_run[1:])
    starts = np.flatnonzero(new_run)
    return order, starts, np.diff(np.append(starts, order.size))


def _bucket_pairs(members_sorted: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> tuple[list, int]:
    """All pairs inside each run (star pairs for runs above MAX_BUCKET_PAIRS_SIZE)."""
    out = []
    oversized = 0
    for m in np.unique(lengths):
        m = int(m)
        st = starts[lengths == m]
        block = members_sorted[st[:, None] + np.arange(m)[None, :]]
        if m <= MAX_BUCKET_PAIRS_SIZE:
            iu, ju = np.triu_indices(m, 1)
            out.append((block[:, iu].ravel(), block[:, ju].ravel()))
        else:
            oversized += block.shape[0]
            out.append((np.repeat(block[:, 0], m - 1), block[:, 1:].ravel()))
    return out, oversized


def _matches(sig: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Number of equal signature entries for each pair (chunked)."""
    out = np.empty(left.size, dtype=np.int64)
    for s in range(0, left.size, _PAIR_CHUNK):
        e = s + _PAIR_CHUNK
        out[s:e] = (sig[left[s:e]] == sig[right[s:e]]).sum(axis=1)
    return out


def union_find_min(n: int, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Connected components of the graph on 0..n-1 with edges (left, right); each node's label is the
    smallest node of its component (vectorised label propagation with pointer jumping)."""
    label = np.arange(n, dtype=np.int64)
    if left.size == 0:
        return label
    while True:
        low = np.minimum(label[left], label[right])
        if (label[left] == low).all() and (label[right] == low).all():
            return label
        np.minimum.at(label, left, low)
        np.minimum.at(label, right, low)
        while True:  # pointer jumping: label[x] <- label[label[x]] until stable
            jumped = label[label]
            if (jumped == label).all():
                break
            label = jumped


def exact_jaccard(texts: pl.Series, left: np.ndarray, right: np.ndarray, config: MinHashConfig) -> np.ndarray:
    """The true Jaccard similarity of the shingle sets of texts[left[k]] and texts[right[k]] for each
    pair k, with no loop per pair: shingles are compared by 40 bits of their 64-bit hashes (a false
    match between two different shingles of a 100-shingle pair has probability ~1e-8), packed with
    the record (or pair) number into one uint64 so that deduplicating and intersecting sets are sorts."""
    out = np.zeros(left.size, dtype=np.float64)
    if left.size == 0:
        return out
    rows = _sorted_unique(np.concatenate([left, right]))
    hashes, offsets = shingle_hashes(texts.gather(rows), config)
    owner = np.repeat(np.arange(rows.size, dtype=np.uint64), np.diff(offsets))
    keys = _sorted_unique((owner << U64(40)) | (hashes >> U64(24)))  # per record, its sorted shingles
    values = keys & U64((1 << 40) - 1)
    size = np.bincount((keys >> U64(40)).astype(np.int64), minlength=rows.size)
    start = np.concatenate([[0], np.cumsum(size)[:-1]])
    a, b = np.searchsorted(rows, left), np.searchsorted(rows, right)

    def tagged(members: np.ndarray) -> np.ndarray:
        """The shingles of each member's set, tagged with the member's pair number (its index)."""
        n = size[members]
        first = np.repeat(start[members] - (np.cumsum(n) - n), n) + np.arange(int(n.sum()))
        return (np.repeat(np.arange(members.size, dtype=np.uint64), n) << U64(40)) | values[first]

    step = _PAIR_CHUNK // 8  # ~200 shingles a pair: a few million values at a time
    for s in range(0, left.size, step):
        pa, pb = a[s:s + step], b[s:s + step]
        both = np.concatenate([tagged(pa), tagged(pb)])
        both.sort()
        common_values = both[1:][both[1:] == both[:-1]]  # sets are deduplicated: a shared shingle shows twice
        common = np.bincount((common_values >> U64(40)).astype(np.int64), minlength=pa.size)
        union = size[pa] + size[pb] - common
        out[s:s + step] = np.where(union > 0, common / np.maximum(union, 1), np.nan)
    return out


@dataclass
class _Clusters:
    label: np.ndarray  # per row: version position of its cluster's representative
    pair_left: np.ndarray  # every candidate pair (rows), before the threshold
    pair_right: np.ndarray
    pair_jaccard: np.ndarray  # estimated Jaccard of each pair
    pair_true: np.ndarray  # true Jaccard of the pairs that were verified exactly, else NaN
    pair_accepted: np.ndarray  # the pair's decision
    oversized: int
    candidate_pairs: int


def cluster(sig: np.ndarray, has_shingles: np.ndarray, bands: int, rows: int, threshold: float,
            verify: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None) -> _Clusters:
    """Cluster rows by LSH over their signatures; rows without shingles stay alone. With `verify`
    (pairs -> true Jaccard), candidates whose estimate is within VERIFY_MARGIN of the threshold are
    decided by their true Jaccard; the rest (and all, without it) by the estimate."""
    n, num_perm = sig.shape
    valid = np.flatnonzero(has_shingles)
    rows_sig = sig if valid.size == n else sig[valid]
    m = valid.size
    # 1. identical signatures: link every copy to the first one (one pair per copy, not all pairs);
    # grouped by a key of the first 16 values, then compared in full
    members, starts, lengths = _groups(_band_keys(rows_sig, 1, min(16, num_perm))[0])
    first = np.arange(m)
    first[members] = np.repeat(members[starts], lengths)
    copy = np.flatnonzero(first != np.arange(m))
    copy = copy[(rows_sig[copy] == rows_sig[first[copy]]).all(axis=1)]
    is_copy = np.zeros(m, dtype=bool)
    is_copy[copy] = True
    copies_left, copies_right = valid[first[copy]], valid[copy]
    distinct = np.flatnonzero(~is_copy)  # one per distinct signature (the first in version order)
    d = distinct.size
    distinct_sig = rows_sig if d == m else rows_sig[distinct]
    # 2. LSH over the distinct signatures: rows sharing any band's hash are candidates
    keys = _band_keys(distinct_sig, bands, rows)
    keys ^= _fmix64(np.arange(1, bands + 1, dtype=np.uint64))[:, None]  # a bucket per band
    members, starts, lengths = _groups(keys.ravel())
    chunks, oversized = _bucket_pairs(members % max(d, 1), starts, lengths)
    if chunks:
        lo = np.concatenate([np.minimum(a, b) for a, b in chunks])
        hi = np.concatenate([np.maximum(a, b) for a, b in chunks])
        code = _sorted_unique(lo * d + hi)
        left, right = valid[distinct[code // d]], valid[distinct[code % d]]
    else:
        left = right = np.zeros(0, dtype=np.int64)
    # 3. verify: estimated Jaccard of the signatures >= threshold
    left = np.concatenate([copies_left, left]).astype(np.int64)
    right = np.concatenate([copies_right, right]).astype(np.int64)
    jaccard = _matches(sig, left, right) / np.float64(num_perm)
    true = np.full(left.size, np.nan)
    if verify is not None:
        # identical signatures (estimate 1) are copies or all but copies: not worth shingling again
        near = np.flatnonzero((np.abs(jaccard - threshold) <= VERIFY_MARGIN) & (jaccard < 1))
        true[near] = verify(left[near], right[near])
    keep = np.where(np.isnan(true), jaccard, true) >= threshold
    label = union_find_min(n, left[keep], right[keep])
    return _Clusters(label, left, right, jaccard, true, keep, oversized, int(left.size))


# ---- the auditor -----------------------------------------------------------------------------------

def _to_binary(sig: np.ndarray) -> pl.Series:
    """Signatures (records, num_perm) as one fixed-size little-endian binary value per record: the
    cheapest form to write to, read from and join in the record cache."""
    import pyarrow as pa

    sig = np.ascontiguousarray(sig, dtype="<u4")
    width = sig.shape[1] * 4
    return pl.from_arrow(pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), sig.shape[0],
                                                              [None, pa.py_buffer(sig)]))


def _from_binary(values: pl.Series, num_perm: int) -> np.ndarray:
    import pyarrow as pa

    arr = values.to_arrow(compat_level=pl.CompatLevel.oldest())
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    arr = arr.cast(pa.large_binary())
    _, offsets_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int64, count=len(arr) + 1, offset=arr.offset * 8)
    if arr.null_count or not (np.diff(offsets) == 4 * num_perm).all():
        raise AssayError(f"minhash: cached signatures are not {num_perm} values each; clear the workspace's "
                         f"cache/minhash folder")
    data = np.frombuffer(data_buf, dtype=np.uint8)[offsets[0]:offsets[-1]]
    return data.view("<u4").reshape(len(arr), num_perm).astype(np.uint32, copy=False)


class _SignatureKey:
    """What the record cache is keyed by: the settings that change a signature (not the threshold,
    bands or calibration), so re-auditing at another threshold reuses every signature."""

    name = "minhash"

    def __init__(self, auditor: "MinHashDuplicates"):
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

    def signature_frame(self, records: pl.DataFrame) -> pl.DataFrame:
        """`id`, `minhash_sig` (the num_perm uint32 values as little-endian bytes) and `shingles`
        (how many the record has) for the given rows."""
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
        return pl.DataFrame({"id": records["id"], "minhash_sig": _to_binary(sig), "shingles": shingles})

    def run(self, records: pl.DataFrame, ctx: AuditContext) -> AuditResult:
        c: MinHashConfig = self.config
        c.validate()
        bands, rows = self.effective_bands_rows()
        cache = ctx.cached(_SignatureKey(self))
        found = cache.get_or_compute(records.select("id", c.column), self.signature_frame)
        sig = _from_binary(found["minhash_sig"], c.num_perm)
        has_shingles = found["shingles"].to_numpy() > 0
        texts = records[c.column]
        verify = None if c.verify == "estimate" else (lambda a, b: exact_jaccard(texts, a, b, c))
        result = cluster(sig, has_shingles, bands, rows, float(c.threshold), verify)

        n = records.height
        label = result.label
        positions = np.arange(n)
        size = np.bincount(label, minlength=n)[label]
        duplicate = label != positions
        jaccard = np.ones(n)
        dup_rows = np.flatnonzero(duplicate)
        jaccard[dup_rows] = _matches(sig, dup_rows, label[dup_rows]) / np.float64(c.num_perm)
        columns = pl.DataFrame({
            "minhash_cluster": label.astype(np.int64),
            "minhash_duplicate": duplicate,
            "minhash_jaccard": jaccard,
            "minhash_cluster_size": size.astype(np.int64),
            "minhash_no_shingles": ~has_shingles,
        })
        calibration = self._calibration(records, result)
        summary = self._summary(records, columns, result, bands, rows, cache, calibration)
        return AuditResult(columns=columns, summary=summary, details={"calibration": calibration})

    def _calibration(self, records: pl.DataFrame, result: _Clusters) -> pl.DataFrame:
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
        true[todo] = exact_jaccard(records[c.column], left[todo], right[todo], c)
        estimated = result.pair_jaccard[near]
        accepted = result.pair_accepted[near]
        truly = true >= t
        outcome = np.where(accepted, np.where(truly, "true positive", "false positive"),
                           np.where(truly, "false negative", "true negative"))
        ids = records["id"]
        column = records[c.column].cast(pl.String).fill_null("")
        return pl.DataFrame({
            "pos_a": left.astype(np.int64), "pos_b": right.astype(np.int64),
            "id_a": ids.gather(left), "id_b": ids.gather(right),
            "estimated_jaccard": estimated, "true_jaccard": true, "accepted": accepted,
            "outcome": pl.Series(outcome, dtype=pl.String),
            "text_a": column.gather(left).str.slice(0, TEXT_PREVIEW),
            "text_b": column.gather(right).str.slice(0, TEXT_PREVIEW),
        }).sort("estimated_jaccard", "pos_a", "pos_b")

    def _summary(self, records: pl.DataFrame, columns: pl.DataFrame, result: _Clusters, bands: int, rows: int,
                 cache, calibration: pl.DataFrame) -> dict[str, Any]:
        c: MinHashConfig = self.config
        n = records.height
        dup = int(columns["minhash_duplicate"].sum())
        sizes = columns.filter(pl.col("minhash_cluster_size") > 1).group_by("minhash_cluster").agg(
            size=pl.len()).sort(["size", "minhash_cluster"], descending=[True, False])
        examples = []
        texts = records[c.column]
        for cl, size in sizes.head(5).iter_rows():
            members = columns.with_row_index("pos").filter(
                (pl.col("minhash_cluster") == cl) & pl.col("minhash_duplicate")).head(1)
            other = int(members["pos"][0])
            examples.append({"cluster": int(cl), "size": int(size), "text": (texts[int(cl)] or "")[:300],
                             "duplicate_pos": other, "duplicate_text": (texts[other] or "")[:300],
                             "jaccard": float(members["minhash_jaccard"][0])})
        return {
            "duplicate_records": dup,
            "duplicate_rate": dup / n if n else 0.0,
            "clusters": int(sizes.height),
            "largest_cluster": int(sizes["size"].max()) if sizes.height else 1,
            "no_shingle_records": int(columns["minhash_no_shingles"].sum()),
            "threshold": float(c.threshold),
            "bands": bands,
            "rows": rows,
            "lsh_threshold": round((1 / bands) ** (1 / rows), 4),  # where the banding's S-curve is steepest
            "candidate_pairs": result.candidate_pairs,
            "accepted_pairs": int(result.pair_accepted.sum()),
            "verified_pairs": int((~np.isnan(result.pair_true)).sum()),
            "verify": c.verify,
            "candidate_threshold": self.candidate_threshold(),
            "oversized_buckets": result.oversized,
            "signatures_computed": cache.misses,
            "signatures_reused": cache.hits,
            "calibration_pairs": calibration.height,
            "calibration_false_positives": int((calibration["outcome"] == "false positive").sum()),
            "calibration_false_negatives": int((calibration["outcome"] == "false negative").sum()),
            "examples": examples,
        }


__all__ = ["MinHashConfig", "MinHashDuplicates", "optimal_bands_rows", "shingle_hashes", "signatures",
           "union_find_min", "cluster"]
