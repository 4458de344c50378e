"""The annotation tables in the workspace catalog, and the two writes every part makes: the time
stamp and the admin-action log."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from ..records import dump_json
from ..store import Store

if TYPE_CHECKING:  # users.py imports this module: User is only an annotation here
    from .users import User

DDL = """
CREATE TABLE IF NOT EXISTS ann_users (
    name        TEXT PRIMARY KEY,
    role        TEXT NOT NULL,              -- admin | annotator
    pw_hash     TEXT NOT NULL,              -- scrypt$N$r$p$salt-hex$hash-hex
    created_at  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS ann_sessions (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    version_id    TEXT NOT NULL,
    label_schema  TEXT NOT NULL,            -- JSON: LabelSchema
    overlap       INTEGER NOT NULL,
    annotators    TEXT NOT NULL,            -- JSON list of user names, [] = every user
    status        TEXT NOT NULL,            -- open | closing | finalized
    items         INTEGER NOT NULL,
    created_by    TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    closing_at    TEXT,
    result_version TEXT,
    finalized_by  TEXT,
    finalized_at  TEXT
);
CREATE TABLE IF NOT EXISTS ann_items (
    session     TEXT NOT NULL,
    record_id   TEXT NOT NULL,
    seq         INTEGER NOT NULL,           -- hand-out order (0-based)
    row         INTEGER NOT NULL,           -- the record's first row in the version
    revision    INTEGER NOT NULL DEFAULT 0, -- bumped by every admin edit
    edit        TEXT,                       -- JSON {instruction, input, output} an admin set, or null
    edited_by   TEXT,
    edited_at   TEXT,
    claims      INTEGER NOT NULL DEFAULT 0,
    full        INTEGER NOT NULL DEFAULT 0, -- claims reached the session's overlap
    PRIMARY KEY (session, record_id)
);
CREATE INDEX IF NOT EXISTS ann_items_open ON ann_items (session, full, seq);
CREATE TABLE IF NOT EXISTS ann_claims (
    session     TEXT NOT NULL,
    annotator   TEXT NOT NULL,
    record_id   TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    claimed_at  TEXT NOT NULL,
    shown_at    TEXT NOT NULL,              -- when it was first put in front of the annotator (speed)
    PRIMARY KEY (session, annotator, record_id)
);
CREATE INDEX IF NOT EXISTS ann_claims_by_seq ON ann_claims (session, annotator, seq);
CREATE TABLE IF NOT EXISTS ann_decisions (
    session     TEXT NOT NULL,
    record_id   TEXT NOT NULL,
    annotator   TEXT NOT NULL,
    label       TEXT NOT NULL,              -- accept | reject
    reasons     TEXT NOT NULL,              -- JSON list
    category    TEXT,
    edit        TEXT,                       -- JSON {instruction, input, output} or null
    revision    INTEGER NOT NULL,           -- the record revision the annotator saw
    decided_at  TEXT NOT NULL,
    seconds     REAL,                       -- from being shown the record to deciding
    PRIMARY KEY (session, record_id, annotator)
);
CREATE TABLE IF NOT EXISTS ann_resolutions (
    session     TEXT NOT NULL,
    record_id   TEXT NOT NULL,
    label       TEXT NOT NULL,
    edit_of     TEXT,                       -- whose edit the admin kept (null: the record as it is)
    resolved_by TEXT NOT NULL,
    resolved_at TEXT NOT NULL,
    note        TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (session, record_id)
);
CREATE TABLE IF NOT EXISTS ann_log (
    at          TEXT NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    session     TEXT,
    detail      TEXT NOT NULL               -- JSON
);
"""


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds")


def _schema(store: Store) -> None:
    store.catalog.ensure_schema(DDL)  # a no-op once applied through this thread's open connection


def _log(conn, actor: User, action: str, session: str | None, detail: dict) -> None:
    conn.execute("INSERT INTO ann_log VALUES (?,?,?,?,?)", (_now(), actor.name, action, session, dump_json(detail)))


