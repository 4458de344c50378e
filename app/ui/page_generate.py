"""Generate: pick a generator, fill its options, choose the LLM endpoint, run it as a background job.

The form is built from `generator_options(kind)` (the generator's Config dataclass: names, types,
defaults, help), so a new generator or option shows up here without touching this page. The job
runs the CLI's own command, `assay generate KIND --name NAME --OPTION VALUE ...`, so what the app
does can be repeated from a shell. LLM failures are browsed from the run journal, raw replies as text.
"""

from __future__ import annotations

import sys
from typing import Any

import streamlit as st

from assay.app.ui.common import get_store, version_picker
from assay.app.ui.jobs_panel import jobs_panel, start_job
from assay.core.llm import LLMConfig
from assay.core.llm.journal import list_llm_runs, run_failures, run_record
from assay.core.options import help_texts
from assay.pipelines.generate import default_run_id, generator_options, generators

st.title("Generate")


store = get_store()
KEY = "gen"


def _about(cls) -> str:
    """The first paragraph of the generator module's docstring: what it makes, in a sentence or two."""
    doc = (sys.modules[cls.__module__].__doc__ or "").strip()
    return doc.split("\n\n")[0].replace("\n", " ")


def _base(type_name: str) -> str:
    return type_name.replace(" | None", "").strip()


def _as_text(value: Any, type_name: str) -> str:
    """An option's value the way the CLI reads it (lists comma-separated, dicts K=V,...)."""
    if value is None:
        return ""
    base = _base(type_name)
    if base.startswith("list"):
        return ",".join(str(v) for v in value)
    if base.startswith("dict"):
        return ",".join(f"{k}={v}" for k, v in value.items())
    if base == "bool":
        return "true" if value else "false"
    return str(value)


def option_widget(kind: str, opt: dict[str, Any]) -> str | None:
    """One widget for one generator option; returns the CLI text of its value ('' = not given)."""
    name, type_name, default, help_text = opt["name"], opt["type"], opt["default"], opt["help"]
    base, optional = _base(type_name), "None" in type_name
    wkey = f"{KEY}_{kind}_{name}"
    label = name
    if base == "bool":
        return _as_text(st.checkbox(label, value=bool(default), help=help_text, key=wkey), type_name)
    if base in ("int", "float") and not optional:
        step = 1 if base == "int" else 0.05
        value = st.number_input(label, value=default, step=step, help=help_text, key=wkey,
                                format=None if base == "int" else "%.3f")
        return _as_text(value, type_name)
    if "version" in help_text and name in ("source", "seeds") and store.versions():
        # the generator reads a version or a file: offer the workspace's versions first
        where = st.radio(label, ["a version", "a file or path"], horizontal=True, key=wkey + "_from",
                         help=help_text)
        if where == "a version":
            return version_picker(f"{name}: version", key=wkey + "_version") or ""
        label = f"{name}: path"
    hint = {"list": "comma-separated", "dict": "KEY=VALUE,..."}.get(base.split("[")[0], "")
    placeholder = ("optional" if optional else "") + (f" ({hint})" if hint else "")
    return st.text_input(label, value=_as_text(default, type_name), help=help_text, key=wkey,
                         placeholder=placeholder.strip() or None).strip()


def option_argv(options: list[dict[str, Any]], values: dict[str, str]) -> list[str]:
    """`--option value` for every option whose value differs from its default (the CLI fills the rest)."""
    argv: list[str] = []
    for opt in options:
        value = values.get(opt["name"], "")
        if value == _as_text(opt["default"], opt["type"]) or (value == "" and opt["default"] in (None, "")):
            continue
        argv += ["--" + opt["name"].replace("_", "-"), value]
    return argv


# ---- the form -----------------------------------------------------------------------------------
known = generators()
kinds = list(known)
kind = st.selectbox("Generator", kinds, key=f"{KEY}_kind",
                    format_func=lambda k: f"{k}" + ("" if known[k].uses_llm else "  (no LLM)"))
st.caption(_about(known[kind]))
options = generator_options(kind)

with st.container(border=True):
    st.subheader("Options")
    values = {}
    grid = st.columns(2)  # two columns: a generator can have a dozen options
    for i, opt in enumerate(options):
        with grid[i % 2]:
            values[opt["name"]] = option_widget(kind, opt)
    name = st.text_input("New version of dataset", key=f"{KEY}_name", placeholder="e.g. si",
                         help="the dataset the generated records are committed to, as its next version").strip()

llm_argv: list[str] = []
if known[kind].uses_llm:
    with st.container(border=True):
        st.subheader("LLM endpoint")
        helps = help_texts(LLMConfig)
        endpoint = st.radio("Endpoint", ["embedded", "openai"], key=f"{KEY}_endpoint", horizontal=True,
                            format_func={"embedded": "Embedded llama.cpp (SmolLM2-135M-Instruct, offline)",
                                         "openai": "OpenAI-compatible endpoint"}.get)
        if endpoint == "openai":
            base_url = st.text_input("Base URL", key=f"{KEY}_base_url", help=helps["base_url"],
                                     placeholder="http://localhost:8000/v1").strip()
            model = st.text_input("Model", key=f"{KEY}_model", help=helps["model"]).strip()
            st.text_input("API key", type="password", key=f"{KEY}_api_key",
                          help="handed to the job's process in its environment (as $OPENAI_API_KEY); never "
                               "stored in the workspace or shown in the job's command")
            if base_url:
                llm_argv += ["--base-url", base_url]
            if model:
                llm_argv += ["--model", model]
        defaults = LLMConfig(base_url=None)
        c1, c2, c3 = st.columns(3)
        temperature = c1.number_input("temperature", 0.0, 2.0, float(defaults.temperature), 0.1,
                                      help=helps["temperature"], key=f"{KEY}_temperature")
        max_tokens = c2.number_input("max_tokens", 1, 32768, int(defaults.max_tokens), 32,
                                     help=helps["max_tokens"], key=f"{KEY}_max_tokens")
        concurrency = c3.number_input("concurrency", 1, 256, int(defaults.concurrency), 1,
                                      help=helps["concurrency"], key=f"{KEY}_concurrency")
        for flag, value, default in (("--temperature", temperature, defaults.temperature),
                                     ("--max-tokens", max_tokens, defaults.max_tokens),
                                     ("--concurrency", concurrency, defaults.concurrency)):
            if value != default:
                llm_argv += [flag, str(value)]

if st.button("Generate", type="primary", key=f"{KEY}_start"):
    if not name:
        st.error("Name the dataset the new version goes to.")
    else:
        argv = ["generate", kind, "--name", name, *option_argv(options, values)]
        if known[kind].uses_llm:
            # the run id is chosen here so the page can follow the run's journal while it runs
            argv += ["--run-id", default_run_id(kind, name), *llm_argv]
        api_key = (st.session_state.get(f"{KEY}_api_key") if st.session_state.get(f"{KEY}_endpoint") == "openai"
                   else None)
        start_job(store, argv, kind="generate", title=f"{kind} → {name}", key=KEY,
                  env={"OPENAI_API_KEY": api_key} if api_key else None)


# ---- jobs and their results ----------------------------------------------------------------------
def _run_id(job) -> str | None:
    if job.result and job.result.get("run_id"):
        return job.result["run_id"]
    if "--run-id" in job.argv:
        return job.argv[job.argv.index("--run-id") + 1]
    return (job.info or {}).get("run_id")


def live_counts(job) -> None:
    """ok / failed counts straight from the run journal, which the job's LLM client writes as it goes."""
    run_id = _run_id(job)
    if not run_id or job.finished:
        return
    try:
        rec = run_record(store, run_id)
    except Exception:  # the run is not journalled until the job's first batch starts
        return
    c1, c2, c3 = st.columns(3)
    c1.metric("LLM calls ok", rec["ok"])
    c2.metric("failed", rec["failed"])
    c3.metric("unfinished", rec["unfinished"])


st.divider()
st.subheader("Jobs")
job = jobs_panel(store, "generate", key=KEY, live=live_counts)

if job is not None and job.status == "succeeded" and job.result:
    r = job.result
    versions = (r.get("details") or {}).get("versions")
    st.success(f"Committed {r.get('records', 0)} records as "
               + (f"{len(versions)} new versions." if versions and not r.get("ref") else "a new version."))
    c1, c2, c3, c4 = st.columns(4)
    c1.metric("version", r.get("ref") or "—")
    c2.metric("records", r.get("records", 0))
    c3.metric("LLM requests", r.get("requested", 0))
    c4.metric("failed", r.get("failed", 0))
    if r.get("filtered"):
        st.text("dropped, by reason:")
        st.dataframe([{"reason": k, "records": v} for k, v in r["filtered"].items()], hide_index=True)
    tasks = (r.get("details") or {}).get("tasks")
    if tasks and (len(tasks) > 1 or not r.get("ref")):  # several end tasks (chain-of-task): one line each
        st.text("end tasks:")
        st.dataframe(tasks, hide_index=True)

# ---- failures: the journal's failed calls with their raw replies ----------------------------------
st.divider()
st.subheader("LLM runs and their failures")
runs = list(reversed(list_llm_runs(store)))
if not runs:
    st.caption("No LLM runs in this workspace yet.")
else:
    run_ids = [r["run_id"] for r in runs]
    wanted = _run_id(job) if job is not None else None
    if wanted in run_ids and st.session_state.get(f"{KEY}_run_followed") != wanted:
        # a newly selected job brings its run up; after that the choice is the user's
        st.session_state[f"{KEY}_run"] = st.session_state[f"{KEY}_run_followed"] = wanted
    elif st.session_state.get(f"{KEY}_run") not in run_ids:
        st.session_state[f"{KEY}_run"] = run_ids[0]
    by_id = {r["run_id"]: r for r in runs}
    chosen = st.selectbox("Run", run_ids, key=f"{KEY}_run",
                          format_func=lambda i: f"{i} · {by_id[i]['status']} · ok {by_id[i]['ok']} · "
                                                f"failed {by_id[i]['failed']}")
    rec = by_id[chosen]
    st.dataframe([{k: rec[k] for k in ("status", "endpoint", "model", "requested", "ok", "failed", "unfinished",
                                       "cached", "tokens_in", "tokens_out", "wall_s")}], hide_index=True)
    failures = run_failures(store, chosen, limit=500)
    if not failures:
        st.caption("No failed calls in this run.")
    else:
        st.dataframe([{"key": f["key"], "error_kind": f["error_kind"], "error": f["error"], "attempts": f["attempts"]}
                      for f in failures], hide_index=True)
        pick = st.selectbox("Failure", range(len(failures)), key=f"{KEY}_failure",
                            format_func=lambda i: f"{failures[i]['key']} · {failures[i]['error_kind']}")
        f = failures[pick]
        st.text("error")
        st.code(f["error"] or "", language=None)
        st.text("raw reply")
        st.code(f["raw"] if f["raw"] is not None else "(no reply)", language=None)
        with st.expander("request and attempts"):
            st.json({"request": f["request"], "attempt_log": f["attempt_log"], "finish_reason": f["finish_reason"]},
                    expanded=True)
