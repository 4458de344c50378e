"""The Review page through Streamlit's AppTest, on a real workspace with real audits."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers import imported_version, run_page
from streamlit.testing.v1 import AppTest

from assay.auditors.exact import ExactDuplicates
from assay.auditors.runner import run_audit
from assay.core.store import Store

UI = Path(__file__).resolve().parents[2] / "app" / "ui"


def audited_version(store: Store):
    rows = [{"instruction": f"Explain topic {i}" if i % 4 else f"Translate sentence {i}",
             "output": "x" * (10 + i)} for i in range(60)]
    rows += [rows[1], rows[2]]  # two exact duplicates, rows 60 and 61
    v = imported_version(store, "rev", rows)
    run_audit(store, v.id, [ExactDuplicates()])
    return store, v


@pytest.fixture
def version(app_workspace):
    return audited_version(Store(app_workspace))


@pytest.fixture(params=["local", "s3"])
def version_anywhere(request, app_workspace, monkeypatch):
    """The same version in a local workspace or in one on S3 (the test session's S3 server)."""
    if request.param == "local":
        return audited_version(Store(app_workspace))
    ws = request.getfixturevalue("s3_workspace")
    monkeypatch.setenv("ASSAY_WORKSPACE", ws.url)
    return audited_version(ws.store())


def review() -> AppTest:
    return run_page("page_review.py")


def status(at: AppTest) -> str:
    return next(t.value for t in at.text if "records match" in t.value)


def test_pages_through_the_version(version):
    at = review()
    assert status(at) == "62 of 62 records match · page 1 of 2"
    assert at.dataframe[0].value["_pos"].tolist() == list(range(50))
    at.number_input(key="review_page").set_value(2).run()
    assert at.dataframe[0].value["_pos"].tolist() == [50 + i for i in range(12)]
    # audit columns are in the table
    assert "exact_duplicate" in at.dataframe[0].value.columns


def test_search_narrows_rows_and_the_record_view_shows_text_as_text(version):
    at = review()
    at.text_input(key="review_search").input("TRANSLATE").run()
    assert status(at) == "15 of 62 records match · page 1 of 1"
    assert all(s.startswith("Translate") for s in at.dataframe[0].value["instruction"])
    codes = [c.value for c in at.code]
    assert any("ILIKE '%TRANSLATE%'" in c for c in codes)  # the condition is shown
    assert "Translate sentence 0" in codes  # the record view (first row on the page)


def test_flag_filter_sort_and_save_creates_a_version_with_the_right_count(version_anywhere):
    store, v = version_anywhere
    at = review()
    at.selectbox(key="review_flag_exact_duplicate").select("no").run()
    assert status(at) == "60 of 62 records match · page 1 of 2"
    at.text_input(key="review_where").input("length(output) >= 40").run()
    assert status(at) == "30 of 62 records match · page 1 of 1"
    at.selectbox(key="review_sort").select("output length").run()
    at.checkbox(key="review_desc").check().run()
    assert at.dataframe[0].value["_pos"].tolist()[:3] == [59, 58, 57]
    at.text_input(key="review_save_name").input("rev-clean").run()
    at.button(key="review_save").click().run()
    assert not at.exception, at.exception
    assert "saved 30 records as rev-clean@1" in " ".join(t.value for t in at.text)
    saved = store.resolve("rev-clean")
    assert saved.records == 30 and saved.parents == [v.id] and saved.operation == "filter"
    assert "exact_duplicate" in saved.params["where"] and "length(output) >= 40" in saved.params["where"]


def test_record_view_shows_its_duplicate_cluster(version):
    at = review()
    at.number_input(key="review_page").set_value(2).run()
    at.selectbox(key="review_record").select(61).run()
    assert not at.exception, at.exception
    shown = [t.value for t in at.text]
    assert "Record #61" in [s.value for s in at.subheader]
    assert any(re.match(r"exact duplicate cluster: 2 rows", t) for t in shown)
    members = at.dataframe[-1].value
    assert members["_pos"].tolist() == [2]


def test_a_bad_condition_is_a_clear_message(version):
    at = review()
    at.text_input(key="review_where").input("no_such_column > 1").run()
    assert not at.exception
    assert any("unknown column no_such_column" in c.value for c in at.code)
