"""Review: browse a version page by page, search it, filter and sort it on record fields and audit
columns, open a record with its provenance and audit evidence, save the current filter as a version.

Thin: the work is `assay.app.query` (the same SQL conditions as `assay filter --where`; saving is
`filter_version`, which the CLI's `filter` calls). Record text is shown only through
st.dataframe / st.code / st.text, never as markdown or HTML.
"""

from __future__ import annotations

import streamlit as st

from assay.app import query
from assay.app.ui.common import get_store, records_table, show_error, version_picker
from assay.core.audits import latest_audits
from assay.core.errors import AssayError

store = get_store()
st.title("Review")

version_id = version_picker("Version", key="review_version")
if version_id is None:
    st.stop()
manifest = store.resolve(version_id)
audits = latest_audits(store, manifest)
# a new audit of this version changes its columns: part of every cache key below
audit_stamp = ",".join(sorted(f"{a['auditor']}:{a['created_at']}" for a in audits))


@st.cache_data(max_entries=16, show_spinner=False)
def _columns(vid: str, stamp: str) -> dict[str, str]:
    return query.columns(get_store(), vid)


@st.cache_data(max_entries=16, show_spinner=False)
def _distinct(vid: str, column: str) -> list[str]:
    return query.distinct(get_store(), vid, column)


@st.cache_data(max_entries=8, show_spinner="Filtering...")
def _positions(vid: str, stamp: str, condition_parts: tuple, sort: str | None, descending: bool):
    """The matching positions (8 bytes a row), cached: paging through a result reads no more than
    the page. `condition_parts` is the Query's fields (hashable), so equal queries share an entry."""
    q = _query_from(condition_parts, sort, descending)
    return query.select(get_store(), vid, q).positions


def _query_from(parts: tuple, sort: str | None, descending: bool) -> query.Query:
    search, where, flags, values, lengths = parts
    return query.Query(search=search, where=where, flags=dict(flags), values={k: list(v) for k, v in values},
                       lengths=dict(lengths), sort=sort, descending=descending)


cols = _columns(manifest.id, audit_stamp)
audit_cols = {k: v for k, v in cols.items() if k not in query.RECORD_SORTABLE and k not in (
    "id", "messages", "sampling_params", "parent_ids", "metadata")}
st.caption(f"{manifest.ref} · {manifest.records} records · "
           + (f"audits: {', '.join(a['auditor'] for a in audits)}" if audits
              else "not audited yet (the Audit page adds duplicate, contamination and quality columns)"))

# ---- the query -------------------------------------------------------------------------------------

search = st.text_input("Search instruction, input and output", key="review_search",
                       placeholder="case-insensitive text")
flags: dict[str, bool] = {}
values: dict[str, tuple[str, ...]] = {}
lengths: dict[str, tuple[int | None, int | None]] = {}
with st.expander("Filters", expanded=bool(audit_cols)):
    bool_cols = [c for c, t in audit_cols.items() if t == "Boolean"]
    if bool_cols:
        st.caption("Audit flags")
        grid = st.columns(4)
        for i, col in enumerate(bool_cols):
            choice = grid[i % 4].selectbox(col, ["any", "yes", "no"], key=f"review_flag_{col}")
            if choice != "any":
                flags[col] = choice == "yes"
    left, right = st.columns(2)
    for box, col in ((left, "source"), (right, "generator")):
        picked = box.multiselect(col.capitalize(), _distinct(manifest.id, col), key=f"review_values_{col}")
        if picked:
            values[col] = tuple(picked)
    grid = st.columns(4)
    for i, col in enumerate(("instruction", "output")):
        lo = grid[2 * i].number_input(f"{col} length ≥", 0, None, 0, key=f"review_min_{col}")
        hi = grid[2 * i + 1].number_input(f"{col} length ≤ (0: no limit)", 0, None, 0, key=f"review_max_{col}")
        if lo or hi:
            lengths[col] = (lo or None, hi or None)
    where = st.text_input("SQL condition (as `assay filter --where`)", key="review_where",
                          placeholder="length(output) > 20 AND NOT minhash_duplicate")
    st.caption("Columns: " + ", ".join(c for c in cols if c not in ("messages", "parent_ids")))

sort_choices = {"version order": None, "instruction length": "length(instruction)",
                "output length": "length(output)", "source": "source", "generator": "generator",
                **{c: c for c, t in audit_cols.items() if t != "Boolean"}}
s1, s2, s3 = st.columns([3, 1, 1])
sort_label = s1.selectbox("Sort by", list(sort_choices), key="review_sort")
descending = s2.checkbox("Descending", key="review_desc")
size = s3.selectbox("Rows a page", [25, 50, 100, 200], index=1, key="review_size")

parts = (search.strip(), where.strip(), tuple(sorted(flags.items())), tuple(sorted(values.items())),
         tuple(sorted(lengths.items())))
q = _query_from(parts, sort_choices[sort_label], descending)
try:
    positions = _positions(manifest.id, audit_stamp, parts, q.sort, descending)
except AssayError as exc:
    show_error(exc)
    st.stop()
selection = query.Selection(manifest, q.condition(), positions)
if selection.condition:
    st.code(selection.condition, language="sql", wrap_lines=True)

# a new query starts at its first page
signature = (manifest.id, parts, q.sort, descending, size)
if st.session_state.get("review_signature") != signature:
    st.session_state["review_signature"] = signature
    st.session_state["review_page"] = 1
pages = selection.pages(size)
p1, p2 = st.columns([1, 4])
page_no = p1.number_input(f"Page (of {pages})", 1, pages, key="review_page")
p2.text(f"{selection.count} of {manifest.records} records match · page {page_no} of {pages}")

rows = query.page(store, selection, int(page_no) - 1, size)
st.dataframe(records_table(rows), hide_index=True)

# ---- one record --------------------------------------------------------------------------------------

if rows.height:
    labels = {pos: f"#{pos}  {(text or '')[:90]}" for pos, text in zip(rows["_pos"], rows["instruction"])}
    pos = st.selectbox("Open a record", list(labels), format_func=lambda v: labels.get(v, v), key="review_record")
    rec = query.record(store, manifest, int(pos))
    r = rec["record"]
    st.subheader(f"Record #{pos}")
    st.text(f"id {r['id']}")
    if r.get("messages"):
        for turn in r["messages"]:
            st.text(turn["role"])
            st.code(turn["content"], language=None, wrap_lines=True)
    else:
        for field in ("instruction", "input", "output"):
            st.text(field)
            st.code(r[field] or "", language=None, wrap_lines=True)
    c1, c2 = st.columns(2)
    with c1:
        st.text("provenance")
        st.json(rec["provenance"], expanded=True)
    with c2:
        st.text("audit columns")
        st.json(rec["audit"] or {"audits": "none yet"}, expanded=True)
    if rec["contamination"] is not None:
        st.text("contamination evidence: the benchmark item beside the record")
        for ev in rec["contamination"].iter_rows(named=True):
            st.text(f"{ev['benchmark']} item {ev['item']} · {ev['tier']} · similarity {ev['similarity']} · "
                    f"{ev['matched_ngrams']} shared n-grams")
            b1, b2 = st.columns(2)
            b1.code(ev["record_text"] or "", language=None, wrap_lines=True)
            b2.code(ev["benchmark_text"] or "", language=None, wrap_lines=True)
    for auditor, members in rec["clusters"].items():
        st.text(f"{auditor} duplicate cluster: {members['cluster_size'][0]} rows (others shown, up to 20)")
        st.dataframe(members.drop("cluster_size"), hide_index=True)

# ---- save ------------------------------------------------------------------------------------------

st.subheader("Save the current filter as a new version")
st.caption("The sort is not kept: a filtered version keeps its parent's order. The condition above is "
           "recorded in the new version's manifest.")
new_name = st.text_input("Dataset for the new version", value=manifest.dataset, key="review_save_name")
if st.button("Save as a new version", key="review_save", disabled=not selection.condition):
    try:
        saved = query.save(store, manifest, q, new_name.strip() or None)
    except AssayError as exc:
        show_error(exc)
    else:
        st.success("Saved.")
        st.text(f"saved {saved.records} records as {saved.ref} ({saved.id[:12]})")
