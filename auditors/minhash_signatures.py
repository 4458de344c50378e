"""MinHash shingles and signatures: the per-record content work of the `minhash` auditor (steps 1-3
of its pipeline, described in auditors/minhash.py): shingle hashes computed on the UTF-8 bytes of a
whole batch at once, and num_perm-value signatures as dense column reductions."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

if TYPE_CHECKING:  # only for annotations: the config lives with the auditor
    from .minhash import MinHashConfig

U64 = np.uint64
_SIG_BATCH = 1 << 18  # shingles per signature batch (1 MB of uint32): stays in cache
_THREADS = min(4, os.cpu_count() or 1)  # signature batches computed at once

_BYTE_MASKS = np.array([(1 << (8 * i)) - 1 for i in range(8)] + [2**64 - 1], dtype=np.uint64)
_WORD_BYTE = np.array([c >= 0x80 or chr(c).isalnum() or c == 0x5F for c in range(256)], dtype=bool)
_B = U64(0xD1B54A32D192ED03)  # odd base of the n-gram polynomial
_B_POW = {k: U64(pow(int(_B), k, 2**64)) for k in (1, 2, 4, 8, 16, 32, 64)}


# ---- shingles and their hashes --------------------------------------------------------------------

def _fmix64(x: np.ndarray) -> np.ndarray:
    """murmur3's 64-bit finaliser, in place on a uint64 array (returned). A block at a time where x
    is contiguous, so the shifted temporaries stay small (the band keys of 10M records are 1.6 GB)."""
    blocks = [x] if not x.flags.c_contiguous else [x.reshape(-1)[s:s + (1 << 20)] for s in range(0, x.size, 1 << 20)]
    for block in blocks:  # views of x: updated in place
        block ^= block >> U64(33)
        block *= U64(0xFF51AFD7ED558CCD)
        block ^= block >> U64(33)
        block *= U64(0xC4CEB9FE1A85EC53)
        block ^= block >> U64(33)
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
