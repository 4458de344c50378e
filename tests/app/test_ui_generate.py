"""The Generate page under Streamlit's AppTest: the form is built from every generator's options, and
submitting starts the CLI's `generate` command as a real background job that commits a version."""

from __future__ import annotations

import time

from helpers import run_page
from streamlit.testing.v1 import AppTest


def _page() -> AppTest:
    return run_page("page_generate.py")


def _labels(at: AppTest) -> set[str]:
    widgets = [*at.text_input, *at.number_input, *at.checkbox, *at.selectbox, *at.radio]
    return {w.label for w in widgets}


def _wait(store, job_id: str, timeout: float = 180):
    from assay.core import jobs

    return jobs.wait(store, job_id, timeout=timeout, poll=0.5)


def test_the_form_lists_every_generator_and_its_fields(app_workspace):
    from assay.pipelines.generate import generator_options, generators

    at = _page()
    kind = at.selectbox(key="gen_kind")
    assert [o.split()[0] for o in kind.options] == list(generators())
    assert [o.endswith("(no LLM)") for o in kind.options] == [not g.uses_llm for g in generators().values()]
    for name, cls in generators().items():
        at.selectbox(key="gen_kind").select(name).run()
        assert not at.exception, at.exception
        labels = _labels(at)
        missing = [o["name"] for o in generator_options(name) if o["name"] not in labels]
        assert not missing, f"{name}: no widget for {missing}"
        # the endpoint is asked for exactly where the generator calls an LLM
        assert ("Endpoint" in labels) == cls.uses_llm, name
        if cls.uses_llm:
            at.radio(key="gen_endpoint").set_value("openai").run()
            assert {"Base URL", "Model"} <= _labels(at)
            at.radio(key="gen_endpoint").set_value("embedded").run()


def test_submitting_templates_starts_the_cli_command_and_commits_a_version(app_workspace, shared_data):
    from assay.core import jobs
    from assay.core.store import Store
    from assay.pipelines.importer import ImportConfig, import_source

    store = Store(app_workspace)
    source = import_source(store, str(shared_data / "benchmarks" / "gsm8k_test.jsonl"), "gsm", ImportConfig(),
                           show_progress=False)
    at = _page()
    at.selectbox(key="gen_kind").select("templates").run()
    at.radio(key="gen_templates_source_from").set_value("a version").run()
    at.selectbox(key="gen_templates_source_version").select(source.id)
    at.text_input(key="gen_templates_limit").input("12")
    at.text_input(key="gen_templates_tasks").input("qa,qa-inverted")
    at.number_input(key="gen_templates_phrasings").set_value(1)
    at.text_input(key="gen_name").input("flan")
    at.button(key="gen_start").click().run()
    assert not at.exception, at.exception

    started = jobs.list_jobs(store, kind="generate")
    assert len(started) == 1
    # exactly the CLI's argv: options that differ from their defaults, in the generator's field order
    assert started[0].argv == ["generate", "templates", "--name", "flan", "--source", source.id,
                               "--tasks", "qa,qa-inverted", "--phrasings", "1", "--limit", "12"]
    job = _wait(store, started[0].id)
    assert job.status == "succeeded", jobs.log_tail(store, job.id)
    flan = store.resolve("flan")
    assert flan.ref == "flan@1" and flan.records == 24  # 12 rows x 2 tasks x 1 phrasing
    assert flan.parents == [source.id]

    at.run()  # a reload: the page finds the finished job in the workspace and shows its result
    assert not at.exception, at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["version"] == "flan@1"
    assert metrics["records"] == "24"
    assert any("succeeded" in t.value for t in at.text)


def test_a_missing_name_starts_nothing(app_workspace):
    from assay.core import jobs
    from assay.core.store import Store

    at = _page()
    at.selectbox(key="gen_kind").select("code-edits").run()
    at.button(key="gen_start").click().run()
    assert [e.value for e in at.error] == ["Name the dataset the new version goes to."]
    assert jobs.list_jobs(Store(app_workspace), kind="generate") == []


def test_failed_llm_calls_are_listed_with_their_raw_replies(app_workspace):
    """Failures come from the run journal, written by the real LLM client against a local server;
    the raw reply is shown verbatim as text, never rendered."""
    from fault_server import FaultServer

    from assay.core.llm import LLMClient, LLMConfig, Request
    from assay.core.store import Store

    def reject_scripts(text: str) -> str:
        if "<script>" in text:
            raise ValueError("the reply holds a script tag")
        return text

    store = Store(app_workspace)
    server = FaultServer(fault_rate=0).start()
    try:
        cfg = LLMConfig(base_url=server.base_url, model=server.model, temperature=0, seed=1, max_retries=0)
        requests = [Request("bad", "<script>alert(1)</script>", parse=reject_scripts),
                    Request("good", "plain question", parse=reject_scripts)]
        results = LLMClient(cfg).run_batch("si-demo-1", requests, store)
    finally:
        server.stop()
    bad = next(r for r in results if r.key == "bad")
    assert not bad.ok and "<script>" in bad.raw

    at = _page()
    assert at.selectbox(key="gen_run").value == "si-demo-1"
    table = at.dataframe[-1].value
    assert list(table["key"]) == ["bad"] and list(table["error_kind"]) == [bad.error_kind]
    assert bad.raw in [c.value for c in at.code]  # the raw reply, verbatim, in a code block
    assert not any("<script>" in m.value for m in at.markdown)


def test_llm_job_on_an_endpoint_shows_live_counts_and_cancels_after_confirmation(app_workspace, shared_data):
    """Self-Instruct against a local OpenAI-compatible server that answers slowly: the job's argv
    names the endpoint and a run id, the page follows the run's journal while it runs, and Cancel
    asks first, then stops the job."""
    from fault_server import FaultServer

    from assay.core import jobs
    from assay.core.store import Store

    store = Store(app_workspace)
    server = FaultServer(fault_rate=0, delay_s=60).start()  # every reply takes a minute: the job stays running
    try:
        at = _page()
        at.selectbox(key="gen_kind").select("self-instruct").run()
        seeds = str(shared_data / "instructions" / "self_instruct_seed_tasks.jsonl")
        at.text_input(key="gen_self-instruct_seeds").input(seeds)
        at.text_input(key="gen_name").input("si")
        at.radio(key="gen_endpoint").set_value("openai").run()
        at.text_input(key="gen_base_url").input(server.base_url)
        at.text_input(key="gen_model").input(server.model)
        at.button(key="gen_start").click().run()
        assert not at.exception, at.exception
        [job] = jobs.list_jobs(store, kind="generate")
        run_id = job.argv[job.argv.index("--run-id") + 1]
        assert job.argv == ["generate", "self-instruct", "--name", "si", "--seeds", seeds, "--run-id", run_id,
                            "--base-url", server.base_url, "--model", server.model]

        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:  # the journal's counts appear once the first batch is sent
            at.run()
            metrics = {m.label: m.value for m in at.metric}
            if int(metrics.get("unfinished", 0)) > 0:
                break
            time.sleep(1)
        assert int(metrics["unfinished"]) > 0 and metrics["LLM calls ok"] == "0", metrics
        assert jobs.get(store, job.id).status == "running"

        at.button(key="gen_cancel").click().run()
        assert any("Cancel this job?" in w.value for w in at.warning)
        assert jobs.get(store, job.id).status == "running"  # nothing happens before the confirmation
        at.button(key="gen_cancel_no").click().run()
        assert not at.warning and jobs.get(store, job.id).status == "running"
        at.button(key="gen_cancel").click().run()
        at.button(key="gen_cancel_yes").click().run()
        assert not at.exception, at.exception
        assert jobs.get(store, job.id).status == "cancelled"
    finally:
        server.stop()
