"""The background-job widget the Generate, Audit and Train pages share.

A job is a detached `assay ... --json` process recorded in the workspace catalog (core/jobs.py), so
this panel reads everything it shows from there: a page reload or a second tab sees the same job.
While the selected job runs, only the panel re-runs (an `st.fragment` with `run_every`), not the
page; when it finishes, the whole page re-runs once so the page can render the job's result.

Job titles, errors and logs may hold untrusted text (file names, LLM replies): they are shown with
st.text / st.code / st.json, never as markdown or HTML.
"""

from __future__ import annotations

import datetime as dt
import shlex
from typing import Any, Callable

import streamlit as st

from assay.app.ui.common import show_error
from assay.core import jobs

# seconds between refreshes of a running job: fast enough to look live, slow enough that a page
# left open does not keep the catalog busy
REFRESH_S = 1.5


def start_job(store, argv: list[str], *, kind: str, title: str, key: str,
              env: dict[str, str] | None = None) -> str | None:
    """Start `assay ARGV --json` as a background job and select it in the panel `key` (call it before
    the panel is drawn). `env`: extra environment for the job's process only (secrets stay out of
    argv, which the catalog records)."""
    from assay.core.errors import AssayError

    try:
        job_id = jobs.start(store, argv, kind=kind, title=title, env=env)
    except AssayError as exc:
        show_error(exc)
        return None
    st.session_state[f"{key}_selected"] = job_id  # the panel below shows the new job
    return job_id


def _when(value: Any) -> str:
    if not value:
        return "—"
    text = str(value)
    try:
        return dt.datetime.fromisoformat(text).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return text[:19]


def _label(job) -> str:
    # no status here: the browser keeps showing the label the job had when it was picked, so a
    # finished job would still read "running"; the status is drawn below, where it refreshes
    return f"{job.title or ' '.join(job.argv)} · {_when(job.created)}"


def _show_info(info: dict[str, Any]) -> None:
    """Numbers as metrics (ok / failed counts, step, loss...), anything else as JSON."""
    numbers = {k: v for k, v in info.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if numbers:
        cols = st.columns(min(len(numbers), 6))
        for i, (name, value) in enumerate(numbers.items()):
            cols[i % len(cols)].metric(name, f"{value:.4g}" if isinstance(value, float) else value)
    rest = {k: v for k, v in info.items() if k not in numbers}
    if rest:
        st.json(rest, expanded=False)


def _cancel(jobs, store, job, key: str) -> None:
    """Cancel with a confirmation step: a running job's work is lost. Callbacks change the state
    before the panel re-runs, so each run draws the step the user is at."""
    confirm = f"{key}_confirm_cancel"
    state = st.session_state

    def ask() -> None:
        state[confirm] = job.id

    def drop() -> None:
        state.pop(confirm, None)

    def really() -> None:
        jobs.cancel(store, job.id)
        state.pop(confirm, None)

    if state.get(confirm) != job.id:
        st.button("Cancel job", key=f"{key}_cancel", on_click=ask)
        return
    st.warning("Cancel this job? Its process is stopped and unfinished work is lost.")
    yes, no = st.columns(2)
    yes.button("Yes, cancel it", key=f"{key}_cancel_yes", type="primary", on_click=really)
    no.button("No, keep it running", key=f"{key}_cancel_no", on_click=drop)


def jobs_panel(store, kind: str, *, key: str, live: Callable[[Any], None] | None = None,
               limit: int = 30) -> Any | None:
    """List this kind's jobs (newest first), show the selected one, and return it (a jobs.Job) or None.

    `live(job)` renders page-specific progress inside the refreshing part (e.g. a loss curve)."""
    listed = jobs.list_jobs(store, kind=kind, limit=limit)
    if not listed:
        st.caption("No jobs of this kind yet.")
        return None
    ids = [j.id for j in listed]
    labels = {j.id: _label(j) for j in listed}
    # `{key}_selected` picks the job from outside the widget (a job just started, a job id in the
    # URL); it wins only when it changed since the last run, otherwise the user's choice stands
    widget, wanted = f"{key}_job", st.session_state.get(f"{key}_selected")
    if wanted in ids and wanted != st.session_state.get(f"{key}_shown"):
        st.session_state[widget] = wanted
    elif st.session_state.get(widget) not in ids:  # first visit, or the selected job aged out
        st.session_state[widget] = ids[0]
    selected = st.selectbox("Job", ids, format_func=labels.get, key=widget)
    st.session_state[f"{key}_selected"] = st.session_state[f"{key}_shown"] = selected
    job = jobs.get(store, selected)
    # refresh only while there is something to watch; a finished job is drawn once
    run_every = None if job.finished else REFRESH_S

    @st.fragment(run_every=run_every)
    def panel() -> None:
        current = jobs.get(store, selected)
        _render(jobs, store, current, key, live)
        if current.finished and not job.finished:
            st.rerun()  # the whole page: it renders the result of the job that just ended

    panel()
    return jobs.get(store, selected)


def _render(jobs, store, job, key: str, live: Callable[[Any], None] | None) -> None:
    st.text(f"{job.status}: {job.title or ''}")
    st.code(shlex.join(["assay", *job.argv]), language="bash")  # the same command, from a shell
    st.caption(f"created {_when(job.created)} · started {_when(job.started)} · ended {_when(job.ended)}")
    fraction = job.fraction
    if job.status == "succeeded":
        fraction = 1.0
    done = f"{job.done}" + (f" / {job.total}" if job.total else "")
    stage = (job.stage or "").strip()
    st.progress(min(max(fraction or 0.0, 0.0), 1.0), text=f"{stage} {done}".strip() if job.done or stage else None)
    if job.info:
        _show_info(job.info)
    if live is not None:
        live(job)
    if job.status in ("failed", "cancelled") and job.error:
        st.error("The job failed:" if job.status == "failed" else "The job was cancelled:")
        st.code(job.error, language=None)
    with st.expander("Log", expanded=job.status == "failed"):
        st.code(jobs.log_tail(store, job.id, lines=100) or "(empty)", language=None)
    if not job.finished:
        _cancel(jobs, store, job, key)
