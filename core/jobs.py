"""Background jobs: long work (generate, audit, train, the demo) started from the app, recorded in
the workspace so that a page reload, a second browser tab or a restarted app server sees the same job.

A job is an `assay ... --json` command. `start` records it in the catalog's `jobs` table and launches a
small supervisor in a new process session (so it outlives the Streamlit session that started it and
can be cancelled as a group); the supervisor runs the command, reads its one JSON object from stdout,
and records the outcome. The command's stderr is the job's log. While it runs, library code reports
progress through `report(...)` (the progress bars of `assay.core.progress` do it by themselves).

A job is "running" only while its supervisor lives: a supervisor killed with SIGKILL (or a machine
restart) leaves a row that says running, so every read re-checks the process and marks such a job
failed, pointing at its log.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .catalog import Catalog
from .errors import AssayError

DDL = """
CREATE TABLE IF NOT EXISTS jobs (
    id          TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    title       TEXT NOT NULL,
    argv        TEXT NOT NULL,          -- JSON list: the assay command, without 'assay', '-w', '--json'
    status      TEXT NOT NULL,          -- queued | running | succeeded | failed | cancelled
    pid         INTEGER,                -- the supervisor's pid (leader of the job's process group)
    pid_start   TEXT,                   -- its start time in /proc, so a reused pid is not taken for it
    created_at  TEXT NOT NULL,
    started_at  TEXT,
    ended_at    TEXT,
    done        INTEGER NOT NULL DEFAULT 0,
    total       INTEGER,
    stage       TEXT NOT NULL DEFAULT '',
    info        TEXT NOT NULL DEFAULT '{}',
    result      TEXT,
    error       TEXT,
    log_path    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_created ON jobs (created_at);
"""

ACTIVE = ("queued", "running")
ENV_JOB, ENV_CATALOG = "ASSAY_JOB_ID", "ASSAY_JOB_CATALOG"


@dataclass
class Job:
    id: str
    kind: str
    title: str
    argv: list[str]
    status: str
    pid: int | None
    created: str
    started: str | None
    ended: str | None
    done: int
    total: int | None
    stage: str
    info: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] | None = None
    error: str | None = None
    log_path: str = ""

    @property
    def finished(self) -> bool:
        return self.status not in ACTIVE

    @property
    def fraction(self) -> float | None:
        if not self.total:
            return 1.0 if self.status == "succeeded" else None
        return min(1.0, self.done / self.total)

    def summary(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("id", "kind", "title", "argv", "status", "created", "started",
                                               "ended", "done", "total", "stage", "info", "result", "error",
                                               "log_path")}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _catalog(store) -> Catalog:
    store.catalog.ensure_schema(DDL)  # a no-op once applied through this thread's open connection
    return store.catalog


def _proc_start(pid: int) -> str | None:
    """The process's start time (clock ticks since boot) from /proc, or None if it is gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):  # a zombie has finished; only its exit status is left to collect
        return None
    return fields[19]


def _alive(pid: int | None, pid_start: str | None) -> bool:
    if not pid:
        return False
    if Path("/proc").is_dir():
        start = _proc_start(pid)
        return start is not None and (pid_start is None or start == pid_start)
    try:  # no /proc (macOS): signal 0 only says a process with that pid exists
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def _row_to_job(row) -> Job:
    return Job(id=row["id"], kind=row["kind"], title=row["title"], argv=json.loads(row["argv"]),
               status=row["status"], pid=row["pid"], created=row["created_at"], started=row["started_at"],
               ended=row["ended_at"], done=row["done"], total=row["total"], stage=row["stage"],
               info=json.loads(row["info"] or "{}"), result=json.loads(row["result"]) if row["result"] else None,
               error=row["error"], log_path=row["log_path"])


def _settle(catalog: Catalog, row) -> None:
    """Mark a job failed when the row says it is active but its supervisor is gone."""
    if row["status"] not in ACTIVE or _alive(row["pid"], row["pid_start"]):
        return
    if row["status"] == "queued" and row["pid"] is None:
        return  # start() is between inserting the row and launching the process
    with catalog.write() as conn:
        conn.execute("UPDATE jobs SET status='failed', ended_at=?, error=? "
                     "WHERE id=? AND status IN ('queued','running')",
                     (_now(), f"the job's process died without recording an outcome; see its log {row['log_path']}",
                      row["id"]))


def start(store, argv: list[str], *, kind: str, title: str | None = None, env: dict[str, str] | None = None) -> str:
    """Launch `assay <argv> --json` on this workspace as a background job; return the job id. `env` is
    added to the job's environment and never recorded (the place for an API key: not in argv, which
    the catalog keeps and the app shows)."""
    if not argv or not all(isinstance(a, str) for a in argv):
        raise AssayError("a job needs an assay command as a list of strings")
    catalog = _catalog(store)
    job_id = time.strftime("%Y%m%d-%H%M%S-", time.gmtime()) + uuid.uuid4().hex[:6]
    log_dir = Path(catalog.path).parent / "jobs"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{job_id}.log"
    with catalog.write() as conn:
        conn.execute("INSERT INTO jobs (id, kind, title, argv, status, created_at, log_path) VALUES (?,?,?,?,?,?,?)",
                     (job_id, kind, title or " ".join(argv), json.dumps(argv), "queued", _now(), str(log_path)))
    # ASSAY_CATALOG too: the command must open the catalog this store uses (an object-store workspace's
    # catalog may have been given to Store directly, and the URL alone does not name it)
    env = {**os.environ, **(env or {}), ENV_JOB: job_id, ENV_CATALOG: str(catalog.path),
           "ASSAY_CATALOG": str(catalog.path), "PYTHONUNBUFFERED": "1"}
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "assay.core.jobs", store.url, job_id],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                                start_new_session=True)  # own process group: survives the app, cancels as one
    with catalog.write() as conn:
        conn.execute("UPDATE jobs SET pid=?, pid_start=? WHERE id=? AND pid IS NULL",
                     (proc.pid, _proc_start(proc.pid), job_id))
    return job_id


def get(store, job_id: str) -> Job:
    catalog = _catalog(store)
    rows = catalog.query("SELECT * FROM jobs WHERE id = ?", (job_id,))
    if not rows:
        raise AssayError(f"unknown job {job_id!r}")
    _settle(catalog, rows[0])
    return _row_to_job(catalog.query("SELECT * FROM jobs WHERE id = ?", (job_id,))[0])


def wait(store, job_id: str, until=None, *, timeout: float = 120.0, poll: float = 0.1) -> Job:
    """Poll a job until `until(job)` holds (default: it finished); AssayError with the log tail on timeout."""
    until = until or (lambda job: job.finished)
    deadline = time.monotonic() + timeout
    while True:
        job = get(store, job_id)
        if until(job):
            return job
        if time.monotonic() >= deadline:
            raise AssayError(f"job {job_id} did not reach the awaited state in {timeout:.0f}s; "
                             f"last: {job.summary()}\n{log_tail(store, job_id)}")
        time.sleep(poll)


def list_jobs(store, kind: str | None = None, limit: int = 50) -> list[Job]:
    """Jobs, newest first (active ones re-checked for a dead process)."""
    catalog = _catalog(store)
    sql = "SELECT * FROM jobs" + (" WHERE kind = ?" if kind else "") + " ORDER BY created_at DESC, id DESC LIMIT ?"
    rows = catalog.query(sql, ((kind, limit) if kind else (limit,)))
    stale = [r for r in rows if r["status"] in ACTIVE]
    for row in stale:
        _settle(catalog, row)
    if stale:
        rows = catalog.query(sql, ((kind, limit) if kind else (limit,)))
    return [_row_to_job(r) for r in rows]


def log_tail(store, job_id: str, lines: int = 100) -> str:
    job = get(store, job_id)
    try:
        with open(job.log_path, encoding="utf-8", errors="replace") as fh:
            return "".join(deque(fh, maxlen=lines))
    except FileNotFoundError:
        return ""


def cancel(store, job_id: str) -> Job:
    """Stop a running job (SIGTERM to its process group); a finished job is left as it is."""
    catalog = _catalog(store)
    job = get(store, job_id)
    if job.finished:
        return job
    with catalog.write() as conn:
        conn.execute("UPDATE jobs SET status='cancelled', ended_at=?, error='cancelled by the user' "
                     "WHERE id=? AND status IN ('queued','running')", (_now(), job_id))
    row = catalog.query("SELECT pid, pid_start FROM jobs WHERE id = ?", (job_id,))[0]
    if _alive(row["pid"], row["pid_start"]):
        try:
            os.killpg(row["pid"], signal.SIGTERM)
        except ProcessLookupError:
            pass
    return get(store, job_id)


# ---- inside a job process ------------------------------------------------------------------------
_reporter: dict[str, Any] = {}


def current_job() -> str | None:
    return os.environ.get(ENV_JOB)


def report(done: int | None = None, total: int | None = None, stage: str | None = None, *,
           force: bool = False, **info: Any) -> None:
    """Record progress of the job this process runs for (no-op outside a job). Writes at most twice a
    second unless `force` or the stage changes, so a tight loop can call it freely."""
    job_id = os.environ.get(ENV_JOB)
    catalog_path = os.environ.get(ENV_CATALOG)
    if not job_id or not catalog_path:
        return
    state = _reporter
    if state.get("job") != job_id:
        state.clear()
        state.update(job=job_id, catalog=Catalog(catalog_path), info={}, last=0.0,
                     done=0, total=None, stage="")
    stage_changed = stage is not None and stage != state["stage"]
    if done is not None:
        state["done"] = int(done)
    if total is not None:
        state["total"] = int(total)
    if stage is not None:
        state["stage"] = stage
    state["info"].update(info)
    now = time.monotonic()
    finished_bar = state["total"] is not None and state["done"] >= state["total"]
    if not (force or stage_changed or finished_bar or now - state["last"] >= 0.5):
        return
    state["last"] = now
    try:
        with state["catalog"].write() as conn:
            conn.execute("UPDATE jobs SET done=?, total=?, stage=?, info=? WHERE id=?",
                         (state["done"], state["total"], state["stage"], json.dumps(state["info"], default=str),
                          job_id))
    except Exception as exc:  # progress is best effort: a busy catalog must not fail the work itself
        print(f"[job] progress not recorded: {exc}", file=sys.stderr)


def _supervise(workspace: str, job_id: str) -> int:
    """Run the job's command, wait for it, record its outcome."""
    catalog = Catalog(os.environ[ENV_CATALOG])
    row = catalog.query("SELECT * FROM jobs WHERE id = ?", (job_id,))[0]
    argv = json.loads(row["argv"])
    with catalog.write() as conn:
        cur = conn.execute("UPDATE jobs SET status='running', started_at=?, pid=?, pid_start=? "
                           "WHERE id=? AND status='queued'", (_now(), os.getpid(), _proc_start(os.getpid()), job_id))
        if cur.rowcount == 0:
            return 0  # cancelled before it started
    cmd = [sys.executable, "-m", "assay.app.cli", "-w", workspace, *argv, "--json"]
    print(f"[job {job_id}] {' '.join(cmd[2:])}", file=sys.stderr, flush=True)
    child = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=None, text=True)

    def on_term(signum, frame):  # cancel(): pass it on, then record below
        child.terminate()

    signal.signal(signal.SIGTERM, on_term)
    stdout, _ = child.communicate()
    lines = [ln for ln in (stdout or "").splitlines() if ln.strip()]
    try:
        result = json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        result = None
    ok = child.returncode == 0 and isinstance(result, dict) and "error" not in result
    if ok:
        error = None
    elif isinstance(result, dict) and result.get("error"):
        error = str(result["error"])
    else:
        error = f"exit status {child.returncode}; see the log {row['log_path']}"
    print(f"[job {job_id}] exit status {child.returncode}", file=sys.stderr, flush=True)
    with catalog.write() as conn:
        conn.execute("UPDATE jobs SET status=?, ended_at=?, result=?, error=? WHERE id=? AND status='running'",
                     ("succeeded" if ok else "failed", _now(), json.dumps(result, default=str) if ok else None,
                      error, job_id))
        if ok:  # a finished job's bar is full even when the command reported no progress
            conn.execute("UPDATE jobs SET done=MAX(done, COALESCE(total, 1)), total=COALESCE(total, 1) WHERE id=?",
                         (job_id,))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(_supervise(sys.argv[1], sys.argv[2]))
