"""Compare two versions: two training runs with the same config, seed and evaluation sets.

The only thing that differs between the runs is the data, so the differences in their metrics are
what the data change did (up to run-to-run noise, which a fixed seed removes on one machine but not
across hardware). `delta` is b - a for every numeric metric both runs have: a negative
`reference_loss` delta means version b's model fits the held-out reference set better.
"""

from __future__ import annotations

from typing import Any

from assay.core.store import Store

from .config import TrainConfig
from .train import train


def compare(store: Store, a: str, b: str, config: TrainConfig | None = None, *,
            show_progress: bool | None = None) -> dict[str, Any]:
    """Train on a, then on b, with one config; return {"config", "data", "runs": {"a", "b"}, "delta"}."""
    config = config or TrainConfig.from_preset("cpu-smoke")
    config.validate()
    ma, mb = store.resolve(a), store.resolve(b)  # fail on a bad ref before any training starts
    diff = store.diff(ma.id, mb.id)
    runs = {}
    for key, manifest in (("a", ma), ("b", mb)):
        runs[key] = train(store, manifest.id, config, show_progress=show_progress)
    return {
        "config": config.to_dict(),
        "data": {"a": diff["a"], "b": diff["b"], "added": diff["added"], "removed": diff["removed"],
                 "unchanged": diff["unchanged"]},
        "runs": {key: _brief(run) for key, run in runs.items()},
        "delta": delta(runs["a"]["metrics"], runs["b"]["metrics"]),
    }


def _brief(run: dict[str, Any]) -> dict[str, Any]:
    return {k: run[k] for k in ("run_id", "version", "ref", "records", "path", "weights_path", "metrics", "curve")}


def delta(a: dict[str, Any], b: dict[str, Any]) -> dict[str, float]:
    """b - a for each numeric metric present in both (timings included: they are measurements too)."""
    out = {}
    for key, va in a.items():
        vb = b.get(key)
        if isinstance(va, (int, float)) and isinstance(vb, (int, float)) and not isinstance(va, bool):
            out[key] = vb - va
    return out
