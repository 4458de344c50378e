"""The workspace catalog: an embedded SQLite database in WAL mode.

It is the single source of truth for which versions exist. A version becomes visible only when its
catalog row commits, so a process killed at any moment leaves the old state or the new version.
Later issues add their own tables here (runs, jobs, annotations) through `ensure_schema`.
"""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import contextmanager
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


class Catalog:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.ensure_schema(SCHEMA)

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
        with self.write() as conn:
            # statement by statement: executescript() would COMMIT behind our transaction's back
            for statement in ddl.split(";"):
                if statement.strip():
                    conn.execute(statement)

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction holding SQLite's write lock from the start (BEGIN IMMEDIATE), so that
        reading the next version number and inserting the version cannot interleave between
        processes."""
        conn = self.connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        finally:
            conn.close()

    def query(self, sql: str, params: tuple = ()) -> list[sqlite3.Row]:
        conn = self.connect()
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    @staticmethod
    def row_to_summary(row: sqlite3.Row) -> dict:
        d = dict(row)
        d["parents"] = json.loads(d["parents"])
        return d
