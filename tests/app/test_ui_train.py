"""The Train & compare page under Streamlit's AppTest: one click starts the CLI's `compare` as a real
background job (preset cpu-smoke: a tiny model, seconds of training), and the finished comparison is
shown side by side: both runs' metrics with the delta, the data diff, the runs list."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import run_page
from streamlit.testing.v1 import AppTest


def _page() -> AppTest:
    return run_page("page_train.py")


def test_empty_workspace_says_so(app_workspace):
    at = _page()
    assert any("No versions yet" in i.value for i in at.info)
    assert at.button(key="train_start").disabled
    assert any("No training runs" in c.value for c in at.caption)


@pytest.mark.slow  # two cpu-smoke trainings in a background process: ~40-90 s on 2 cores
def test_compare_job_and_result_side_by_side(app_workspace, shared_data, tmp_path):
    from assay.core import jobs
    from assay.core.store import Store
    from assay.pipelines.importer import ImportConfig, import_source

    store = Store(app_workspace)
    rows = (shared_data / "benchmarks" / "gsm8k_test.jsonl").read_text(encoding="utf-8").splitlines()[:60]
    (tmp_path / "gsm.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    full = import_source(store, str(tmp_path / "gsm.jsonl"), "gsm", ImportConfig(), show_progress=False)
    short = store.filter(full.id, "length(output) < 200", "gsm")
    diff = store.diff(full.id, short.id)
    assert diff["removed"] > 0

    at = _page()
    assert at.selectbox(key="train_a").value == full.id  # the baseline defaults to the older version
    assert at.selectbox(key="train_b").value == short.id
    assert at.selectbox(key="train_preset").value == "cpu-smoke"
    # overrides go to the CLI as -o FIELD=VALUE (fewer steps and probe items: a shorter test)
    at.text_area(key="train_options").input("max_steps=6\nbenchmark_items=2")
    at.button(key="train_start").click().run()
    assert not at.exception, at.exception
    started = jobs.list_jobs(store, kind="train")
    assert [j.argv for j in started] == [["compare", full.id, short.id, "--preset", "cpu-smoke",
                                          "-o", "max_steps=6", "-o", "benchmark_items=2"]]

    job = jobs.wait(store, started[0].id, timeout=240, poll=1)
    assert job.status == "succeeded", jobs.log_tail(store, job.id)
    result = job.result
    assert result["runs"]["a"]["metrics"]["steps"] == 6

    at.run()
    assert not at.exception, at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["A: gsm@1"] == f"{full.records} records"
    assert metrics["B: gsm@2"] == f"{short.records} records"
    assert metrics["removed from A"] == str(diff["removed"])
    assert metrics["added in B"] == "0"
    table = next(d.value for d in at.dataframe if "delta" in d.value.columns)
    row = table.set_index("metric").loc["train_loss"]
    a_loss, b_loss = result["runs"]["a"]["metrics"]["train_loss"], result["runs"]["b"]["metrics"]["train_loss"]
    assert row["a"] == pytest.approx(a_loss) and row["b"] == pytest.approx(b_loss)
    assert row["delta"] == pytest.approx(b_loss - a_loss)
    # the removed records are shown (as a table, a few of them)
    removed = [d.value for d in at.dataframe if list(d.value.columns[:3]) == ["instruction", "input", "output"]]
    assert len(removed) == 1 and 0 < len(removed[0]) <= 5
    assert set(removed[0]["instruction"]) <= (set(store.read(full)["instruction"])
                                              - set(store.read(short)["instruction"]))
    assert any(c.value == "no record added" for c in at.caption)
    # both runs are listed among the training runs, with their curves drawn from the run records
    runs = next(d.value for d in at.dataframe if "reference_loss" in d.value.columns)
    assert set(runs["run"]) == {result["runs"]["a"]["run_id"], result["runs"]["b"]["run_id"]}
    specs = [c.proto.spec for c in at.get("vega_lite_chart")]
    assert any('"training loss (response tokens)"' in s for s in specs)
    # and where the chosen run's TensorBoard events are (a folder that exists)
    [command] = [c.value for c in at.code if c.value.startswith("tensorboard --logdir ")]
    assert Path(command.removeprefix("tensorboard --logdir ")).is_dir()
