"""Annotation: an annotator's queue (one record at a time, keyboard shortcuts, saved at once), and
for admins the sessions with progress per annotator, agreement, conflicts to resolve, finalising,
new sessions and users. Every action is a call into `assay.core.annotation`, which checks the
acting user's role itself; record text is shown with st.code / st.text, never as markdown or HTML.

Actions run in button callbacks with the record revision bound when the button was drawn, so a
decision carries the revision the annotator actually saw (not the one of the next script run).
"""

from __future__ import annotations

import json

import polars as pl
import streamlit as st

from assay.app.ui import auth
from assay.app.ui.common import get_store, version_picker
from assay.core import annotation
from assay.core.errors import AssayError

FLASH_OK, FLASH_ERR = "ann_flash_ok", "ann_flash_err"
VIEWS = ["Annotate", "Sessions", "Conflicts", "New session", "Users"]


def _actor():
    return auth.current_user(get_store()) or annotation.OPERATOR


def _act(work, done: str | None = None) -> None:
    """Run a library call from a callback; its outcome shows as a message on the next run."""
    try:
        result = work()
    except AssayError as exc:
        st.session_state[FLASH_ERR] = str(exc)
        return
    if done:
        st.session_state[FLASH_OK] = done.format(r=result) if isinstance(result, dict) else done


def _flash() -> None:
    if msg := st.session_state.pop(FLASH_ERR, None):
        st.error("Not saved:")
        st.code(msg, language=None, wrap_lines=True)
    if msg := st.session_state.pop(FLASH_OK, None):
        st.success(auth.md_text(msg))


def _text(label: str, value: str | None) -> None:
    st.caption(label)
    st.code(value or "", language=None, wrap_lines=True)


def show_record(record: dict, *, compact: bool = False) -> None:
    if record.get("messages"):
        for m in record["messages"]:
            _text(m["role"], m["content"])
        return
    _text("Instruction", record["instruction"])
    if record.get("input"):
        _text("Input", record["input"])
    _text("Output", record["output"])
    if compact:
        return
    with st.expander("Provenance"):
        st.json({k: record.get(k) for k in ("id", "source", "source_row", "generator", "template", "model",
                                            "parent_ids")} | {"metadata": json.loads(record.get("metadata") or "{}")},
                expanded=True)


def _edit_text(edit: dict) -> str:
    """What an edit changed the record to, as plain text: the output, or every chat turn."""
    if "messages" in edit:
        return "\n\n".join(f"[{m['role']}] {m['content']}" for m in edit["messages"])
    return edit["output"]


# ---- the annotator's queue ----------------------------------------------------------------------
def _decide(sid: str, rid: str, revision: int, label: str, key: str, editable: bool,
            roles: tuple[str, ...] | None = None) -> None:
    """roles: a chat record's turns, whose text areas are edit-msg-<i>-<key>"""
    state = st.session_state
    edit = None
    if editable and label == "accept" and roles is not None:
        if all(f"edit-msg-{i}-{key}" in state for i in range(len(roles))):
            edit = {"messages": [{"role": r, "content": state[f"edit-msg-{i}-{key}"]} for i, r in enumerate(roles)]}
    elif editable and label == "accept":
        edit = {f: state[f"edit-{f}-{key}"] for f in annotation.EDIT_FIELDS if f"edit-{f}-{key}" in state}
    _act(lambda: annotation.decide(get_store(), _actor(), sid, rid, label, revision=revision,
                                   reasons=state.get(f"reasons-{key}") or [], category=state.get(f"cat-{key}"),
                                   edit=edit))


def annotate_view(store, actor, session: annotation.Session) -> None:
    if session.status != "open":
        st.info(auth.md_text(f"Session {session.name} is {session.status}: it takes no more decisions."))
        return
    try:
        mine = annotation.status(store, actor, session.id)["annotators"].get(actor.name)
        item = annotation.next_item(store, actor, session.id)
    except AssayError as exc:
        st.error(auth.md_text(exc))
        return
    if mine:
        total = mine["decided"] + mine["remaining"]
        st.progress(mine["decided"] / total if total else 1.0,
                    text=f"{mine['decided']} decided · {mine['remaining']} to go")
    if item is None:
        st.success("Your queue is done: every record handed to you has your decision. Thank you!")
        return
    st.subheader(f"Record {item.seq + 1} of {session.items}")
    if item.edited_by:
        st.info(auth.md_text(f"An admin ({item.edited_by}) changed this record (revision {item.revision})."))
    show_record(item.record)
    flags = annotation.audit_flags(store, session.id, item.record_id)
    if flags:
        with st.expander("Audit flags"):
            st.json(flags, expanded=True)
    key = f"{item.record_id}-{item.revision}"
    schema = session.schema
    if schema.reasons:
        st.pills("Reasons", schema.reasons, selection_mode="multi", key=f"reasons-{key}")
    if schema.categories:
        st.radio("Category", schema.categories, index=None, horizontal=True, key=f"cat-{key}")
    editable = schema.allow_edit
    turns = item.record.get("messages")
    roles = tuple(m["role"] for m in turns) if turns else None
    if editable:
        with st.expander("Edit before accepting"):
            if turns:  # a chat record: each turn's text, the roles stay
                for i, m in enumerate(turns):
                    st.text_area(f"Turn {i + 1}: {m['role']}", value=m["content"], key=f"edit-msg-{i}-{key}")
            else:
                for f in annotation.EDIT_FIELDS:
                    st.text_area(f.capitalize(), value=item.record[f], key=f"edit-{f}-{key}")
    left, right, _ = st.columns([1, 1, 4])
    left.button("Accept", key=f"accept-{key}", type="primary", shortcut="a", on_click=_decide,
                args=(session.id, item.record_id, item.revision, "accept", key, editable, roles))
    right.button("Reject", key=f"reject-{key}", shortcut="x", on_click=_decide,
                 args=(session.id, item.record_id, item.revision, "reject", key, editable, roles))
    st.caption("Keyboard: A accepts, X rejects (R is Streamlit's own rerun key). Each decision is saved the "
               "moment you make it; closing the browser and coming back resumes here.")


# ---- admin views --------------------------------------------------------------------------------
def sessions_view(store, actor, session: annotation.Session) -> None:
    stat = annotation.status(store, actor, session.id)
    agr = annotation.agreement(store, actor, session.id)
    st.subheader(auth.md_text(session.name))
    st.caption(auth.md_text(f"{session.id} · version {session.version_id[:12]} · overlap {session.overlap} · "
                            f"{session.status} · created by {session.created_by}"))
    rec = stat["records"]
    cols = st.columns(6)
    for col, (label, value) in zip(cols, [("Records", rec["total"]), ("Undecided", rec["undecided"]),
                                          ("Agreed", rec["agreed"]), ("Conflicts", rec["conflict"]),
                                          ("Resolved", rec["resolved"])]):
        col.metric(label, value)
    k = agr["label"]
    name = {"cohen": "Cohen's kappa", "fleiss": "Fleiss' kappa"}.get(k["method"], "Kappa")
    cols[5].metric(name, "n/a" if k["kappa"] is None else f"{k['kappa']:.3f}",
                   help=f"over {k['items']} records with two or more decisions. {k['note']}")
    if k["observed_agreement"] is not None:
        st.caption(f"Observed agreement {k['observed_agreement']:.0%} over {k['items']} overlapping records.")
    per = agr["annotators"]
    def fmt(value, pattern: str) -> str:
        return "-" if value is None else pattern.format(value)

    rows = [{"annotator": n, "decided": p["decided"], "remaining": p["remaining"],
             "accept rate": fmt(per.get(n, {}).get("accept_rate"), "{:.0%}"), "edited": per.get(n, {}).get("edited", 0),
             "median seconds": fmt(per.get(n, {}).get("median_seconds"), "{:.1f}")}
            for n, p in stat["annotators"].items()]
    if rows:  # a few rows: a static table (text cells, escaped by React), drawn at once
        st.table(pl.DataFrame(rows))
    decisions = annotation.export_decisions(store, actor, session.id)
    st.download_button("Download decisions (JSONL)", key="ann_export",
                       data="".join(json.dumps(r, ensure_ascii=False) + "\n" for r in decisions),
                       file_name=f"{session.name}-decisions.jsonl", mime="application/jsonl")
    if session.status == "finalized":
        st.success(auth.md_text(f"Finalised by {session.finalized_by}: version {session.result_version}"))
        return
    with st.expander("Finalise: make the accepted records a new version", expanded=True):
        st.text_input("Dataset for the new version", value=store.load_manifest(session.version_id).dataset,
                                key=f"fin-name-{session.id}")
        st.checkbox("Leave undecided records out", key=f"fin-allow-{session.id}")
        sure = st.checkbox("I understand the session then closes to new decisions", key=f"fin-sure-{session.id}")
        # callbacks read the widgets' values from the session state: those are the values sent with
        # the click, while this run's locals may predate the last edit
        state = st.session_state
        st.button("Finalise", key=f"fin-{session.id}", disabled=not sure, type="primary", on_click=_act,
                  args=(lambda: annotation.finalize(store, _actor(), session.id,
                                                    name=state.get(f"fin-name-{session.id}") or None,
                                                    allow_undecided=bool(state.get(f"fin-allow-{session.id}"))),
                        "Finalised: {r[ref]} holds {r[records]} records"))
    holding = [n for n, p in stat["annotators"].items() if p["open"] > 0]
    if holding:
        with st.expander("Release records someone holds without deciding"):
            st.selectbox("Annotator", holding, key=f"rel-who-{session.id}")
            st.button("Release their records", key=f"rel-{session.id}", on_click=_act,
                      args=(lambda: {"n": annotation.release_claims(store, _actor(), session.id,
                                                                    st.session_state[f"rel-who-{session.id}"])},
                            "Released {r[n]} records"))
    with st.expander("Delete this session"):
        sure_del = st.checkbox("Delete the session and all its decisions", key=f"del-sure-{session.id}")
        st.button("Delete session", key=f"del-{session.id}", disabled=not sure_del, on_click=_act,
                  args=(lambda: annotation.delete_session(store, _actor(), session.id), "Session deleted"))


def conflicts_view(store, actor, session: annotation.Session) -> None:
    show_resolved = st.toggle("Show resolved conflicts too", key="ann_show_resolved")
    items = annotation.conflicts(store, actor, session.id, include_resolved=show_resolved)
    open_count = sum(1 for c in items if c["resolution"] is None)
    resolved = f", {len(items) - open_count} resolved" if show_resolved else ""
    st.caption(f"{open_count} unresolved conflicts{resolved}")
    if not items:
        st.success("No conflicts.")
    for c in items[:20]:
        rid = c["record_id"]
        with st.container(border=True):
            st.markdown(f"**Record {c['seq'] + 1}** · `{rid[:12]}`")  # our own numbers and hex id only
            show_record(annotation.get_item(store, actor, session.id, rid).record, compact=True)
            for d in c["decisions"]:
                reasons = f" ({', '.join(d['reasons'])})" if d["reasons"] else ""
                st.text(f"{d['annotator']}: {d['label']}{reasons}" + (" with an edit:" if d["edit"] else ""))
                if d["edit"]:
                    st.code(_edit_text(d["edit"]), language=None, wrap_lines=True)
            if c["resolution"]:
                r = c["resolution"]
                st.info(auth.md_text(f"Resolved: {r['label']} by {r['resolved_by']}"
                                     + (f", keeping {r['edit_of']}'s edit" if r["edit_of"] else "")))
            if session.status != "open":
                continue
            buttons = [("Accept", "accept", None), ("Reject", "reject", None)] + [
                (f"Accept {d['annotator']}'s edit", "accept", d["annotator"]) for d in c["decisions"] if d["edit"]]
            for col, (text, label, edit_of) in zip(st.columns(len(buttons)), buttons):
                col.button(text, key=f"res-{rid}-{label}-{edit_of}", on_click=_act,
                           args=(lambda label=label, edit_of=edit_of, rid=rid: annotation.resolve(
                               store, _actor(), session.id, rid, label, edit_of=edit_of),
                                 f"Resolved record {c['seq'] + 1}: {text.lower()}"))


def new_session_view(store, actor) -> None:
    version = version_picker("Version to annotate", key="ann_new_version")
    if version is None:
        return
    st.text_input("Session name", key="ann_new_name", placeholder="default: VERSION-review")
    st.text_input("Only records where (optional, SQL as in Review's filters)", key="ann_new_where")
    users = [u["name"] for u in annotation.list_users(store, actor)] if annotation.has_users(store) else []
    st.multiselect("Annotators (none chosen: everyone)", users, key="ann_new_annotators")
    st.number_input("Annotators per record (overlap)", min_value=1, value=1, step=1, key="ann_new_overlap")
    st.text_input("Reasons annotators may tick (comma-separated)", key="ann_new_reasons")
    st.text_input("Categories, one picked per record (comma-separated)", key="ann_new_categories")
    st.checkbox("Annotators may edit records (instruction, input, output; a chat record's turns)",
                key="ann_new_edit")

    def create():  # reads the values sent with the click (see sessions_view)
        v = st.session_state
        schema = annotation.LabelSchema(reasons=(v["ann_new_reasons"] or "").split(","),
                                        categories=(v["ann_new_categories"] or "").split(","),
                                        allow_edit=bool(v["ann_new_edit"]))
        s = annotation.create_session(store, _actor(), v["ann_new_version"], name=v["ann_new_name"] or None,
                                      where=v["ann_new_where"] or None, schema=schema,
                                      overlap=int(v["ann_new_overlap"]), annotators=v["ann_new_annotators"])
        return {"name": s.name, "items": s.items}

    st.button("Create session", key="ann_new_create", type="primary", on_click=_act,
              args=(create, "Created session {r[name]} with {r[items]} records"))


def users_view(store, actor) -> None:
    users = annotation.list_users(store, actor) if annotation.has_users(store) else []
    if users:
        st.dataframe(pl.DataFrame(users), hide_index=True)
    else:
        st.info("No users yet: this workspace is a single-user local tool. Adding the first user (an admin) "
                "turns on logins for the app.")
    with st.form("ann_add_user", clear_on_submit=True):
        name = st.text_input("New user name", key="ann_user_name")
        role = st.selectbox("Role", ["annotator", "admin"], index=1 if not users else 0, key="ann_user_role")
        password = st.text_input("Password", type="password", key="ann_user_password")
        if st.form_submit_button("Add user"):
            _act(lambda: annotation.add_user(store, _actor(), name, password, role) and {"name": name},
                 "Added {r[name]}")
            st.rerun()


def main() -> None:
    store = get_store()
    user = auth.current_user(store)
    if user is None and annotation.has_users(store):
        st.warning("Log in to annotate.")
        st.stop()
    actor = user or annotation.OPERATOR
    st.title("Annotate")
    _flash()
    view = (st.radio("View", VIEWS, index=1, horizontal=True, key="ann_view", label_visibility="collapsed")
            if actor.is_admin else "Annotate")
    if view == "New session":
        return new_session_view(store, actor)
    if view == "Users":
        return users_view(store, actor)
    sessions = annotation.list_sessions(store, actor)
    if view == "Annotate":
        sessions = [s for s in sessions if s.status == "open"]
    if not sessions:
        st.info("No open annotation session for you yet." if not actor.is_admin
                else "No sessions yet: create one under “New session”.")
        return
    labels = {s.id: f"{s.name} · {s.status} · {s.items} records" for s in sessions}
    sid = st.selectbox("Session", list(labels), format_func=lambda v: labels.get(v, v), key=f"ann_session_{view}")
    session = next(s for s in sessions if s.id == sid)
    {"Annotate": annotate_view, "Sessions": sessions_view, "Conflicts": conflicts_view}[view](store, actor, session)


main()
