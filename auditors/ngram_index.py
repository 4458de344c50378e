"""The n-gram index of the contamination auditor's first tier: benchmark n-gram hashes, the compiled
(numba) scan that finds records sharing one, and the exact check that turns hash hits into the
n-grams a record really shares with a benchmark item.

Normalisation (the reference semantics, as lm-evaluation-harness): `text.lower()`, every Unicode
punctuation or symbol character (categories P*, S*) deleted, then `str.split()` (Unicode whitespace
and \x1c-\x1f). The engine makes one compiled pass over the UTF-8 bytes of a batch of records that
tokenises (ASCII rules; a record with any non-ASCII byte is first normalised by Polars with the
Unicode rules), hashes tokens and rolling n-grams, and probes a hash table of the benchmark n-grams.
Only records with a probe hit go on to the exact check: the record's exact n-gram strings are
compared with those of the benchmark items sharing its hashes, so flags and counts equal a plain
set-of-n-grams scan (a hash collision cannot add a flag). The tests check the engine against a
slower Polars + numpy oracle (tests/auditors/ngram_oracle.py).
"""

from __future__ import annotations

import os

import numba
import numpy as np
import polars as pl

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


def ngram_strings(tokens: list[str], n: int) -> list[str]:
    return [" ".join(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


# the compiled engine's constants: the rolling polynomial's base, the finaliser's multiplier, the token seed
_P = np.uint64(0x9E3779B97F4A7C15)
_M = np.uint64(0xBF58476D1CE4E5B9)
_SEED = np.uint64(0x243F6A8885A308D3)


@numba.njit(inline="always")
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


@numba.njit(inline="always")
def _nb_ngram(g, buf, i, n, pn):
    """Roll the n-gram hash g (sum of token hash * P^k, k the distance from the window's end)
    forward by token i."""
    g = g * _P + buf[i]
    if i >= n:
        g -= buf[i - n] * pn
    return g


@numba.njit(inline="always")
def _nb_final(g):
    g = (g ^ (g >> np.uint64(29))) * _M
    return (g ^ (g >> np.uint64(32))) | np.uint64(1)  # never 0: 0 marks an empty table slot


@numba.njit(cache=True, nogil=True)
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


@numba.njit(cache=True, nogil=True)
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


@numba.njit(cache=True, nogil=True)
def _nb_table(grams, size):
    table = np.zeros(size, np.uint64)
    mask = np.uint64(size - 1)
    for x in grams:
        i = x & mask
        while table[i] != 0 and table[i] != x:
            i = (i + np.uint64(1)) & mask
        table[i] = x
    return table


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


class NumbaEngine:
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

    def prepare(self, index: BenchmarkIndex) -> None:
        size = 1 << max(4, int(2 * index.unique.size + 2).bit_length())
        index.table = _nb_table(index.unique, size)
        index.mask = np.uint64(size - 1)
        index.bshift = np.uint64(64 - self.BITMAP_BITS)
        present = np.zeros(1 << self.BITMAP_BITS, bool)
        present[(index.unique >> index.bshift).astype(np.int64)] = True
        index.bits = np.packbits(present, bitorder="little")  # 128 KiB: stays in the L2 cache

    def _counts(self, texts: pl.Series, index: BenchmarkIndex, flag_non_ascii: bool) -> np.ndarray:
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

    def hits(self, texts: pl.Series, index: BenchmarkIndex) -> tuple[np.ndarray, np.ndarray]:
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


class BenchmarkIndex:
    """The benchmark side of the n-gram tier: sorted n-gram hashes with the item each comes from,
    and the exact n-gram strings of an item on demand (for confirming hits)."""

    def __init__(self, items: pl.DataFrame, n: int, eng=None):
        self.n = n
        self.engine = eng or NumbaEngine()
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
                self._strings[i] = set(ngram_strings(tokens, self.n))
        return {i: self._strings[i] for i in items}


CHUNK_RECORDS = 100_000  # records scanned at once: bounds the memory of the n-gram tier
EXAMPLE_NGRAMS = 5  # matched n-grams kept per record as evidence


def ngram_matches(texts: pl.Series, index: BenchmarkIndex) -> dict[int, tuple[int, int, list[str]]]:
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
            strings = ngram_strings(rec_tokens, index.n)
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
