"""MinHash's reduce with the signatures left in the record cache, read back part by part (5 GB at
10M records, which the reduce would otherwise hold). The reduce then gets each record's shingle count
and head key (8 bytes; `MinHashDuplicates.for_reduce`), never its 128 signature values. On the Ray
engine this is always so (the driver never holds the signatures); on the local engine once the
version's signatures exceed `LOCAL_SIGNATURE_BYTES`, so a 10M-record audit stays in bounded memory.
What needs signatures reads them from the record cache the map has just written (`runner.map_part`):

- Band buckets (`PartSignatures.candidates`). On Ray they are grouped by a shuffle over the cluster,
  as NeMo Curator and Data-Juicer group theirs, instead of sorting every band key of the version on
  the driver: one task per part computes the band keys of its distinct records and splits them into
  P partitions by key (P = the cluster's CPUs); one task per partition gathers its keys from every
  part, groups equal keys and returns the bucket's candidate pairs as codes. Locally the parts'
  band keys fill one array, sorted as `local_candidates` sorts it. Either way the pairs are those
  of `local_candidates`, in the same order: a bucket's members reach their partition in version
  order, as the local sort orders them.
- Signature comparisons (`PartSignatures.matches`: exact copies, each candidate pair's estimated
  Jaccard, each duplicate's Jaccard to its cluster's representative). The pairs are cut into
  chunks. On Ray one task per part looks up the signatures of its rows in each chunk's pairs, and
  one task per chunk assembles both sides and counts equal values; locally each chunk's two sides
  are filled by one pass over the parts its pairs touch. The counts are integers, the same as the
  in-memory path's, so every decision and figure is too.

The reduce holds the pairs (16 bytes each) and unites the clusters.
"""

from __future__ import annotations

import numpy as np

from assay.core.ray_cluster import connect, gather
from assay.core.store import Store

from .base import AuditContext, Auditor
from .minhash_lsh import SignatureRows, _sorted_unique, band_keys, bucket_codes

RETRIES = 3
PAIRS_PER_TASK = 1 << 18  # pairs one comparing task assembles: two 128 MiB signature blocks at 128 values
# The local engine holds a version's signatures in memory up to this many bytes (2M records at 128
# values, where holding them is faster than the passes over the cache below); above, its reduce
# reads them back part by part, as on Ray
LOCAL_SIGNATURE_BYTES = 1 << 30


def signatures_stay_in_cache(ctx: AuditContext, num_perm: int) -> bool:
    """Whether MinHash's reduce reads the signatures part by part instead of getting them whole."""
    if ctx.engine == "ray":
        return True
    records = ctx.manifest.records if ctx.manifest is not None else 0
    return records * num_perm * 4 > LOCAL_SIGNATURE_BYTES


class PartSignatures:
    """The version's signatures left in the record cache (see the module's docstring): `cluster`
    and the reduce use them through `head_keys` and `matches`, like `SignatureRows`, and
    `candidates` is `cluster`'s band-bucket step; on Ray in tasks, else in this process."""

    def __init__(self, auditor: Auditor, ctx: AuditContext, head: np.ndarray, num_perm: int):
        self.auditor, self.ctx, self.head = auditor, ctx, head
        self.on_ray = ctx.engine == "ray"
        self.shape = (head.size, num_perm)
        self.offsets = np.cumsum([0] + [p.kept for p in ctx.manifest.parts])  # part k: rows offsets[k]:[k + 1]
        self._shipped: tuple | None = None
        self._known: dict | None = None

    def _ray_and_shipped(self):
        """ray, connected; the auditor and the cache's known ids, put once per audit for every task."""
        ray = connect(self.ctx.ray_address)
        if self._shipped is None:
            self._shipped = (self.auditor.fresh_copy(), ray.put(self.ctx.known_ids([self.auditor])))
        return ray, self._shipped

    def _part(self, k: int) -> np.ndarray:
        """In this process: part k's signatures from the record cache, as a (rows, num_perm) matrix."""
        if self._known is None:  # every id is cached by now: read once, every part is a hit
            self._known = self.ctx.known_ids([self.auditor])
        rows = _cached_signatures(self.ctx.store, k, self.auditor, self.ctx, self._known)
        return rows[0:rows.shape[0]]

    def head_keys(self, index: np.ndarray | None = None) -> np.ndarray:
        return self.head if index is None else self.head[index]

    def candidates(self, sig, distinct: np.ndarray, bands: int, rows: int) -> tuple[np.ndarray, int]:
        """`minhash_lsh.Candidates` over the parts (`sig` is not read: the parts are)."""
        if not self.on_ray:
            return self._local_candidates(distinct, bands, rows)
        ray, (auditor, known) = self._ray_and_shipped()
        manifest, store, offsets = self.ctx.manifest, self.ctx.store, self.offsets
        partitions = max(2, int(ray.cluster_resources().get("CPU", 2)))
        cut = np.searchsorted(distinct, offsets)  # part k's distinct rows: distinct[cut[k]:cut[k + 1]]
        split = ray.remote(num_returns=partitions, max_retries=RETRIES)(_part_band_keys)
        by_part = [split.remote(store.url, str(store.catalog.path), manifest, k, auditor, known,
                                distinct[cut[k]:cut[k + 1]] - offsets[k], int(cut[k]), bands, rows, partitions)
                   for k in range(len(manifest.parts))]
        group = ray.remote(max_retries=RETRIES)(_partition_codes)
        pending = [group.remote(int(distinct.size), *[refs[p] for refs in by_part]) for p in range(partitions)]
        done = gather(ray, pending, f"grouping MinHash bands of {manifest.ref}")
        codes = _sorted_unique(np.concatenate([c for c, _ in done])) if done else np.zeros(0, dtype=np.int64)
        return codes, int(sum(o for _, o in done))

    def _local_candidates(self, distinct: np.ndarray, bands: int, rows: int) -> tuple[np.ndarray, int]:
        """`local_candidates`' keys, each part's filled in from its signatures: the same array, so
        the same sort and the same pairs."""
        d = distinct.size
        keys = np.empty((bands, d), dtype=np.uint64)
        cut = np.searchsorted(distinct, self.offsets)
        for k in range(len(self.ctx.manifest.parts)):
            if cut[k + 1] > cut[k]:
                index = distinct[cut[k]:cut[k + 1]] - self.offsets[k]
                keys[:, cut[k]:cut[k + 1]] = band_keys(self._part(k), bands, rows, index).reshape(bands, -1)
        return bucket_codes(keys.ravel(), lambda members: members % max(d, 1), d)

    def matches(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        if left.size == 0:
            return np.zeros(0, dtype=np.int64)
        if not self.on_ray:
            return self._local_matches(left, right)
        ray, (auditor, known) = self._ray_and_shipped()
        manifest, store, offsets = self.ctx.manifest, self.ctx.store, self.offsets
        per_task = PAIRS_PER_TASK  # read here, passed on: a worker's module has its own constant
        chunks = -(-left.size // per_task)
        # each side's pairs by the part of their row (in pair order within a part)
        sides = []
        for rows in (left, right):
            part = np.searchsorted(offsets, rows, side="right") - 1
            order = np.argsort(part, kind="stable")
            sides.append((rows, order, np.searchsorted(part[order], np.arange(len(manifest.parts) + 1))))
        lookup = ray.remote(num_returns=chunks, max_retries=RETRIES)(_part_pair_signatures)
        by_part = []
        for k in range(len(manifest.parts)):
            mine = [order[bounds[k]:bounds[k + 1]] for _, order, bounds in sides]
            if not any(m.size for m in mine):
                continue  # no pair has a row here: the part is not read
            refs = lookup.remote(store.url, str(store.catalog.path), manifest, k, auditor, known, per_task, chunks,
                                 *[(m, rows[m] - offsets[k]) for m, (rows, _, _) in zip(mine, sides)])
            by_part.append(refs if chunks > 1 else [refs])
        count = ray.remote(max_retries=RETRIES)(_chunk_matches)
        pending = [count.remote(min(per_task, left.size - c * per_task), self.shape[1],
                                *[refs[c] for refs in by_part]) for c in range(chunks)]
        return np.concatenate(gather(ray, pending, f"comparing MinHash signatures of {manifest.ref}"))

    def _local_matches(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """Each chunk of pairs: both sides' signatures filled in by one pass over the parts they
        touch (two 128 MiB blocks at a time), then the equal values counted."""
        out = np.empty(left.size, dtype=np.int64)
        for s in range(0, left.size, PAIRS_PER_TASK):
            sides = [(rows, np.searchsorted(self.offsets, rows, side="right") - 1)
                     for rows in (left[s:s + PAIRS_PER_TASK], right[s:s + PAIRS_PER_TASK])]
            both = [np.empty((rows.size, self.shape[1]), dtype=np.uint32) for rows, _ in sides]
            for k in _sorted_unique(np.concatenate([part for _, part in sides])):
                sig = self._part(int(k))
                for filled, (rows, part) in zip(both, sides):
                    mine = part == k
                    filled[mine] = sig[rows[mine] - self.offsets[k]]
            out[s:s + PAIRS_PER_TASK] = (both[0] == both[1]).sum(axis=1)
        return out


def _part_signatures(url: str, catalog_path: str, manifest, k: int, auditor: Auditor, known: dict) -> SignatureRows:
    """On a worker: part k's signatures, from the record cache (computed if a chunk is missing)."""
    store = Store(url, catalog_path)
    ctx = AuditContext(store, manifest.id, manifest)
    auditor.prepare(ctx)
    return _cached_signatures(store, k, auditor, ctx, known)


def _cached_signatures(store: Store, k: int, auditor: Auditor, ctx: AuditContext, known: dict) -> SignatureRows:
    """Part k's signatures through the auditor's map and record cache (`runner.map_part`), on either engine."""
    from .runner import map_part

    return SignatureRows(map_part(store, k, [auditor], ctx, known).frames[auditor.name]["minhash_sig"])


def _part_pair_signatures(url: str, catalog_path: str, manifest, k: int, auditor: Auditor, known: dict,
                          per_task: int, chunks: int, *sides: tuple[np.ndarray, np.ndarray]):
    """On a worker: for each chunk of pairs, the signatures of part k's rows on each side of them, as
    (pair number in the chunk, signature rows) per side; `sides` holds (pair numbers, rows in part k)."""
    sig = _part_signatures(url, catalog_path, manifest, k, auditor, known)
    out = []
    for c in range(chunks):
        lo, hi = c * per_task, (c + 1) * per_task
        pieces = []
        for pairs, rows in sides:
            inside = (pairs >= lo) & (pairs < hi)
            pieces.append((pairs[inside] - lo, sig[rows[inside]]))
        out.append(pieces)
    return out if chunks > 1 else out[0]


def _chunk_matches(size: int, num_perm: int, *parts: list) -> np.ndarray:
    """On a worker: one chunk's pairs assembled from the parts' lookups, their equal values counted."""
    both = [np.zeros((size, num_perm), dtype=np.uint32) for _ in range(2)]
    for pieces in parts:
        for side, (pairs, rows) in zip(both, pieces):
            side[pairs] = rows
    return (both[0] == both[1]).sum(axis=1).astype(np.int64)


def _part_band_keys(url: str, catalog_path: str, manifest, k: int, auditor: Auditor, known: dict,
                    index: np.ndarray, first: int, bands: int, rows: int, partitions: int) -> list:
    """On a worker: part k's signatures (from the record cache), the band keys of its rows `index`
    (distinct rows numbered from `first`), split by key into `partitions` (keys, numbers) pairs."""
    sig = _part_signatures(url, catalog_path, manifest, k, auditor, known)
    keys = band_keys(sig, bands, rows, index)
    numbers = first + np.arange(keys.size, dtype=np.int64) % max(index.size, 1)
    target = keys % np.uint64(partitions)
    return [(keys[target == p], numbers[target == p]) for p in range(partitions)]


def _partition_codes(d: int, *pieces: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, int]:
    """On a worker: one partition's keys from every part (in version order), grouped into pairs."""
    keys = np.concatenate([k for k, _ in pieces]) if pieces else np.zeros(0, dtype=np.uint64)
    numbers = np.concatenate([n for _, n in pieces]) if pieces else np.zeros(0, dtype=np.int64)
    return bucket_codes(keys, lambda members: numbers[members], d)
