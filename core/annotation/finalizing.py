"""Finalising a session: its result becomes a new version, with edited records as new records whose
provenance points to the original and the editor."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa

from ..errors import AssayError
from ..records import RECORD_SCHEMA, dump_json, record_id
from ..store import Manifest, Store, VersionWriter
from .queue import LABELS, _outcome, _snapshot
from .sessions import _session_row
from .tables import _log, _now, _schema
from .users import User, _require_admin


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
