"""The annotator's queue and the decisions: hand-out, decide, an admin's edit, releasing claims, the
outcome of each record (agreed, conflict, resolved), resolving conflicts, progress and export."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any, Iterable

from ..errors import AssayError
from ..records import dump_json
from ..store import Store
from .sessions import LabelSchema, Session, _session_row
from .tables import _log, _now, _schema
from .users import User, _require_admin, _role

LABELS = ("accept", "reject")
EDIT_FIELDS = ("instruction", "input", "output")  # an Alpaca record's; a chat record's edit is its "messages"


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


# ---- outcomes and conflicts -------------------------------------------------------------------
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


