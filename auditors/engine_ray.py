"""The Ray engine: an audit's per-record work (each streaming auditor's `map`, through its record
cache) as one Ray task per part of the version, on a local or remote Ray cluster.

What runs where:
- a worker reads its part's segment straight from the workspace storage (a local folder every node
  mounts, or `s3://...`), never through the driver, runs every auditor's `map` on it, writes the
  record-cache chunks next to the workspace's other objects, and returns the part's results as Arrow;
- the driver collects the parts in version order (the progress bar advances as each one finishes),
  runs each auditor's `reduce` and commits the audit exactly as the local engine does: one commit,
  the same catalog. What a part sends back is what its auditors' `for_reduce` keep: MinHash's
  signatures stay in the record cache, and its reduce groups band buckets and compares signature
  pairs in Ray tasks (auditors/minhash_parts.py); the driver keeps the pairs and unites the clusters.

A map that runs a model (the embedding auditors, contamination's semantic tier) asks for a GPU
when the cluster has GPUs (`task_resources`), so embedding runs on the GPU nodes with torch.

A task whose worker dies is retried by Ray (`max_retries`); a part's work is a pure function of its
rows, and cache chunks are written atomically, so a retry gives the same results and nothing is
committed twice. Auditors travel to the workers as fresh copies built from their configs.
"""

from __future__ import annotations

from assay.core.ray_cluster import connect, gather
from assay.core.store import Store

from .base import AuditContext, Auditor

RETRIES = 3  # attempts after a worker dies mid-task (Ray's own default for tasks)


def map_by_part_on_ray(store: Store, manifest, auditors: list[Auditor], ctx: AuditContext, show_progress: bool | None,
                       seconds: dict[str, float], address: str | None = None) -> dict:
    """`runner._map_by_part`, each part a Ray task."""
    from .runner import combine

    ray = connect(address)
    known = ctx.known_ids(auditors)
    shipped = [a.fresh_copy() for a in auditors]
    task = ray.remote(max_retries=RETRIES)(_map_part_task).options(**task_resources(auditors, ray.cluster_resources()))
    known_ref = ray.put(known)
    refs = [task.remote(store.url, str(store.catalog.path), manifest, k, shipped, known_ref)
            for k in range(len(manifest.parts))]
    done = gather(ray, refs, f"auditing {manifest.ref}", show_progress=show_progress,
                  weights=[part.kept for part in manifest.parts])
    return combine(done, auditors, ctx, seconds)


def task_resources(auditors: list[Auditor], cluster: dict[str, float]) -> dict[str, float]:
    """What one part's task asks Ray for: a GPU when an auditor's map runs a model (embeddings) and
    the cluster has GPUs, so those tasks land on GPU nodes, one per GPU; else Ray's default CPU."""
    if cluster.get("GPU", 0) > 0 and any(a.wants_gpu() for a in auditors):
        return {"num_gpus": 1}
    return {}


def _map_part_task(url: str, catalog_path: str, manifest, k: int, auditors: list[Auditor], known: dict):
    """On a worker: part k through every auditor's map (see runner.map_part)."""
    from .runner import for_reduce, map_part

    store = Store(url, catalog_path)
    ctx = AuditContext(store, manifest.id, manifest, engine="ray")
    for auditor in auditors:
        auditor.prepare(ctx)
    return for_reduce(map_part(store, k, auditors, ctx, known), auditors, ctx)
