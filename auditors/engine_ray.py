"""The Ray engine: an audit's per-record work (each streaming auditor's `map`, through its record
cache) as one Ray task per part of the version, on a local or remote Ray cluster.

What runs where:
- a worker reads its part's segment straight from the workspace storage (a local folder every node
  mounts, or `s3://...`), never through the driver, runs every auditor's `map` on it, writes the
  record-cache chunks next to the workspace's other objects, and returns the part's results as Arrow;
- the driver collects the parts in version order (the progress bar advances as each one finishes),
  runs each auditor's `reduce` and commits the audit exactly as the local engine does: one commit,
  the same catalog. The reduce steps (grouping by key, MinHash clustering) run on the driver.

A task whose worker dies is retried by Ray (`max_retries`); a part's work is a pure function of its
rows, and cache chunks are written atomically, so a retry gives the same results and nothing is
committed twice. Auditors travel to the workers as fresh copies built from their configs.
"""

from __future__ import annotations

import copy
import os
from typing import Any

from assay.core.errors import AssayError
from assay.core.progress import progress
from assay.core.store import Store

from .base import AuditContext, Auditor

RETRIES = 3  # attempts after a worker dies mid-task (Ray's own default for tasks)
ENGINES = ("local", "ray")


def resolve_engine(engine: str | None) -> str:
    """The engine asked for, else $ASSAY_ENGINE, else local."""
    chosen = engine or os.environ.get("ASSAY_ENGINE") or "local"
    if chosen not in ENGINES:
        raise AssayError(f"unknown engine {chosen!r}: engines are {', '.join(ENGINES)}")
    return chosen


def connect(address: str | None) -> Any:
    """ray, initialised: the cluster at `address` (or $RAY_ADDRESS); with neither, a local cluster
    started for this process. A cluster that cannot be reached is an AssayError naming it."""
    import ray

    address = address or os.environ.get("RAY_ADDRESS")
    if ray.is_initialized():
        return ray
    if address and address not in ("auto", "local") and not address.startswith("ray://"):
        _check_reachable(address)
    try:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise AssayError(f"cannot reach the Ray cluster at {address or 'a new local cluster'}: {exc}") from exc
    return ray


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail in seconds on an address nothing listens at: ray.init would wait minutes for its GCS."""
    import socket

    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            pass
    except (OSError, ValueError) as exc:
        raise AssayError(f"cannot reach the Ray cluster at {address}: {exc}; start one with `ray start --head` "
                         f"or give its address (host:port of the head node)") from exc


def map_by_part_on_ray(store: Store, manifest, auditors: list[Auditor], ctx: AuditContext, show_progress: bool | None,
                       seconds: dict[str, float], address: str | None = None) -> dict:
    """`runner._map_by_part`, each part a Ray task."""
    from .runner import combine

    ray = connect(address)
    known = {a.name: ctx.cached(a.map_key()).cached_ids() for a in auditors}
    # fresh copies: a prepared auditor holds the driver's store (an open SQLite connection)
    shipped = [type(a)(copy.deepcopy(a.config)) for a in auditors]
    task = ray.remote(max_retries=RETRIES)(_map_part_task)
    known_ref = ray.put(known)
    pending = {task.remote(store.url, str(store.catalog.path), manifest, k, shipped, known_ref): k
               for k in range(len(manifest.parts))}
    done: dict[int, Any] = {}
    try:
        with progress(f"mapping {manifest.ref} on Ray", total=manifest.records, enabled=show_progress) as bar:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                k = pending.pop(ready[0])
                done[k] = ray.get(ready[0])
                bar.advance(manifest.parts[k].kept)
    except ray.exceptions.RayError as exc:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise AssayError(f"the Ray engine failed on {manifest.ref}: {exc}") from exc
    return combine([done[k] for k in range(len(manifest.parts))], auditors, ctx, seconds)


def _map_part_task(url: str, catalog_path: str, manifest, k: int, auditors: list[Auditor], known: dict):
    """On a worker: part k through every auditor's map (see runner.map_part)."""
    from .runner import map_part

    store = Store(url, catalog_path)
    ctx = AuditContext(store, manifest.id, manifest)
    for auditor in auditors:
        auditor.prepare(ctx)
    return map_part(store, k, auditors, ctx, known)
