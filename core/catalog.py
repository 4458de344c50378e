"""The workspace catalog: an embedded SQLite database in WAL mode.

It is the single source of truth for which versions exist. A version becomes visible only when its
catalog row commits, so a process killed at any moment leaves the old state or the new version.
Later issues add their own tables here (runs, jobs, annotations) through `ensure_schema`.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    id            TEXT PRIMARY KEY,
    dataset       TEXT NOT NULL,
    number        INTEGER NOT NULL,
    created_at    TEXT NOT NULL,
    operation     TEXT NOT NULL,
    records       INTEGER NOT NULL,
    content_hash  TEXT NOT NULL,
    parents       TEXT NOT NULL,           -- JSON list of version ids
    manifest_path TEXT NOT NULL,
    UNIQUE (dataset, number)
);
CREATE INDEX IF NOT EXISTS versions_by_dataset ON versions (dataset, number);
"""


# Open connections, per thread (a sqlite3 connection belongs to the thread that opened it) and per
# process (never used across a fork). Opening and closing one per operation (closing the last one
# checkpoints the WAL) made an annotator's next-record + decision 17.8 ms and listing versions
# 0.67 ms; kept open, 10.5 ms and 0.05 ms (bench/catalog_bench.py). A thread keeps its few most
# recent catalogs open; a thread that ends (a Streamlit script run) takes its connections with it.
_OPEN_PER_THREAD = 4
_open = threading.local()


@dataclass
class _OpenCatalog:
    conn: sqlite3.Connection
    # the file's (device, inode) when opened: while the connection is open that inode cannot be
    # reused, so a different one at the path means the catalog was deleted and created again
    identity: tuple[int, int] | None
    applied_ddl: set[str] = field(default_factory=set)


def _thread_connections() -> "OrderedDict[str, _OpenCatalog]":
    if getattr(_open, "pid", None) != os.getpid():
        _open.pid, _open.connections = os.getpid(), OrderedDict()
    return _open.connections


class Catalog:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.ensure_schema(SCHEMA)

    def _identity(self) -> tuple[int, int] | None:
        """The database file's (device, inode): a catalog deleted and created again at the same path
        is another file, which an open connection would not see."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return st.st_dev, st.st_ino

    def _open_entry(self) -> "_OpenCatalog | None":
        """This thread's open connection to the catalog, opened if needed; None while it is inside a
        transaction (a write() that calls back into the catalog)."""
        key = str(self.path.resolve())
        conns = _thread_connections()
        entry = conns.get(key)
        if entry is not None and entry.conn.in_transaction:
            return None
        if entry is not None and entry.identity != self._identity():
            del conns[key]
            entry.conn.close()
            entry = None
        if entry is None:
            conn = self.connect()
            entry = conns[key] = _OpenCatalog(conn, self._identity())
            while len(conns) > _OPEN_PER_THREAD:
                # not closed here: a caller up the stack may still be using it; it closes when the
                # last reference goes
                conns.popitem(last=False)
        conns.move_to_end(key)
        return entry

    @contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        """A connection for one operation: this thread's open one, kept for the next operation; a
        fresh one inside this thread's own write transaction, as another process would see it."""
        entry = self._open_entry()
        if entry is None:
            fresh = self.connect()
            try:
                yield fresh
            finally:
                fresh.close()
            return
        try:
            yield entry.conn
        except sqlite3.Error:
            # a connection left in an unknown state is not handed out again
            _thread_connections().pop(str(self.path.resolve()), None)
            entry.conn.close()
            raise

    def connect(self) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN ourselves, so a write transaction is exactly the
        # statements between BEGIN IMMEDIATE and COMMIT. timeout: concurrent committers queue for
        # the write lock rather than failing with "database is locked".
        conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        conn.row_factory = sqlite3.Row
        # Switching a *new* database file to WAL needs a lock that SQLite refuses at once (no busy
        # wait) while another process opens the same new file; retry until it is ours.
        deadline = time.monotonic() + 60
        while True:
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=60000")
        return conn

    def ensure_schema(self, ddl: str) -> None:
        entry = self._open_entry()
        if entry is not None and ddl in entry.applied_ddl:  # once per open connection, not an fsync a call
            return
        with self.write() as conn:
            # statement by statement: executescript() would COMMIT behind our transaction's back
            for statement in ddl.split(";"):
                if statement.strip():
                    conn.execute(statement)
        if entry is not None:
            entry.applied_ddl.add(ddl)

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction holding SQLite's write lock from the start (BEGIN IMMEDIATE), so that
        reading the next version number and inserting the version cannot interleave between
        processes."""
        with self.connection() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def query(self, sql: str, params: tuple = ()) -> list[sqlite3.Row]:
        with self.connection() as conn:
            return conn.execute(sql, params).fetchall()

    @staticmethod
    def row_to_summary(row: sqlite3.Row) -> dict:
        d = dict(row)
        d["parents"] = json.loads(d["parents"])
        return d
