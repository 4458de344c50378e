"""Reaching a Ray cluster, for the commands that can run on one (`--engine ray`): `assay audit`
(auditors/engine_ray.py) and `assay export` (pipelines/exporter.py)."""

from __future__ import annotations

import os
from typing import Any

from .errors import AssayError

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
