"""Train & compare: two versions, one preset, one click; loss curves while it trains; the result side by side.

The job is the CLI's `assay compare A B --preset P -o FIELD=VALUE`: two runs with the same config, seed
and evaluation sets, so the metric deltas are what the data change did. While it runs, the curves
come from the runs' own files (`trainer.train.live_curve`); afterwards from the runs' records. Record
text is shown with st.dataframe only.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import altair as alt
import polars as pl
import streamlit as st

from assay.app.ui.common import RECORD_FRAME_SCHEMA, get_store, records_table, version_picker
from assay.app.ui.jobs_panel import jobs_panel, start_job
from assay.core.audits import latest_audits
from assay.core.options import help_texts
from assay.trainer.config import PRESETS, TrainConfig
from assay.trainer.report import metric_rows
from assay.trainer.train import list_train_runs, live_curve, load_run

st.title("Train & compare")

store = get_store()
KEY = "train"


def _curve_chart(curves: dict[str, list[dict[str, Any]]]) -> alt.Chart | None:
    rows = [{"run": side, "step": p["step"], "loss": p["loss"]} for side, points in curves.items() for p in points
            if p.get("loss") is not None]
    if not rows:
        return None
    return alt.Chart(pl.DataFrame(rows).to_pandas()).mark_line(point=True).encode(
        x="step:Q", y=alt.Y("loss:Q", title="training loss (response tokens)", scale=alt.Scale(zero=False)),
        color=alt.Color("run:N", title="version"), tooltip=["run", "step", "loss"])


def _metric_table(a: dict[str, Any], b: dict[str, Any], delta: dict[str, float]) -> list[dict[str, Any]]:
    """The comparison report's metric rows (metric, a, b, delta = b - a, verdict) typed for a table."""
    rows = metric_rows(a, b, delta)
    return [{"metric": r["name"], "a": _cell(r.get("a")), "b": _cell(r.get("b")), "delta": _cell(r.get("delta")),
             **({"verdict": r["verdict"]} if "verdict" in r else {})} for r in rows]


def _cell(value: Any) -> float | str | None:
    """One type per table column (Arrow does not mix numbers and text): numbers as floats, a dash as None."""
    if value is None or value == "–":
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return str(value)


def _parse_time(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    try:
        t = dt.datetime.fromisoformat(str(text))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)


def job_runs(job) -> dict[str, str]:
    """The train runs of a compare job, by side: a starts first, b second; both on the job's versions,
    created after the job started (read from the catalog, so a reload finds them again)."""
    started = _parse_time(job.started) or _parse_time(job.created)
    versions = {store.resolve(v).id for v in job.argv[1:3]}
    found = [r for r in list_train_runs(store) if r["version"] in versions
             and started is not None and (_parse_time(r["created_at"]) or started) >= started.replace(microsecond=0)]
    found.sort(key=lambda r: r["created_at"])
    sides = dict(zip(("a", "b"), (r["run_id"] for r in found)))
    info = job.info or {}
    if info.get("side") in ("a", "b") and info.get("run_id"):
        sides[info["side"]] = info["run_id"]
    return sides


def live_curves(job) -> None:
    """While the job trains: the loss curve of each run so far."""
    if job.finished or job.kind != KEY or not job.argv or job.argv[0] != "compare":
        return
    curves = {}
    for side, run_id in job_runs(job).items():
        try:
            curves[side.upper()] = live_curve(store, run_id)
        except Exception:  # the run is being created right now; the next refresh finds it
            continue
    chart = _curve_chart(curves)
    if chart is not None:
        st.altair_chart(chart, width="stretch")


def show_comparison(result: dict[str, Any]) -> None:
    runs, data = result["runs"], result["data"]
    left, right = st.columns(2)
    for col, side in ((left, "a"), (right, "b")):
        run = runs[side]
        col.metric(f"{side.upper()}: {run['ref']}", f"{run['records']} records")
        col.caption(f"run {run['run_id']}")
    st.text("metrics (delta = B − A)")
    st.dataframe(_metric_table(runs["a"]["metrics"], runs["b"]["metrics"], result["delta"]), hide_index=True)
    chart = _curve_chart({side.upper(): runs[side].get("curve") or [] for side in ("a", "b")})
    if chart is not None:
        st.altair_chart(chart, width="stretch")

    st.subheader("The data difference")
    c1, c2, c3 = st.columns(3)
    c1.metric("added in B", data["added"])
    c2.metric("removed from A", data["removed"])
    c3.metric("unchanged", data["unchanged"])
    diff = store.diff(data["a"]["version"], data["b"]["version"], sample=5)
    left, right = st.columns(2)
    for col, what in ((left, "added"), (right, "removed")):
        rows = diff.get(f"{what}_records", [])
        col.text(f"{what} (a few)")
        if rows:
            col.dataframe(records_table(pl.DataFrame(rows, schema=RECORD_FRAME_SCHEMA)), hide_index=True)
        else:
            col.caption(f"no record {what}")

    st.subheader("Audits of both versions")
    left, right = st.columns(2)
    for col, side in ((left, "a"), (right, "b")):
        audits = latest_audits(store, data[side]["version"])
        col.text(f"{side.upper()}: {data[side]['ref']}")
        if not audits:
            col.caption("not audited")
        for a in audits:
            figures = {k: v for k, v in a["summary"].items()
                       if isinstance(v, (int, float, str, bool)) and k != "config"}
            col.dataframe([{"auditor": a["auditor"], "figure": k, "value": str(v)} for k, v in figures.items()],
                          hide_index=True)
    report = result.get("report")
    if report and Path(report).is_file():
        st.download_button("Download the comparison report (HTML)", Path(report).read_bytes(),
                           file_name=Path(report).parent.name + "-compare.html", mime="text/html",
                           key=f"{KEY}_report")


# ---- the form -------------------------------------------------------------------------------------
rows = sorted(store.versions(), key=lambda r: str(r["created_at"]), reverse=True)
with st.container(border=True):
    left, right = st.columns(2)
    with left:
        a = version_picker("A (the baseline)", key=f"{KEY}_a", default=rows[1]["id"] if len(rows) > 1 else None)
    with right:
        b = version_picker("B", key=f"{KEY}_b")
    presets = list(PRESETS)
    preset = st.selectbox("Preset", presets, key=f"{KEY}_preset", help=help_texts(TrainConfig)["preset"])
    with st.expander("What the preset sets"):
        st.json(PRESETS[preset], expanded=True)
    overrides = st.text_area("Overrides, one FIELD=VALUE per line (any TrainConfig field)", key=f"{KEY}_options",
                             placeholder="max_steps=40")
    with st.expander("Every TrainConfig field"):
        st.dataframe([{"field": k, "help": v} for k, v in help_texts(TrainConfig).items()], hide_index=True)
    if st.button("Train and compare", type="primary", key=f"{KEY}_start", disabled=not (a and b)):
        argv = ["compare", a, b, "--preset", preset]
        for line in overrides.splitlines():
            if line.strip():
                argv += ["-o", line.strip()]
        ref_a, ref_b = store.resolve(a).ref, store.resolve(b).ref
        start_job(store, argv, kind=KEY, title=f"compare {ref_a} vs {ref_b} ({preset})", key=KEY)

st.subheader("Jobs")
job = jobs_panel(store, KEY, key=KEY, live=live_curves)
if job is not None and job.status == "succeeded" and job.result and "runs" in job.result:
    st.subheader("Result")
    show_comparison(job.result)

# ---- earlier runs ---------------------------------------------------------------------------------
st.divider()
st.subheader("Training runs")
runs = list_train_runs(store)
if not runs:
    st.caption("No training runs in this workspace yet.")
else:
    st.dataframe([{"run": r["run_id"], "version": r["ref"], "preset": r["preset"], "model": r["model"],
                   "status": r["status"], "created": r["created_at"],
                   "train_loss": (r["metrics"] or {}).get("train_loss"),
                   "reference_loss": (r["metrics"] or {}).get("reference_loss")} for r in runs],
                 hide_index=True)
    chosen = st.selectbox("Run", [r["run_id"] for r in runs], key=f"{KEY}_run")
    run = load_run(store, chosen)
    st.text(f"{run['ref']} · {run.get('status')} · {run['records']} records · {run['config'].get('preset')}")
    chart = _curve_chart({run["ref"]: (live_curve(store, chosen) if run.get("status") == "running"
                                       else run.get("curve") or [])})
    if chart is not None:
        st.altair_chart(chart, width="stretch")
    if run.get("metrics"):
        st.dataframe([{"metric": k, "value": str(v)} for k, v in run["metrics"].items()], hide_index=True)
    if run.get("tensorboard_path"):
        st.caption("TensorBoard events of this run (every run's, with the workspace's runs/train folder):")
        st.code(f"tensorboard --logdir {Path(store.root) / run['tensorboard_path']}", language="bash")
    if run.get("error"):
        st.code(run["error"], language=None)
