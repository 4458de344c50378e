"""MinHash's LSH step on Ray: the band buckets grouped by a shuffle over the cluster, as NeMo Curator
and Data-Juicer group theirs, instead of sorting every band key of the version on the driver.

- One task per part of the version reads the part's signatures from the record cache in the
  workspace (the map has just written them; `runner.map_part`), computes the band bucket keys of
  its distinct records and splits them into P partitions by key (P = the cluster's CPUs).
- One task per partition gathers its keys from every part, groups equal keys and returns the
  bucket's candidate pairs as codes.
- The driver unites the codes. The pairs are those of the local engine (`local_candidates`), in
  the same order, so verification, clusters and every figure are the same: a bucket's members
  reach their partition in version order, as the local sort orders them.

The driver still holds the signatures (to estimate each pair's Jaccard) and unites the clusters;
what moves to the cluster is the band keys (8 bytes a band a record: 1.6 GB at 10M records and 20
bands) and their sort, which set the driver's peak in the local reduce.
"""

from __future__ import annotations

import numpy as np

from assay.core.ray_cluster import connect, gather
from assay.core.store import Store

from .base import AuditContext, Auditor
from .minhash_lsh import Candidates, SignatureRows, _sorted_unique, band_keys, bucket_codes

RETRIES = 3


def ray_candidates(auditor: Auditor, ctx: AuditContext, address: str | None) -> Candidates:
    """A `candidates` step for `minhash_lsh.cluster` that runs on the Ray cluster at `address`."""

    def candidates(sig, distinct: np.ndarray, bands: int, rows: int) -> tuple[np.ndarray, int]:
        ray = connect(address)
        manifest, store = ctx.manifest, ctx.store
        partitions = max(2, int(ray.cluster_resources().get("CPU", 2)))
        offsets = np.cumsum([0] + [p.kept for p in manifest.parts])
        cut = np.searchsorted(distinct, offsets)  # part k's distinct rows: distinct[cut[k]:cut[k + 1]]
        known = ray.put(ctx.known_ids([auditor]))
        shipped = auditor.fresh_copy()
        split = ray.remote(num_returns=partitions, max_retries=RETRIES)(_part_band_keys)
        by_part = [split.remote(store.url, str(store.catalog.path), manifest, k, shipped, known,
                                distinct[cut[k]:cut[k + 1]] - offsets[k], int(cut[k]), bands, rows, partitions)
                   for k in range(len(manifest.parts))]
        group = ray.remote(max_retries=RETRIES)(_partition_codes)
        pending = [group.remote(int(distinct.size), *[refs[p] for refs in by_part]) for p in range(partitions)]
        done = gather(ray, pending, f"grouping MinHash bands of {manifest.ref}")
        codes = _sorted_unique(np.concatenate([c for c, _ in done])) if done else np.zeros(0, dtype=np.int64)
        return codes, int(sum(o for _, o in done))

    return candidates


def _part_band_keys(url: str, catalog_path: str, manifest, k: int, auditor: Auditor, known: dict,
                    index: np.ndarray, first: int, bands: int, rows: int, partitions: int) -> list:
    """On a worker: part k's signatures (from the record cache), the band keys of its rows `index`
    (distinct rows numbered from `first`), split by key into `partitions` (keys, numbers) pairs."""
    from .runner import map_part

    store = Store(url, catalog_path)
    ctx = AuditContext(store, manifest.id, manifest)
    auditor.prepare(ctx)
    sig = SignatureRows(map_part(store, k, [auditor], ctx, known).frames[auditor.name]["minhash_sig"])
    keys = band_keys(sig, bands, rows, index)
    numbers = first + np.arange(keys.size, dtype=np.int64) % max(index.size, 1)
    target = keys % np.uint64(partitions)
    return [(keys[target == p], numbers[target == p]) for p in range(partitions)]


def _partition_codes(d: int, *pieces: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, int]:
    """On a worker: one partition's keys from every part (in version order), grouped into pairs."""
    keys = np.concatenate([k for k, _ in pieces]) if pieces else np.zeros(0, dtype=np.uint64)
    numbers = np.concatenate([n for _, n in pieces]) if pieces else np.zeros(0, dtype=np.int64)
    return bucket_codes(keys, lambda members: numbers[members], d)
