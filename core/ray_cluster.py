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
    address = address or os.environ.get("RAY_ADDRESS")
    joining = bool(address) and address not in ("auto", "local") and not address.startswith("ray://")
    if joining:
        _token_if_available()  # before ray is imported: it reads RAY_AUTH_MODE once, at import
    import ray

    if ray.is_initialized():
        return ray
    if joining:
        _check_reachable(address)
    try:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        hint = ("; a cluster with token authentication (the default of `ray start` since Ray 2.60) needs its "
                "token here: RAY_AUTH_TOKEN=<`ray get-auth-token` on the head>") if address else ""
        raise AssayError(f"cannot reach the Ray cluster at {address or 'a new local cluster'}: {exc}{hint}") from exc
    return ray


def _token_if_available() -> None:
    """Ray >= 2.60 starts a head (`ray start --head`) with token authentication on, but a driver that
    joins by address sends no token unless RAY_AUTH_MODE=token, and fails after 20 s of retries. With
    a token at hand (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, or the file `ray start` writes) send it: a
    cluster without authentication accepts a driver that sends one. Ray reads the mode when it is
    first imported, so a process that imported ray already keeps what it had."""
    if os.environ.get("RAY_AUTH_MODE"):
        return  # the user's choice
    default_file = os.path.join(os.path.expanduser("~"), ".ray", "auth_token")
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.isfile(default_file):
        os.environ["RAY_AUTH_MODE"] = "token"


# how often a driver waiting on tasks checks that the cluster's head still answers
PROBE_SECONDS = 5.0


def wait_next(ray: Any, refs: list, what: str) -> Any:
    """The first of `refs` to finish (Ray's `wait`), checking every PROBE_SECONDS that the cluster's
    head still answers: a cluster that goes away mid-run is an AssayError naming it within seconds,
    where Ray's driver would wait a minute for its GCS and then end the process with a log line."""
    address = ray.get_runtime_context().gcs_address
    while True:
        ready, _ = ray.wait(refs, num_returns=1, timeout=PROBE_SECONDS)
        if ready:
            return ready[0]
        try:
            _check_reachable(address, timeout=PROBE_SECONDS)
        except AssayError:
            raise AssayError(f"the Ray cluster at {address} went away while {what}; nothing was committed") from None


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


def gather(ray: Any, refs: list, what: str, *, show_progress: bool | None = False,
           weights: list[int] | None = None) -> list:
    """Every task's result, in the order of `refs`, collected as they finish (the progress bar
    advances by each task's weight: records, say; 1 each by default). A task that fails beyond its
    retries cancels the rest and is an AssayError; a cluster that goes away too (see wait_next)."""
    from .progress import progress

    weights = weights or [1] * len(refs)
    done: dict[int, Any] = {}
    pending = {ref: k for k, ref in enumerate(refs)}
    try:
        with progress(f"{what} on Ray", total=sum(weights), enabled=show_progress) as bar:
            while pending:
                ready = wait_next(ray, list(pending), what)
                k = pending.pop(ready)
                done[k] = ray.get(ready)
                bar.advance(weights[k])
    except ray.exceptions.RayError as exc:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise AssayError(f"the Ray engine failed {what}: {exc}") from exc
    return [done[k] for k in range(len(refs))]
