"""The run journal: every LLM request and its outcome, kept in the workspace catalog.

Three tables sit beside `versions` in catalog.sqlite:

    llm_runs    one row a run: endpoint, model, parameters, status, sessions, wall time, requests sent
    llm_calls   one row a (run, key): the request, then its outcome (raw reply, value-or-error,
                error kind, attempts and what each failed attempt said, tokens, cached?)
    llm_cache   successful replies by request hash (model + messages + sampling params + seed), so
                an identical deterministic request is answered without the endpoint

Why SQLite and not a JSONL file beside the workspace: a transaction is all-or-nothing, so a killed
process never leaves a torn record to repair; the catalog is always a local file (even when the
objects live on object storage, where files cannot be appended); and `runs show --failures` is a
query. Cost is kept low by one writer thread that commits whatever results have queued up in one
transaction (group commit): one fsync per batch of replies, never one per request on the caller's
path.

Resume contract: a row whose status is `ok` or `failed` is finished and is never sent again; a row
still `pending` or `sent` (in flight when the process died) is sent again. `attempts` counts every
request that left this machine for that key, across sessions.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import queue
import re
import socket
import sqlite3
import threading
import time
from typing import Any, Iterable

from ..errors import AssayError

DDL = """
CREATE TABLE IF NOT EXISTS llm_runs (
    run_id        TEXT PRIMARY KEY,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    status        TEXT NOT NULL,              -- running | done | interrupted
    pid           INTEGER,
    host          TEXT,
    endpoint      TEXT NOT NULL,
    model         TEXT NOT NULL,
    params        TEXT NOT NULL,              -- JSON: the LLMConfig of the latest session
    sessions      INTEGER NOT NULL DEFAULT 0, -- 1 + how many times it was resumed
    wall_s        REAL NOT NULL DEFAULT 0,    -- summed over sessions
    http_requests INTEGER NOT NULL DEFAULT 0  -- requests that left this machine, retries included
);
CREATE TABLE IF NOT EXISTS llm_calls (
    run_id        TEXT NOT NULL,
    key           TEXT NOT NULL,
    seq           INTEGER NOT NULL,           -- order in which the key was first requested
    request_hash  TEXT NOT NULL,
    request       TEXT NOT NULL,              -- JSON: model, messages, params, json_mode
    status        TEXT NOT NULL,              -- pending | sent | ok | failed
    attempts      INTEGER NOT NULL DEFAULT 0,
    raw           TEXT,                       -- the reply as received (or the error body)
    error         TEXT,
    error_kind    TEXT,                       -- http | timeout | connection | bad_response | unparsable | off_schema | parse
    attempt_log   TEXT,                       -- JSON list: what each failed attempt said
    tokens_in     INTEGER NOT NULL DEFAULT 0,
    tokens_out    INTEGER NOT NULL DEFAULT 0,
    cached        INTEGER NOT NULL DEFAULT 0,
    latency_s     REAL,
    finish_reason TEXT,
    updated_at    TEXT,
    PRIMARY KEY (run_id, key)
);
CREATE INDEX IF NOT EXISTS llm_calls_by_status ON llm_calls (run_id, status);
CREATE TABLE IF NOT EXISTS llm_cache (
    request_hash  TEXT PRIMARY KEY,
    model         TEXT NOT NULL,
    raw           TEXT NOT NULL,
    finish_reason TEXT,
    tokens_in     INTEGER NOT NULL DEFAULT 0,
    tokens_out    INTEGER NOT NULL DEFAULT 0,
    created_at    TEXT NOT NULL
)
"""  # noqa: E501 (a line inside this DDL string; wrapping it would change the schema text SQLite stores)

FINISHED = ("ok", "failed")
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-:]{0,127}$")


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def check_run_id(run_id: str) -> str:
    if not isinstance(run_id, str) or not _RUN_ID.match(run_id):
        raise AssayError(f"invalid run id {run_id!r}: use letters, digits, '_', '-', '.', ':' "
                         "(up to 128 characters, starting with a letter or digit)")
    return run_id


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Journal:
    """Read side of the journal, plus opening a run (one transaction) and its writer."""

    def __init__(self, store):
        self.store = store
        self.catalog = store.catalog
        self.catalog.ensure_schema(DDL)

    def run(self, run_id: str) -> dict | None:
        rows = self.catalog.query("SELECT * FROM llm_runs WHERE run_id = ?", (run_id,))
        return dict(rows[0]) if rows else None

    def calls(self, run_id: str, keys: Iterable[str] | None = None) -> dict[str, dict]:
        """The journalled calls of a run (only `keys`, when given: a generator that sends a big run
        in chunks reads back one chunk's rows, not the whole run, each time)."""
        if keys is None:
            rows = self.catalog.query("SELECT * FROM llm_calls WHERE run_id = ? ORDER BY seq", (run_id,))
            return {r["key"]: dict(r) for r in rows}
        keys = list(keys)
        found: dict[str, dict] = {}
        for i in range(0, len(keys), 500):  # SQLite caps the number of bound parameters
            chunk = keys[i:i + 500]
            rows = self.catalog.query(
                f"SELECT * FROM llm_calls WHERE run_id = ? AND key IN ({','.join('?' * len(chunk))})",
                (run_id, *chunk))
            found.update({r["key"]: dict(r) for r in rows})
        return found

    def cache_lookup(self, hashes: Iterable[str]) -> dict[str, dict]:
        hashes = list(dict.fromkeys(hashes))
        found: dict[str, dict] = {}
        for i in range(0, len(hashes), 500):  # SQLite caps the number of bound parameters
            chunk = hashes[i:i + 500]
            rows = self.catalog.query(
                f"SELECT * FROM llm_cache WHERE request_hash IN ({','.join('?' * len(chunk))})", tuple(chunk))
            found.update({r["request_hash"]: dict(r) for r in rows})
        return found

    def open_run(self, run_id: str, *, endpoint: str, model: str, params: dict[str, Any],
                 new_calls: list[tuple[str, str, str]]) -> "JournalWriter":
        """Create or resume `run_id` and add `new_calls` (key, request_hash, request_json) as pending,
        in one transaction; returns the writer for the session."""
        host = socket.gethostname()
        stamp = now_iso()
        with self.catalog.write() as conn:
            row = conn.execute("SELECT status, pid, host, wall_s FROM llm_runs WHERE run_id = ?",
                               (run_id,)).fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO llm_runs (run_id, created_at, updated_at, status, pid, host, endpoint, model,"
                    " params, sessions) VALUES (?,?,?,?,?,?,?,?,?,1)",
                    (run_id, stamp, stamp, "running", os.getpid(), host, endpoint, model, json.dumps(params)))
                wall_base = 0.0
            else:
                if (row["status"] == "running" and row["host"] == host and row["pid"] != os.getpid()
                        and _pid_alive(row["pid"])):
                    raise AssayError(f"run {run_id!r} is already running (process {row['pid']}); "
                                     "wait for it or use another run id")
                conn.execute(
                    "UPDATE llm_runs SET updated_at=?, status='running', pid=?, host=?, endpoint=?, model=?,"
                    " params=?, sessions=sessions+1 WHERE run_id=?",
                    (stamp, os.getpid(), host, endpoint, model, json.dumps(params), run_id))
                wall_base = row["wall_s"]
            seq0 = conn.execute("SELECT COALESCE(MAX(seq), -1) + 1 FROM llm_calls WHERE run_id = ?",
                                (run_id,)).fetchone()[0]
            conn.executemany(
                "INSERT OR IGNORE INTO llm_calls (run_id, key, seq, request_hash, request, status, updated_at)"
                " VALUES (?,?,?,?,?,'pending',?)",
                [(run_id, key, seq0 + i, h, req, stamp) for i, (key, h, req) in enumerate(new_calls)])
        return JournalWriter(self.catalog, run_id, wall_base)


class JournalWriter:
    """Writes a session's events from one background thread, committing them in groups.

    Callers (the request workers) only put events on a queue, so the journal never sits on the
    request path; each transaction also refreshes the run's wall time, so a killed run still shows
    how long it ran."""

    _STOP = object()

    def __init__(self, catalog, run_id: str, wall_base: float):
        self.catalog, self.run_id, self.wall_base = catalog, run_id, wall_base
        self.t0 = time.monotonic()
        self.error: BaseException | None = None
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name=f"journal-{run_id}", daemon=True)
        self._thread.start()

    # ---- events ---------------------------------------------------------------------------------
    def sent(self, key: str, attempts: int) -> None:
        """A request for `key` is about to leave: mark it in flight (a resume sends it again)."""
        self._q.put(("sent", key, attempts))

    def done(self, key: str, *, ok: bool, attempts: int, raw: str | None, error: str | None,
             error_kind: str | None, attempt_log: list[str], tokens_in: int, tokens_out: int,
             cached: bool, latency_s: float | None, finish_reason: str | None,
             cache_entry: tuple[str, str] | None = None) -> None:
        """The outcome for `key`; with cache_entry (request_hash, model) the reply is also cached."""
        self._q.put(("done", key, ok, attempts, raw, error, error_kind, attempt_log, tokens_in, tokens_out,
                     cached, latency_s, finish_reason, cache_entry))

    def close(self, status: str = "done", params: dict[str, Any] | None = None) -> None:
        """Flush, then mark the run `status` (and replace its recorded params, when given)."""
        self._q.put((self._STOP, status, params))
        self._thread.join()
        if self.error is not None:
            raise AssayError(f"could not write the journal of run {self.run_id!r}: {self.error}") from self.error

    # ---- the writer thread ---------------------------------------------------------------------
    def _loop(self) -> None:
        conn = self.catalog.connect()
        try:
            while True:
                items = [self._q.get()]
                while True:
                    try:
                        items.append(self._q.get_nowait())
                    except queue.Empty:
                        break
                stop = next((it for it in items if it[0] is self._STOP), None)
                if self.error is None:
                    try:
                        self._write(conn, [it for it in items if it[0] is not self._STOP],
                                    *(stop[1:] if stop else (None, None)))
                    except Exception as exc:  # kept and raised by close(): the run must not look journalled
                        self.error = exc
                if stop is not None:
                    return
        finally:
            conn.close()

    def _write(self, conn: sqlite3.Connection, items: list[tuple], status: str | None,
               params: dict[str, Any] | None) -> None:
        stamp = now_iso()
        sent = 0
        conn.execute("BEGIN IMMEDIATE")
        try:
            for it in items:
                if it[0] == "sent":
                    _, key, attempts = it
                    sent += 1
                    conn.execute("UPDATE llm_calls SET status='sent', attempts=?, updated_at=? "
                                 "WHERE run_id=? AND key=?", (attempts, stamp, self.run_id, key))
                else:
                    (_, key, ok, attempts, raw, error, kind, log, t_in, t_out, cached, latency, finish,
                     cache_entry) = it
                    conn.execute(
                        "UPDATE llm_calls SET status=?, attempts=?, raw=?, error=?, error_kind=?, attempt_log=?,"
                        " tokens_in=?, tokens_out=?, cached=?, latency_s=?, finish_reason=?, updated_at=?"
                        " WHERE run_id=? AND key=?",
                        ("ok" if ok else "failed", attempts, raw, error, kind, json.dumps(log) if log else None,
                         t_in, t_out, int(cached), latency, finish, stamp, self.run_id, key))
                    if cache_entry is not None:
                        conn.execute(
                            "INSERT OR REPLACE INTO llm_cache (request_hash, model, raw, finish_reason, tokens_in,"
                            " tokens_out, created_at) VALUES (?,?,?,?,?,?,?)",
                            (cache_entry[0], cache_entry[1], raw, finish, t_in, t_out, stamp))
            conn.execute(
                "UPDATE llm_runs SET updated_at=?, wall_s=?, http_requests=http_requests+? WHERE run_id=?",
                (stamp, self.wall_base + time.monotonic() - self.t0, sent, self.run_id))
            if status:
                conn.execute("UPDATE llm_runs SET status=? WHERE run_id=?", (status, self.run_id))
            if params is not None:
                conn.execute("UPDATE llm_runs SET params=? WHERE run_id=?", (json.dumps(params), self.run_id))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


# ---- listing runs (the library side of `assay runs`) -----------------------------------------------
_COUNTS = """
SELECT run_id, COUNT(*) AS requested, SUM(status = 'ok') AS ok, SUM(status = 'failed') AS failed,
       SUM(status IN ('pending', 'sent')) AS unfinished, SUM(cached) AS cached,
       SUM(tokens_in) AS tokens_in, SUM(tokens_out) AS tokens_out
FROM llm_calls {where} GROUP BY run_id
"""


def _record(row: dict, counts: dict | None) -> dict[str, Any]:
    status = row["status"]
    if status == "running" and row["host"] == socket.gethostname() and not _pid_alive(row["pid"]):
        status = "interrupted"  # killed without a chance to say so; resume it with the same run id
    counts = counts or {}
    return {
        "run_id": row["run_id"], "status": status, "endpoint": row["endpoint"], "model": row["model"],
        "params": json.loads(row["params"]),
        "requested": counts.get("requested") or 0, "ok": counts.get("ok") or 0, "failed": counts.get("failed") or 0,
        "unfinished": counts.get("unfinished") or 0, "cached": counts.get("cached") or 0,
        "tokens_in": counts.get("tokens_in") or 0, "tokens_out": counts.get("tokens_out") or 0,
        "http_requests": row["http_requests"], "sessions": row["sessions"], "wall_s": round(row["wall_s"], 3),
        "created_at": row["created_at"], "updated_at": row["updated_at"],
    }


def list_llm_runs(store) -> list[dict[str, Any]]:
    """Every LLM run in the workspace, oldest first, with its counts and tokens."""
    journal = Journal(store)
    counts = {r["run_id"]: dict(r) for r in journal.catalog.query(_COUNTS.format(where=""))}
    rows = journal.catalog.query("SELECT * FROM llm_runs ORDER BY created_at, run_id")
    return [_record(dict(r), counts.get(r["run_id"])) for r in rows]


def run_record(store, run_id: str) -> dict[str, Any]:
    """One run's record: endpoint, model, parameters, requested/ok/failed/cached counts, tokens in
    and out, requests sent, wall time."""
    journal = Journal(store)
    row = journal.run(run_id)
    if row is None:
        known = [r["run_id"] for r in journal.catalog.query("SELECT run_id FROM llm_runs ORDER BY created_at")]
        hint = f"; runs: {', '.join(known[-10:])}" if known else "; there are no runs in this workspace"
        raise AssayError(f"unknown run {run_id!r}{hint}")
    counts = journal.catalog.query(_COUNTS.format(where="WHERE run_id = ?"), (run_id,))
    return _record(row, dict(counts[0]) if counts else None)


def run_calls(store, run_id: str, status: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
    """A run's journalled calls in request order (optionally only one status), decoded."""
    run_record(store, run_id)  # a clear error for an unknown run
    sql = "SELECT * FROM llm_calls WHERE run_id = ?" + (" AND status = ?" if status else "") + " ORDER BY seq"
    if limit:
        sql += f" LIMIT {int(limit)}"
    rows = store.catalog.query(sql, (run_id, status) if status else (run_id,))
    out = []
    for r in rows:
        d = dict(r)
        d["request"] = json.loads(d["request"])
        d["attempt_log"] = json.loads(d["attempt_log"]) if d["attempt_log"] else []
        d["cached"] = bool(d["cached"])
        out.append(d)
    return out


def run_failures(store, run_id: str, limit: int | None = None) -> list[dict[str, Any]]:
    """The failed calls of a run: key, error kind and message, attempts (and what each said), the raw
    reply, and the request that produced it."""
    return [{k: c[k] for k in ("key", "error_kind", "error", "attempts", "attempt_log", "raw", "request",
                               "finish_reason", "updated_at")}
            for c in run_calls(store, run_id, status="failed", limit=limit)]
