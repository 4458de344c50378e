"""Annotation sessions: people review a version's records in the browser, and their decisions become
a new, recorded version.

Everything lives in the workspace catalog (SQLite, WAL), beside `versions`:

    ann_users        name, role (admin | annotator), scrypt password hash (never the password)
    ann_sessions     a session over one version: label schema, overlap k, annotators, status
    ann_items        one row a record of the session: hand-out order, revision, an admin's edit,
                     how many annotators hold it (claims) and whether that reached k (full)
    ann_claims       which annotator was handed which record (the queue, and where to resume)
    ann_decisions    one decision a (session, record, annotator), with the revision it was made on
    ann_resolutions  an admin's verdict on a conflict
    ann_log          admin actions that change or remove something: who, what, when

Why these rules:
- Hand-out is a claim taken inside one write transaction (BEGIN IMMEDIATE), in a fixed order (the
  record's first row in the version), so two annotators asking at the same moment queue on SQLite's
  write lock and can never both take the k-th copy of a record; the same workspace always hands out
  the same records in the same order.
- A decision is written in its own transaction the moment it is made; two annotators deciding on the
  same record keep one row each (the key includes the annotator). Each decision carries the record
  revision it was made on: when an admin has changed the record since, the decision is refused with
  a message instead of silently applying to text the annotator never saw.
- Resuming is a query, not client state: an annotator's next record is the first one they claimed
  and have not decided at its current revision, else a new claim.
- Every function takes the acting user and checks the role stored in the catalog (not the role the
  caller's object claims): an annotator cannot finalise, resolve, edit, delete or read others' work.
  `OPERATOR` stands for whoever runs the CLI on the workspace files (they can open the SQLite file
  anyway), and for the app in open local mode (a workspace with no users).

A record that appears twice in a version is one item: it is reviewed once, and the decision applies
to each of its rows.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import re
import secrets
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

import numpy as np
import polars as pl
import pyarrow as pa

from .errors import AssayError
from .records import RECORD_SCHEMA, dump_json, record_id
from .store import Manifest, Store, VersionWriter

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

ROLES = ("admin", "annotator")
LABELS = ("accept", "reject")
EDIT_FIELDS = ("instruction", "input", "output")  # an Alpaca record's; a chat record's edit is its "messages"
# scrypt cost: 2**14 x 8 x 1 is the interactive-login setting of the scrypt paper (~16 MB, ~50 ms)
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2 ** 14, 8, 1
MIN_PASSWORD = 8
_SESSION_NAME = re.compile(r"^[\w .@\-]{1,100}$")


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds")


def _schema(store: Store) -> None:
    store.catalog.ensure_schema(DDL)  # a no-op once applied through this thread's open connection


# ---- users ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class User:
    name: str
    role: str
    operator: bool = False  # the local operator (CLI, open mode): not a row in ann_users

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


OPERATOR = User("local", "admin", operator=True)


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
    except ValueError:
        return False
    if kind != "scrypt":
        return False
    got = hashlib.scrypt(password.encode("utf-8"), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p),
                         dklen=len(digest) // 2)
    return hmac.compare_digest(got.hex(), digest)


_DUMMY_HASH: list[str] = []


def has_users(store: Store) -> bool:
    _schema(store)
    return bool(store.catalog.query("SELECT 1 FROM ann_users LIMIT 1"))


def add_user(store: Store, actor: User, name: str, password: str, role: str = "annotator") -> User:
    """Add a user. The first user of a workspace must be an admin (someone has to run sessions)."""
    _schema(store)
    name = (name or "").strip()
    if not name or len(name) > 64 or not all(c.isalnum() or c in "._-@" for c in name):
        raise AssayError(f"invalid user name {name!r}: use 1-64 letters, digits, '.', '_', '-', '@'")
    if name == OPERATOR.name:
        raise AssayError(f"user name {name!r} is reserved for the local operator")
    if role not in ROLES:
        raise AssayError(f"invalid role {role!r}: use admin or annotator")
    if len(password or "") < MIN_PASSWORD:
        raise AssayError(f"password for {name!r} too short: use at least {MIN_PASSWORD} characters")
    pw_hash = hash_password(password)  # before the write lock: it takes ~50 ms on purpose
    with store.catalog.write() as conn:
        first = conn.execute("SELECT COUNT(*) FROM ann_users").fetchone()[0] == 0
        if first and role != "admin":
            raise AssayError("the first user of a workspace must be an admin (--role admin)")
        if not first:
            _require_admin(conn, actor, "add users")
        if conn.execute("SELECT 1 FROM ann_users WHERE name = ?", (name,)).fetchone():
            raise AssayError(f"user {name!r} already exists")
        conn.execute("INSERT INTO ann_users VALUES (?,?,?,?)", (name, role, pw_hash, _now()))
        _log(conn, actor, "add_user", None, {"name": name, "role": role})
    return User(name, role)


def list_users(store: Store, actor: User) -> list[dict[str, Any]]:
    _schema(store)
    with store.catalog.write() as conn:
        _require_admin(conn, actor, "list users")
        rows = conn.execute("SELECT name, role, created_at FROM ann_users ORDER BY name").fetchall()
    return [dict(r) for r in rows]


def authenticate(store: Store, name: str, password: str) -> User | None:
    """The user if the password is right, else None (same work either way: no user enumeration by timing)."""
    _schema(store)
    rows = store.catalog.query("SELECT name, role, pw_hash FROM ann_users WHERE name = ?", ((name or "").strip(),))
    if not rows:
        if not _DUMMY_HASH:
            _DUMMY_HASH.append(hash_password("not a password"))
        check_password(password or "", _DUMMY_HASH[0])
        return None
    row = rows[0]
    return User(row["name"], row["role"]) if check_password(password or "", row["pw_hash"]) else None


def get_user(store: Store, name: str) -> User | None:
    """The user as the catalog has it now (a removed user is None; a changed role shows)."""
    _schema(store)
    rows = store.catalog.query("SELECT name, role FROM ann_users WHERE name = ?", (name,))
    return User(rows[0]["name"], rows[0]["role"]) if rows else None


def _role(conn, actor: User) -> str:
    if actor is None:
        raise AssayError("not logged in")
    if actor.operator:
        return OPERATOR.role
    row = conn.execute("SELECT role FROM ann_users WHERE name = ?", (actor.name,)).fetchone()
    if row is None:
        raise AssayError(f"unknown user {actor.name!r}")
    return row["role"]


def _require_admin(conn, actor: User, what: str) -> None:
    if _role(conn, actor) != "admin":
        raise AssayError(f"refused: {actor.name} is an annotator; only an admin may {what}")


def _log(conn, actor: User, action: str, session: str | None, detail: dict) -> None:
    conn.execute("INSERT INTO ann_log VALUES (?,?,?,?,?)", (_now(), actor.name, action, session, dump_json(detail)))


# ---- sessions ---------------------------------------------------------------------------------
@dataclass
class LabelSchema:
    """What an annotator records about a record besides accept/reject."""

    reasons: list[str] = field(default_factory=list, metadata={
        "help": "reasons an annotator may tick with a decision (e.g. 'wrong answer'); empty: none offered"})
    categories: list[str] = field(default_factory=list, metadata={
        "help": "one category an annotator must pick per record; empty: no category"})
    allow_edit: bool = field(default=False, metadata={
        "help": "annotators may edit instruction, input and output when they accept (Alpaca records)"})

    def __post_init__(self):
        self.reasons = [r.strip() for r in self.reasons if r and r.strip()]
        self.categories = [c.strip() for c in self.categories if c and c.strip()]
        for what, values in (("reasons", self.reasons), ("categories", self.categories)):
            if len(set(values)) != len(values):
                raise AssayError(f"label schema: duplicate {what} in {values}")


@dataclass
class Session:
    id: str
    name: str
    version_id: str
    schema: LabelSchema
    overlap: int
    annotators: list[str]
    status: str
    items: int
    created_by: str
    created_at: str
    result_version: str | None = None
    finalized_by: str | None = None
    finalized_at: str | None = None

    @classmethod
    def from_row(cls, row) -> "Session":
        return cls(id=row["id"], name=row["name"], version_id=row["version_id"],
                   schema=LabelSchema(**json.loads(row["label_schema"])), overlap=row["overlap"],
                   annotators=json.loads(row["annotators"]), status=row["status"], items=row["items"],
                   created_by=row["created_by"], created_at=row["created_at"],
                   result_version=row["result_version"], finalized_by=row["finalized_by"],
                   finalized_at=row["finalized_at"])

    def summary(self) -> dict[str, Any]:
        d = asdict(self)
        d["schema"] = asdict(self.schema)
        return d


def create_session(store: Store, actor: User, version: str, *, name: str | None = None, where: str | None = None,
                   schema: LabelSchema | None = None, overlap: int = 1,
                   annotators: Iterable[str] = ()) -> Session:
    """A session over a version; with `where`, over a saved filter of it (a child version, recorded
    in the lineage like `assay filter`)."""
    _schema(store)
    schema = schema or LabelSchema()
    annotators = sorted({a.strip() for a in annotators if a and a.strip()})
    if overlap < 1:
        raise AssayError(f"overlap must be at least 1, got {overlap}")
    manifest = store.resolve(version)
    name = (name or f"{manifest.ref}-review").strip()
    if not _SESSION_NAME.match(name):
        raise AssayError(f"invalid session name {name!r}: use 1-100 letters, digits, spaces, '.', '_', '-', '@'")
    # every check before any work: a refused session leaves nothing behind (not even its filter)
    with store.catalog.write() as conn:
        _require_admin(conn, actor, "create sessions")
        known = {r["name"] for r in conn.execute("SELECT name FROM ann_users").fetchall()}
        taken = conn.execute("SELECT 1 FROM ann_sessions WHERE name = ?", (name,)).fetchone()
    if taken:
        raise AssayError(f"a session named {name!r} exists already: choose another --name")
    unknown = [a for a in annotators if a not in known]
    if unknown:
        raise AssayError(f"unknown annotators: {', '.join(unknown)} (add them with `assay annotate users add`)")
    if annotators and overlap > len(annotators):
        raise AssayError(f"overlap {overlap} needs at least {overlap} annotators, the session names {len(annotators)}")
    if where:
        from assay.core.audits import filter_version

        manifest = filter_version(store, manifest.id, where, manifest.dataset)
    if manifest.records == 0:
        raise AssayError(f"version {manifest.ref} ({manifest.id[:12]}) has no records to annotate")
    ids = store.ids(manifest)
    first = (pl.DataFrame({"record_id": ids}).with_row_index("row")
             .unique("record_id", keep="first", maintain_order=True).with_row_index("seq"))
    sid = "s" + secrets.token_hex(5)
    with store.catalog.write() as conn:
        if conn.execute("SELECT 1 FROM ann_sessions WHERE name = ?", (name,)).fetchone():  # a race
            raise AssayError(f"a session named {name!r} exists already: choose another --name")
        conn.execute(
            "INSERT INTO ann_sessions (id, name, version_id, label_schema, overlap, annotators, status, items,"
            " created_by, created_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (sid, name, manifest.id, dump_json(asdict(schema)), overlap, dump_json(annotators), "open",
             first.height, actor.name, _now()))
        conn.executemany("INSERT INTO ann_items (session, record_id, seq, row) VALUES (?,?,?,?)",
                         ((sid, r, s, w) for s, w, r in first.select("seq", "row", "record_id").iter_rows()))
        _log(conn, actor, "create_session", sid, {"version": manifest.id, "where": where, "overlap": overlap})
    return get_session(store, sid)


def _session_row(conn, ref: str):
    ref = (ref or "").strip()
    row = conn.execute("SELECT * FROM ann_sessions WHERE id = ? OR name = ?", (ref, ref)).fetchone()
    if row is None:
        raise AssayError(f"unknown annotation session {ref!r}")
    return row


def get_session(store: Store, ref: str) -> Session:
    _schema(store)
    with store.catalog.connection() as conn:
        return Session.from_row(_session_row(conn, ref))


def list_sessions(store: Store, actor: User) -> list[Session]:
    """Every session for an admin; for an annotator, the sessions that name them (or name nobody)."""
    _schema(store)
    with store.catalog.connection() as conn:
        role = _role(conn, actor)
        rows = conn.execute("SELECT * FROM ann_sessions ORDER BY created_at DESC").fetchall()
    sessions = [Session.from_row(r) for r in rows]
    if role != "admin":
        sessions = [s for s in sessions if s.status == "open" and (not s.annotators or actor.name in s.annotators)]
    return sessions


def delete_session(store: Store, actor: User, ref: str) -> None:
    """Remove a session that was not finalised, with its decisions (admin only; recorded in the log)."""
    _schema(store)
    with store.catalog.write() as conn:
        _require_admin(conn, actor, "delete sessions")
        s = _session_row(conn, ref)
        if s["status"] == "finalized":
            raise AssayError(f"session {s['name']} is finalised: its version {s['result_version'][:12]} "
                             "depends on it, it cannot be deleted")
        n = conn.execute("SELECT COUNT(*) FROM ann_decisions WHERE session = ?", (s["id"],)).fetchone()[0]
        for table in ("ann_items", "ann_claims", "ann_decisions", "ann_resolutions"):
            conn.execute(f"DELETE FROM {table} WHERE session = ?", (s["id"],))
        conn.execute("DELETE FROM ann_sessions WHERE id = ?", (s["id"],))
        _log(conn, actor, "delete_session", s["id"], {"name": s["name"], "decisions": n})


# ---- the annotator's queue --------------------------------------------------------------------
@dataclass
class Item:
    """One record as an annotator sees it."""

    session: str
    record_id: str
    seq: int
    revision: int
    record: dict[str, Any]  # the version row, with an admin's edit applied
    edited_by: str | None  # the admin who changed it, if one did
    decision: dict[str, Any] | None = None  # the annotator's own current decision, if any


def _open_session(conn, ref: str, actor: User):
    s = _session_row(conn, ref)
    if s["status"] != "open":
        raise AssayError(f"session {s['name']} is {s['status']}: it takes no more decisions")
    role = _role(conn, actor)
    names = json.loads(s["annotators"])
    if names and actor.name not in names and role != "admin":
        raise AssayError(f"refused: {actor.name} is not an annotator of session {s['name']}")
    return s


# the records an annotator was handed and has not decided at their current revision, in hand-out order
_OPEN_CLAIMS = (
    "SELECT c.record_id FROM ann_claims c"
    " JOIN ann_items i ON i.session = c.session AND i.record_id = c.record_id"
    " LEFT JOIN ann_decisions d ON d.session = c.session AND d.record_id = c.record_id AND d.annotator = c.annotator"
    " WHERE c.session = ? AND c.annotator = ? AND (d.record_id IS NULL OR d.revision < i.revision) ORDER BY c.seq")


def next_item(store: Store, actor: User, session: str) -> Item | None:
    """The record this annotator works on now: the first one they were handed and have not decided
    (at its current revision), else a newly claimed one; None when their queue is done."""
    _schema(store)
    now = _now()
    with store.catalog.write() as conn:
        s = _open_session(conn, session, actor)
        sid = s["id"]
        row = conn.execute(_OPEN_CLAIMS + " LIMIT 1", (sid, actor.name)).fetchone()
        if row is None:
            row = conn.execute(
                "SELECT i.record_id, i.seq FROM ann_items i WHERE i.session = ? AND i.full = 0 AND NOT EXISTS"
                " (SELECT 1 FROM ann_claims c WHERE c.session = i.session AND c.record_id = i.record_id"
                " AND c.annotator = ?) ORDER BY i.seq LIMIT 1", (sid, actor.name)).fetchone()
            if row is None:
                return None
            conn.execute("INSERT INTO ann_claims VALUES (?,?,?,?,?,?)", (sid, actor.name, row["record_id"],
                                                                          row["seq"], now, now))
            conn.execute("UPDATE ann_items SET claims = claims + 1, full = (claims + 1 >= ?)"
                         " WHERE session = ? AND record_id = ?", (s["overlap"], sid, row["record_id"]))
        # a resumed record keeps its first shown_at: the page calls this on every rerun (a click in
        # the reasons, an edit), and each must not restart the clock; the speed figure is a median,
        # which a record left open overnight does not move
    return get_item(store, actor, sid, row["record_id"])


def get_item(store: Store, actor: User, session: str, record: str) -> Item:
    """A record of the session as `actor` may see it: annotators only the records they were handed."""
    _schema(store)
    with store.catalog.connection() as conn:
        s = _session_row(conn, session)
        role = _role(conn, actor)
        item = conn.execute("SELECT * FROM ann_items WHERE session = ? AND record_id = ?",
                            (s["id"], record)).fetchone()
        if item is None:
            raise AssayError(f"record {record} is not in session {s['name']}")
        if role != "admin" and not conn.execute(
                "SELECT 1 FROM ann_claims WHERE session = ? AND annotator = ? AND record_id = ?",
                (s["id"], actor.name, record)).fetchone():
            raise AssayError(f"refused: record {record[:12]} is not in {actor.name}'s queue")
        mine = conn.execute("SELECT * FROM ann_decisions WHERE session = ? AND record_id = ? AND annotator = ?",
                            (s["id"], record, actor.name)).fetchone()
    row = store.page(store.load_manifest(s["version_id"]), item["row"], 1).to_dicts()[0]
    if item["edit"]:
        row.update(json.loads(item["edit"]))
    return Item(session=s["id"], record_id=record, seq=item["seq"], revision=item["revision"], record=row,
                edited_by=item["edited_by"], decision=_decision_dict(mine) if mine else None)


def _decision_dict(row) -> dict[str, Any]:
    d = dict(row)
    d["reasons"] = json.loads(d["reasons"])
    d["edit"] = json.loads(d["edit"]) if d["edit"] else None
    return d


def decide(store: Store, actor: User, session: str, record: str, label: str, *, revision: int,
           reasons: Iterable[str] = (), category: str | None = None,
           edit: dict[str, str] | None = None) -> dict[str, Any]:
    """Record `actor`'s decision on a record they were handed. `revision` is the record revision the
    annotator saw (Item.revision): if an admin changed the record since, the decision is refused.
    Deciding again replaces the annotator's own earlier decision on that record."""
    _schema(store)
    reasons = list(reasons)
    if label not in LABELS:
        raise AssayError(f"invalid label {label!r}: use accept or reject")
    with store.catalog.write() as conn:
        s = _open_session(conn, session, actor)
        sid, schema = s["id"], LabelSchema(**json.loads(s["label_schema"]))
        bad = [r for r in reasons if r not in schema.reasons]
        if bad:
            raise AssayError(f"unknown reasons {bad}: session {s['name']} offers {schema.reasons or 'none'}")
        if schema.categories and category not in schema.categories:
            raise AssayError(f"pick a category: one of {', '.join(schema.categories)}" if category is None
                             else f"category {category!r} is not one of {', '.join(schema.categories)}")
        if not schema.categories and category is not None:
            raise AssayError(f"session {s['name']} has no categories")
        item = conn.execute("SELECT * FROM ann_items WHERE session = ? AND record_id = ?", (sid, record)).fetchone()
        if item is None:
            raise AssayError(f"record {record} is not in session {s['name']}")
        claim = conn.execute("SELECT shown_at FROM ann_claims WHERE session = ? AND annotator = ? AND record_id = ?",
                             (sid, actor.name, record)).fetchone()
        if claim is None:
            raise AssayError(f"refused: record {record[:12]} is not in {actor.name}'s queue")
        if revision != item["revision"]:
            by = f" by {item['edited_by']} at {item['edited_at'][:19]}" if item["edited_by"] else ""
            raise AssayError(
                f"record {record[:12]} was changed{by} after you opened it (you saw revision {revision}, it is "
                f"now {item['revision']}): your decision was not saved; look at the changed record and decide again")
        edit_json = None
        if edit is not None:
            edit_json = _check_edit(store, s, item, schema, label, edit)
        now = _now()
        seconds = (dt.datetime.fromisoformat(now) - dt.datetime.fromisoformat(claim["shown_at"])).total_seconds()
        conn.execute(
            "INSERT INTO ann_decisions VALUES (?,?,?,?,?,?,?,?,?,?) ON CONFLICT (session, record_id, annotator)"
            " DO UPDATE SET label = excluded.label, reasons = excluded.reasons, category = excluded.category,"
            " edit = excluded.edit, revision = excluded.revision, decided_at = excluded.decided_at,"
            " seconds = excluded.seconds",
            (sid, record, actor.name, label, dump_json(reasons), category, edit_json, revision, now, seconds))
    return {"session": sid, "record_id": record, "annotator": actor.name, "label": label, "revision": revision,
            "decided_at": now}


def _check_edit(store: Store, s, item, schema: LabelSchema, label: str, edit: dict[str, Any]) -> str | None:
    if not schema.allow_edit:
        raise AssayError(f"session {s['name']} does not allow edits")
    if label != "accept":
        raise AssayError("an edit goes with accept (a rejected record is left out whatever its text)")
    current = _current_content(store, s["version_id"], item)
    merged = _merged_edit(current, edit, item["record_id"])
    if merged == _editable(current):
        return None  # an "edit" that changes nothing is a plain accept
    return dump_json(merged)


def _editable(record: dict[str, Any]) -> dict[str, Any]:
    """The part of a record an edit replaces: instruction/input/output, or a chat record's turns."""
    if record.get("messages") is not None:
        return {"messages": [{"role": m["role"], "content": m["content"]} for m in record["messages"]]}
    return {f: record[f] for f in EDIT_FIELDS}


def _merged_edit(current: dict[str, Any], edit: dict[str, Any], record: str) -> dict[str, Any]:
    """The record's editable content with `edit` applied. An Alpaca record takes any of
    instruction/input/output; a chat record takes `messages`: its turns with new text, the same
    roles in the same order (an edit corrects what was said, it does not change who speaks)."""
    base = _editable(current)
    if "messages" not in base:
        unknown = set(edit) - set(EDIT_FIELDS)
        if unknown:
            raise AssayError(f"edit: unknown fields {sorted(unknown)}; editable: {', '.join(EDIT_FIELDS)}")
        return {f: str(edit.get(f, base[f])) for f in EDIT_FIELDS}
    if set(edit) - {"messages"}:
        raise AssayError(f"record {record[:12]} is a chat record: edit its turns as 'messages' "
                         f"(got {', '.join(sorted(set(edit) - {'messages'}))})")
    turns = edit.get("messages", base["messages"])
    if not isinstance(turns, list) or not all(isinstance(t, dict) and "content" in t for t in turns):
        raise AssayError("edit: messages must be a list of {role, content} turns")
    roles = [t.get("role") for t in turns]
    if roles != [m["role"] for m in base["messages"]]:
        raise AssayError(f"edit of chat record {record[:12]}: the turns must keep their roles and order "
                         f"({', '.join(m['role'] for m in base['messages'])}); got {', '.join(map(str, roles))}")
    return {"messages": [{"role": t["role"], "content": str(t["content"])} for t in turns]}


def _current_content(store: Store, version_id: str, item) -> dict[str, Any]:
    row = store.page(store.load_manifest(version_id), item["row"], 1).to_dicts()[0]
    if item["edit"]:
        row.update(json.loads(item["edit"]))
    return row


def _admin_item(conn, actor: User, session: str, record: str, what: str):
    """The session and item rows for an admin action on a record of an open session."""
    _require_admin(conn, actor, what)
    s = _session_row(conn, session)
    if s["status"] != "open":
        raise AssayError(f"session {s['name']} is {s['status']}: its records can no longer change")
    item = conn.execute("SELECT * FROM ann_items WHERE session = ? AND record_id = ?", (s["id"], record)).fetchone()
    if item is None:
        raise AssayError(f"record {record} is not in session {s['name']}")
    return s, item


def edit_record(store: Store, actor: User, session: str, record: str, **fields: Any) -> int:
    """An admin changes a record's text in the session (instruction/input/output, or a chat
    record's `messages`); the revision goes up, so decisions made on the old text are refused and
    the record comes back to the annotators who decided it."""
    _schema(store)
    with store.catalog.write() as conn:
        s, item = _admin_item(conn, actor, session, record, "edit records")
        merged = _merged_edit(_current_content(store, s["version_id"], item), fields, record)
        conn.execute("UPDATE ann_items SET edit = ?, revision = revision + 1, edited_by = ?, edited_at = ?"
                     " WHERE session = ? AND record_id = ?", (dump_json(merged), actor.name, _now(), s["id"], record))
        _log(conn, actor, "edit_record", s["id"], {"record": record, "revision": item["revision"] + 1})
        return item["revision"] + 1


def release_claims(store: Store, actor: User, session: str, annotator: str) -> int:
    """Hand back the records an annotator holds without a current decision (someone who left), so
    that others can take them. Admin only; returns how many were released."""
    _schema(store)
    with store.catalog.write() as conn:
        _require_admin(conn, actor, "release records")
        s = _session_row(conn, session)
        open_claims = [r["record_id"] for r in conn.execute(_OPEN_CLAIMS, (s["id"], annotator))]
        for rid in open_claims:
            conn.execute("DELETE FROM ann_claims WHERE session = ? AND annotator = ? AND record_id = ?",
                         (s["id"], annotator, rid))
            conn.execute("UPDATE ann_items SET claims = claims - 1, full = 0 WHERE session = ? AND record_id = ?",
                         (s["id"], rid))
        _log(conn, actor, "release_claims", s["id"], {"annotator": annotator, "records": len(open_claims)})
    return len(open_claims)


# ---- outcomes, conflicts, agreement -----------------------------------------------------------
def _snapshot(conn, sid: str, every_item: bool = False) -> tuple[dict[str, Any], dict[str, list[dict]], dict[str, Any]]:
    """Items, current decisions by record (made at the record's current revision), resolutions.
    The items are those with a decision (at any revision) or a resolution, unless `every_item`: a
    session of a million records mostly undecided need not come into Python to be counted."""
    items = {r["record_id"]: dict(r) for r in conn.execute(
        "SELECT * FROM ann_items WHERE session = ?" if every_item else
        "SELECT * FROM ann_items WHERE session = ?1 AND record_id IN (SELECT record_id FROM ann_decisions"
        " WHERE session = ?1 UNION SELECT record_id FROM ann_resolutions WHERE session = ?1)", (sid,))}
    current: dict[str, list[dict]] = {}
    for r in conn.execute("SELECT d.* FROM ann_decisions d JOIN ann_items i ON i.session = d.session AND"
                          " i.record_id = d.record_id WHERE d.session = ? AND d.revision = i.revision"
                          " ORDER BY d.record_id, d.annotator", (sid,)):
        current.setdefault(r["record_id"], []).append(_decision_dict(r))
    resolutions = {r["record_id"]: dict(r) for r in conn.execute("SELECT * FROM ann_resolutions WHERE session = ?",
                                                                  (sid,))}
    return items, current, resolutions


def _verdict(decision: dict) -> tuple[str, str | None]:
    return decision["label"], json.dumps(decision["edit"], sort_keys=True) if decision["edit"] else None


def _outcome(decisions: list[dict], resolution: dict | None) -> dict[str, Any]:
    """state (undecided | agreed | conflict | resolved), label, and whose edit (if any) the result takes."""
    if resolution:
        return {"state": "resolved", "label": resolution["label"], "edit_of": resolution["edit_of"]}
    if not decisions:
        return {"state": "undecided", "label": None, "edit_of": None}
    if len({_verdict(d) for d in decisions}) > 1:
        return {"state": "conflict", "label": None, "edit_of": None}
    d = decisions[0]
    return {"state": "agreed", "label": d["label"], "edit_of": d["annotator"] if d["edit"] else None}


def _read_snapshot(store: Store, actor: User, session: str, what: str):
    _schema(store)
    with store.catalog.connection() as conn:
        if what:
            _require_admin(conn, actor, what)
        s = _session_row(conn, session)
        return s, *_snapshot(conn, s["id"])


def conflicts(store: Store, actor: User, session: str, *, include_resolved: bool = True) -> list[dict[str, Any]]:
    """Records whose annotators disagree (on accept/reject, or on the text of an accepted edit)."""
    s, items, current, resolutions = _read_snapshot(store, actor, session, "see conflicts")
    out = []
    for rid in sorted(current, key=lambda r: items[r]["seq"]):
        ds = current[rid]
        if len({_verdict(d) for d in ds}) > 1 and (include_resolved or rid not in resolutions):
            out.append({"record_id": rid, "seq": items[rid]["seq"], "decisions": ds,
                        "resolution": resolutions.get(rid)})
    return out


def resolve(store: Store, actor: User, session: str, record: str, label: str, *, edit_of: str | None = None,
            note: str = "") -> dict[str, Any]:
    """An admin's verdict on a record: accept or reject, and for accept optionally whose edit to keep."""
    _schema(store)
    if label not in LABELS:
        raise AssayError(f"invalid label {label!r}: use accept or reject")
    with store.catalog.write() as conn:
        s, _ = _admin_item(conn, actor, session, record, "resolve conflicts")
        if edit_of is not None:
            if label != "accept":
                raise AssayError("edit_of goes with accept")
            d = conn.execute("SELECT d.edit FROM ann_decisions d JOIN ann_items i ON i.session = d.session AND"
                             " i.record_id = d.record_id AND i.revision = d.revision"
                             " WHERE d.session = ? AND d.record_id = ? AND d.annotator = ?",
                             (s["id"], record, edit_of)).fetchone()
            if d is None or not d["edit"]:
                raise AssayError(f"{edit_of} made no edit of record {record[:12]} to keep")
        now = _now()
        conn.execute("INSERT OR REPLACE INTO ann_resolutions VALUES (?,?,?,?,?,?,?)",
                     (s["id"], record, label, edit_of, actor.name, now, note or ""))
        _log(conn, actor, "resolve", s["id"], {"record": record, "label": label, "edit_of": edit_of})
    return {"record_id": record, "label": label, "edit_of": edit_of, "resolved_by": actor.name, "resolved_at": now}


def fleiss_kappa(counts: np.ndarray) -> float | None:
    """Fleiss' kappa of an items x categories table of rating counts (every item rated n >= 2 times).
    None when chance agreement is total (every rating in one category)."""
    counts = np.asarray(counts, dtype=float)
    n_items, n = counts.shape[0], counts[0].sum()
    if n_items == 0 or n < 2 or not np.all(counts.sum(axis=1) == n):
        raise ValueError("fleiss_kappa needs the same number (>= 2) of ratings for every item")
    p_cat = counts.sum(axis=0) / (n_items * n)
    p_item = (np.square(counts).sum(axis=1) - n) / (n * (n - 1))
    p_bar, p_e = p_item.mean(), np.square(p_cat).sum()
    return None if np.isclose(p_e, 1.0) else float((p_bar - p_e) / (1 - p_e))


def _kappa(by_item: dict[str, dict[str, str]], categories: list[str]) -> dict[str, Any]:
    """Cohen's kappa when the overlapping records were rated by two annotators, Fleiss' when by more."""
    rated = {rid: r for rid, r in by_item.items() if len(r) >= 2}
    raters = sorted({a for r in rated.values() for a in r})
    out: dict[str, Any] = {"method": None, "kappa": None, "items": 0, "annotators": raters,
                           "observed_agreement": None, "note": ""}
    if not rated:
        out["note"] = "no record has two decisions yet"
        return out
    agree = sum(1 for r in rated.values() if len(set(r.values())) == 1)
    out["observed_agreement"] = agree / len(rated)
    if len(raters) == 2:
        from sklearn.metrics import cohen_kappa_score

        a, b = raters
        ya, yb = [r[a] for r in rated.values()], [r[b] for r in rated.values()]
        out.update(method="cohen", items=len(rated))
        if len(set(ya) | set(yb)) < 2:
            out["note"] = "every decision has the same label: kappa is undefined"
        else:
            out["kappa"] = float(cohen_kappa_score(ya, yb, labels=categories))
        return out
    # Fleiss needs the same number of ratings per record: use the most common count
    sizes = [len(r) for r in rated.values()]
    n = max(set(sizes), key=lambda k: (sizes.count(k), k))
    table = np.array([[list(r.values()).count(c) for c in categories] for r in rated.values() if len(r) == n])
    out.update(method="fleiss", items=len(table))
    if len(table) < len(rated):
        out["note"] = f"{len(rated) - len(table)} records with other than {n} decisions left out"
    out["kappa"] = fleiss_kappa(table)
    if out["kappa"] is None:
        out["note"] = "every decision has the same label: kappa is undefined"
    return out


def agreement(store: Store, actor: User, session: str) -> dict[str, Any]:
    """Kappa on accept/reject (and on the category, when the schema has categories), and per
    annotator: decisions, accept rate, edits, median seconds per decision."""
    s, items, current, _ = _read_snapshot(store, actor, session, "see agreement")
    schema = LabelSchema(**json.loads(s["label_schema"]))
    labels = {rid: {d["annotator"]: d["label"] for d in ds} for rid, ds in current.items()}
    out: dict[str, Any] = {"label": _kappa(labels, list(LABELS))}
    if schema.categories:
        cats = {rid: {d["annotator"]: d["category"] for d in ds} for rid, ds in current.items()}
        out["category"] = _kappa(cats, schema.categories)
    per: dict[str, dict[str, Any]] = {}
    for ds in current.values():
        for d in ds:
            p = per.setdefault(d["annotator"], {"decisions": 0, "accepted": 0, "edited": 0, "_secs": []})
            p["decisions"] += 1
            p["accepted"] += d["label"] == "accept"
            p["edited"] += d["edit"] is not None
            if d["seconds"] is not None:
                p["_secs"].append(d["seconds"])
    for p in per.values():
        secs = p.pop("_secs")
        p["accept_rate"] = p["accepted"] / p["decisions"]
        p["median_seconds"] = statistics.median(secs) if secs else None
    out["annotators"] = dict(sorted(per.items()))
    return out


def status(store: Store, actor: User, session: str) -> dict[str, Any]:
    """Progress of a session: per annotator, decided and remaining, and for an admin the record
    states. An annotator sees only their own line (counted in SQL: it is drawn with every record)."""
    _schema(store)
    with store.catalog.connection() as conn:
        role = _role(conn, actor)
        s = _session_row(conn, session)
        sid = s["id"]
        if role == "admin":
            users = {r["annotator"] for r in conn.execute(
                "SELECT DISTINCT annotator FROM ann_claims WHERE session = ?", (sid,))}
            names = json.loads(s["annotators"]) or [
                r["name"] for r in conn.execute("SELECT name FROM ann_users WHERE role = 'annotator'")]
            people = sorted(users | set(names))
        else:
            people = [actor.name]
        per = {name: _progress(conn, sid, name) for name in people}
        snapshot = _snapshot(conn, sid) if role == "admin" else None
        total = conn.execute("SELECT COUNT(*) FROM ann_items WHERE session = ?", (sid,)).fetchone()[0]
    out: dict[str, Any] = {"session": Session.from_row(s).summary(), "annotators": per}
    if snapshot is not None:
        items, current, resolutions = snapshot
        states = [_outcome(current.get(rid, []), resolutions.get(rid))["state"] for rid in items]
        out["records"] = {k: states.count(k) for k in ("undecided", "agreed", "conflict", "resolved")}
        out["records"]["undecided"] += total - len(items)  # the records nobody has decided yet
        out["records"]["total"] = total
        out["records"]["complete"] = sum(1 for rid in items if len(current.get(rid, [])) >= s["overlap"])
        out["decisions"] = sum(len(ds) for ds in current.values())
    return out


def _progress(conn, sid: str, name: str) -> dict[str, int]:
    claimed = conn.execute("SELECT COUNT(*) FROM ann_claims WHERE session = ? AND annotator = ?",
                           (sid, name)).fetchone()[0]
    decided = conn.execute(
        "SELECT COUNT(*) FROM ann_decisions d JOIN ann_items i ON i.session = d.session AND i.record_id = d.record_id"
        " WHERE d.session = ? AND d.annotator = ? AND d.revision = i.revision", (sid, name)).fetchone()[0]
    available = conn.execute(
        "SELECT COUNT(*) FROM ann_items i WHERE i.session = ? AND i.full = 0 AND NOT EXISTS (SELECT 1 FROM"
        " ann_claims c WHERE c.session = i.session AND c.record_id = i.record_id AND c.annotator = ?)",
        (sid, name)).fetchone()[0]
    return {"decided": decided, "open": claimed - decided, "available": available,
            "remaining": claimed - decided + available}


def export_decisions(store: Store, actor: User, session: str) -> list[dict[str, Any]]:
    """Every decision of the session (current or made on an older revision), with its record's state."""
    s, items, current, resolutions = _read_snapshot(store, actor, session, "export decisions")
    with store.catalog.connection() as conn:
        rows = [_decision_dict(r) for r in conn.execute(
            "SELECT * FROM ann_decisions WHERE session = ? ORDER BY record_id, annotator", (s["id"],))]
    for r in rows:
        item = items[r["record_id"]]
        r["seq"], r["current"] = item["seq"], r["revision"] == item["revision"]
        r["state"] = _outcome(current.get(r["record_id"], []), resolutions.get(r["record_id"]))["state"]
    return sorted(rows, key=lambda r: (r["seq"], r["annotator"]))


# ---- finalising -------------------------------------------------------------------------------
def finalize(store: Store, actor: User, session: str, *, name: str | None = None, allow_undecided: bool = False,
             resume: bool = False) -> dict[str, Any]:
    """Make the session's result a new version: the accepted records as they are, edited records as
    new records whose provenance points to the original and the editor; the session id goes in the
    manifest. Refused while conflicts are unresolved, and (unless allow_undecided) while records are
    undecided. The session stops taking decisions first, so the version holds every decision made."""
    _schema(store)
    with store.catalog.write() as conn:
        _require_admin(conn, actor, "finalise sessions")
        s = _session_row(conn, session)
        if s["status"] == "finalized":
            raise AssayError(f"session {s['name']} is finalised already: version {s['result_version']}")
        if s["status"] == "closing" and not resume:
            raise AssayError(f"session {s['name']}: a finalize started at {s['closing_at'][:19]} did not finish; "
                             "if no other finalize is running, run it again with --resume")
        items, current, resolutions = _snapshot(conn, s["id"], every_item=True)
        outcomes = {rid: _outcome(current.get(rid, []), resolutions.get(rid)) for rid in items}
        states = [o["state"] for o in outcomes.values()]
        if states.count("conflict"):
            raise AssayError(f"session {s['name']} has {states.count('conflict')} unresolved conflicts: "
                             "resolve them first")
        if states.count("undecided") and not allow_undecided:
            raise AssayError(f"session {s['name']} has {states.count('undecided')} undecided records: "
                             "finish them, or finalise with --allow-undecided to leave them out")
        conn.execute("UPDATE ann_sessions SET status = 'closing', closing_at = ? WHERE id = ?", (_now(), s["id"]))
    done = _committed_result(store, s["id"]) if resume else None
    if done is not None:  # the interrupted finalize got as far as committing: adopt its version
        return _close(store, actor, s["id"], done)
    manifest = store.load_manifest(s["version_id"])
    editors = {}
    for rid, o in outcomes.items():
        if o["label"] != "accept":
            continue
        if o["edit_of"]:
            d = next(d for d in current[rid] if d["annotator"] == o["edit_of"])
            editors[rid] = (o["edit_of"], d["edit"])
        elif items[rid]["edit"]:
            editors[rid] = (items[rid]["edited_by"], json.loads(items[rid]["edit"]))
    keep = {rid for rid, o in outcomes.items() if o["label"] == "accept" and rid not in editors}
    counts = {k: sum(1 for o in outcomes.values() if o["label"] == k) for k in LABELS}
    params = {"session": s["id"], "session_name": s["name"], "from": manifest.ref, "accepted": counts["accept"],
              "rejected": counts["reject"], "edited": len(editors), "undecided": states.count("undecided"),
              "overlap": s["overlap"]}
    writer = VersionWriter(store, name or manifest.dataset, "annotate", params, parents=[manifest.id])
    kept_parts, edited_rows = [], []
    for part in manifest.parts:
        frame = store.read_part(part, ["id"])
        mask = np.zeros(part.rows, dtype=bool)
        rows_in_segment = np.arange(part.rows) if part.selection is None else np.flatnonzero(store.part_mask(part))
        mask[rows_in_segment[frame["id"].is_in(list(keep)).to_numpy()]] = True
        kept_parts.append(store.put_selection(part, mask))
    for rid in sorted(editors, key=lambda r: items[r]["seq"]):
        editor, content = editors[rid]
        edited_rows.append(_edited_row(store, manifest, items[rid]["row"], content, s["id"], editor))
    writer.add_parts(kept_parts)
    if edited_rows:
        writer.add_table(pa.Table.from_pylist(edited_rows, schema=RECORD_SCHEMA))
    return _close(store, actor, s["id"], writer.commit())


def _committed_result(store: Store, sid: str) -> Manifest | None:
    for row in store.catalog.query("SELECT id FROM versions WHERE operation = 'annotate' ORDER BY created_at DESC"):
        manifest = store.load_manifest(row["id"])
        if manifest.params.get("session") == sid:
            return manifest
    return None


def _close(store: Store, actor: User, sid: str, result: Manifest) -> dict[str, Any]:
    with store.catalog.write() as conn:
        conn.execute("UPDATE ann_sessions SET status = 'finalized', result_version = ?, finalized_by = ?,"
                     " finalized_at = ? WHERE id = ?", (result.id, actor.name, _now(), sid))
        _log(conn, actor, "finalize", sid, {"version": result.id, **result.params})
    return {**result.summary(), "params": result.params}


def _edited_row(store: Store, manifest: Manifest, row: int, content: dict[str, str], sid: str,
                editor: str) -> dict[str, Any]:
    original = store.page(manifest, row, 1).to_dicts()[0]
    meta = json.loads(original["metadata"] or "{}")
    meta["annotation"] = {"session": sid, "editor": editor, "edited_from": original["id"]}
    new = {**original, **content, "generator": "annotation", "parent_ids": [original["id"]],
           "metadata": dump_json(meta)}
    new["id"] = record_id(new["instruction"], new["input"], new["output"], new["messages"])
    return new


def audit_flags(store: Store, session: str, record: str) -> dict[str, Any]:
    """The audit columns of a record, from the newest audited version among the session's version
    and its ancestors (a session over a filtered child shows its parent's audit)."""
    from assay.core.audits import audit_columns

    for step in store.lineage(get_session(store, session).version_id):  # newest first
        m = store.load_manifest(step["version"])
        cols = audit_columns(store, m)
        if cols is None:
            continue
        hit = cols.with_columns(id=store.ids(m)).filter(pl.col("id") == record).head(1)
        if hit.height:
            return {"version": m.ref, **{k: v for k, v in hit.drop("id", "_pos").to_dicts()[0].items()
                                         if v is not None and v is not False}}
    return {}
