"""Annotation sessions: a label schema and an overlap over one version; create, list, load, delete,
and the audit flags a session's records carry."""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable

import polars as pl

from ..audits import audit_columns, filter_version
from ..errors import AssayError
from ..records import dump_json
from ..store import Store
from .tables import _log, _now, _schema
from .users import User, _require_admin, _role

_SESSION_NAME = re.compile(r"^[\w .@\-]{1,100}$")


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




def audit_flags(store: Store, session: str, record: str) -> dict[str, Any]:
    """The audit columns of a record, from the newest audited version among the session's version
    and its ancestors (a session over a filtered child shows its parent's audit)."""
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
