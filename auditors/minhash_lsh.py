"""MinHash LSH: the banding parameters, candidate pairs from band buckets, their verification
(estimated or exact Jaccard) and the clusters (steps 4-5 of the pipeline described in
auditors/minhash.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np
import polars as pl

from .components import union_find_min
from .minhash_signatures import _B, U64, _fmix64, shingle_hashes

if TYPE_CHECKING:  # only for annotations: the config lives with the auditor
    from .minhash import MinHashConfig

MAX_BUCKET_PAIRS_SIZE = 500  # all pairs up to this many distinct signatures in one band bucket
# verify="exact" checks the true Jaccard of candidates whose estimate is within this of the threshold:
# 0.2 is over 4.5 standard deviations of a 128-value estimate, so a pair outside it is on the side
# its estimate says with probability > 0.99999
VERIFY_MARGIN = 0.2
_PAIR_CHUNK = 1 << 17  # pairs compared at once when estimating Jaccard


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


# ---- candidate pairs and clusters ----------------------------------------------------------------------

class SignatureRows:
    """Signatures held as a Polars Array(UInt32, num_perm) column (a streaming audit's map results, a
    chunk per part of the version), read as numpy rows by slice or index: the clustering below only
    ever takes a block of rows, so the whole matrix is never copied (5 GB at 10M records)."""

    def __init__(self, series: pl.Series):
        self.series = series
        self.shape = (series.len(), series.dtype.size)

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, tuple):
            rows, columns = key
            return self[rows][:, columns]
        if isinstance(key, slice):
            return self._numpy(self.series[key])
        key = np.asarray(key, dtype=np.int64)
        if key.size and key[0] <= key[-1] and key[-1] - key[0] < 2 * key.size and (np.diff(key) >= 0).all():
            # sorted and dense (a block of the rows still to cluster): one slice, then numpy picks
            # the rows from that view; polars' gather costs ~2.6 us a row, this ~0.1
            return self._numpy(self.series[int(key[0]):int(key[-1]) + 1])[key - key[0]]
        return self._numpy(self.series.gather(key))

    def _numpy(self, part: pl.Series) -> np.ndarray:
        return part.to_numpy().astype(np.uint32, copy=False).reshape(part.len(), self.shape[1])

    def head_keys(self, index: np.ndarray | None = None) -> np.ndarray:
        return head_keys(self, index)

    def matches(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        return _matches(self, left, right)


class Signatures(Protocol):
    """What `cluster` needs of the version's signatures: their shape, each row's head key (copies
    are grouped by it) and the number of equal values of row pairs. `SignatureRows` holds them in
    this process; on Ray, or when they are too many to hold, they stay in the record cache and are
    read back part by part (auditors/minhash_parts.py)."""

    shape: tuple[int, int]

    def head_keys(self, index: np.ndarray | None = None) -> np.ndarray: ...

    def matches(self, left: np.ndarray, right: np.ndarray) -> np.ndarray: ...


def head_keys(sig, index: np.ndarray | None = None) -> np.ndarray:
    """A 64-bit key of each row's first 16 signature values (rows `index`, default all): identical
    signatures have equal keys, so exact copies are found by grouping keys, then comparing in full."""
    return _band_keys(sig, 1, min(16, sig.shape[1]), index=index)[0]


def _band_keys(sig, bands: int, rows: int, index: np.ndarray | None = None, step: int = 4096) -> np.ndarray:
    """(bands, records) 64-bit keys of the signature's bands sig[:, b*rows:(b+1)*rows] (a uint32
    matrix, or SignatureRows) of the rows `index` (default all): equal band values, equal keys. Rows
    are fetched 64k at a time and each block of a few thousand is transposed inside the CPU cache
    (column-wise reads of the whole matrix were 4x slower)."""
    n = sig.shape[0] if index is None else index.size
    out = np.empty((bands, n), dtype=np.uint64)
    fetch = 16 * step
    for f in range(0, n, fetch):
        fetched = sig[f:f + fetch] if index is None else sig[index[f:f + fetch]]
        for s in range(0, fetched.shape[0], step):
            block = fetched[s:s + step, :bands * rows].T.astype(np.uint64).reshape(bands, rows, -1)
            key = block[:, 0].copy()
            for j in range(1, rows):
                key *= _B
                key += block[:, j]
            out[:, f + s:f + s + block.shape[2]] = key
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


def band_keys(sig, bands: int, rows: int, index: np.ndarray) -> np.ndarray:
    """The band bucket keys of the rows `index` of `sig`, band-major: element b * index.size + j is
    row index[j]'s bucket in band b (records of one bucket share its key)."""
    keys = _band_keys(sig, bands, rows, index=index)
    keys ^= _fmix64(np.arange(1, bands + 1, dtype=np.uint64))[:, None]  # a bucket per band
    return keys.ravel()


def bucket_codes(keys: np.ndarray, number_of: Callable[[np.ndarray], np.ndarray], d: int) -> tuple[np.ndarray, int]:
    """The candidate pairs of records that share a bucket key, as sorted unique codes lo * d + hi of
    their distinct row numbers (`number_of` maps element indices of `keys` to them); and how many
    buckets were too large for all their pairs."""
    members, starts, lengths = _groups(keys)
    chunks, oversized = _bucket_pairs(number_of(members), starts, lengths)
    del members, starts, lengths
    if not chunks:
        return np.zeros(0, dtype=np.int64), oversized
    lo = np.concatenate([np.minimum(a, b) for a, b in chunks])
    hi = np.concatenate([np.maximum(a, b) for a, b in chunks])
    del chunks
    return _sorted_unique(lo * d + hi), oversized


def local_candidates(sig, distinct: np.ndarray, bands: int, rows: int) -> tuple[np.ndarray, int]:
    """`bucket_codes` over every band of the rows `distinct`, in this process."""
    d = max(distinct.size, 1)
    return bucket_codes(band_keys(sig, bands, rows, distinct), lambda members: members % d, distinct.size)


# (signatures, the distinct rows, bands, rows per band) -> (pair codes, oversized buckets)
Candidates = Callable[[object, np.ndarray, int, int], tuple[np.ndarray, int]]


def cluster(sig: Signatures, has_shingles: np.ndarray, bands: int, rows: int, threshold: float,
            verify: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
            candidates: Candidates = local_candidates) -> _Clusters:
    """Cluster rows by LSH over their signatures (SignatureRows, or left in the record cache); rows without
    shingles stay alone. With `verify` (pairs -> true Jaccard), candidates whose estimate is within
    VERIFY_MARGIN of the threshold are decided by their true Jaccard; the rest (and all, without it)
    by the estimate. `candidates` finds the band buckets' pairs (in memory, or part by part: auditors/minhash_parts.py).
    Memory: the head keys (8 bytes a record), the band keys (bands x 8 bytes a record; on Ray, on the
    cluster) and their sort, the pairs; never a copy of the signatures."""
    n, num_perm = sig.shape
    valid = np.flatnonzero(has_shingles)
    m = valid.size
    # 1. identical signatures: link every copy to the first one (one pair per copy, not all pairs);
    # grouped by a key of the first 16 values, then compared in full
    members, starts, lengths = _groups(sig.head_keys(None if m == n else valid))
    first = np.arange(m)
    first[members] = np.repeat(members[starts], lengths)
    copy = np.flatnonzero(first != np.arange(m))
    copy = copy[sig.matches(valid[copy], valid[first[copy]]) == num_perm]
    is_copy = np.zeros(m, dtype=bool)
    is_copy[copy] = True
    copies_left, copies_right = valid[first[copy]], valid[copy]
    distinct = valid[~is_copy]  # version positions, one per distinct signature (the first in version order)
    d = distinct.size
    # 2. LSH over the distinct signatures: rows sharing any band's hash are candidates
    code, oversized = candidates(sig, distinct, bands, rows)
    left, right = distinct[code // max(d, 1)], distinct[code % max(d, 1)]
    # 3. verify: estimated Jaccard of the signatures >= threshold
    left = np.concatenate([copies_left, left]).astype(np.int64)
    right = np.concatenate([copies_right, right]).astype(np.int64)
    jaccard = sig.matches(left, right) / np.float64(num_perm)
    true = np.full(left.size, np.nan)
    if verify is not None:
        # identical signatures (estimate 1) are copies or all but copies: not worth shingling again
        near = np.flatnonzero((np.abs(jaccard - threshold) <= VERIFY_MARGIN) & (jaccard < 1))
        true[near] = verify(left[near], right[near])
    keep = np.where(np.isnan(true), jaccard, true) >= threshold
    label = union_find_min(n, left[keep], right[keep])
    return _Clusters(label, left, right, jaccard, true, keep, oversized, int(left.size))
