"""The Review page's library: search, filters, sort, pages, one record's evidence, save as a version."""

import json

import numpy as np
import pytest
from helpers import imported_version, write_jsonl

import assay.core.store as store_module
from assay.app import query
from assay.auditors.contamination import Contamination, ContaminationConfig
from assay.auditors.exact import ExactDuplicates
from assay.auditors.runner import run_audit
from assay.core.errors import AssayError
from assay.pipelines.demo import humaneval_path
from assay.pipelines.importer import import_source


@pytest.fixture
def small_segments(monkeypatch):
    # many segments of several row groups: positions must cross part and row-group bounds
    monkeypatch.setattr(store_module, "SEGMENT_ROWS", 7)
    monkeypatch.setattr(store_module, "ROW_GROUP_ROWS", 3)


def _rows(n=40):
    return [{"instruction": f"Task {i}: {'Say HELLO' if i % 5 == 0 else 'count'} {i % 9}",
             "input": "it's 50% off" if i == 13 else "",
             "output": "x" * (i + 1), "origin": "a" if i % 2 else "b"} for i in range(n)]


def test_no_query_reads_pages_in_order(store, tmp_path, small_segments):
    v = import_source(store, str(write_jsonl(tmp_path / "d.jsonl", _rows())), "d")
    sel = query.select(store, v.id, query.Query())
    assert sel.positions is None and sel.count == 40 and sel.pages(15) == 3
    page = query.page(store, sel, 2, 15)
    assert page["_pos"].to_list() == list(range(30, 40))
    assert page["instruction"].to_list() == [r["instruction"] for r in _rows()[30:]]


def test_search_is_case_insensitive_and_literal(store, tmp_path, small_segments):
    v = import_source(store, str(write_jsonl(tmp_path / "d.jsonl", _rows())), "d")
    hello = query.select(store, v, query.Query(search="hello"))
    assert hello.positions.tolist() == [0, 5, 10, 15, 20, 25, 30, 35]
    # quote and % are text, not SQL or a LIKE pattern
    assert query.select(store, v, query.Query(search="IT'S 50%")).positions.tolist() == [13]
    assert query.select(store, v, query.Query(search="50_")).count == 0


def test_filter_sort_and_page_across_segments_and_a_filtered_parent(store, tmp_path, small_segments):
    v = import_source(store, str(write_jsonl(tmp_path / "d.jsonl", _rows())), "d")
    child = store.filter(v.id, "length(output) % 2 = 0", "d")  # bitmaps over every segment
    assert child.records == 20
    q = query.Query(where="length(output) > 10", sort="length(output)", descending=True)
    sel = query.select(store, child, q)
    assert sel.count == 15
    rows = query.page(store, sel, 1, 4)
    assert [len(o) for o in rows["output"]] == [32, 30, 28, 26]
    # positions are the child's: each row is the child's row at that position
    direct = store.read(child)
    for pos, rid in zip(rows["_pos"].to_list(), rows["id"].to_list()):
        assert direct["id"][pos] == rid
    assert query.rows_at(store, child, [19, 0, 7])["_pos"].to_list() == [19, 0, 7]


def test_bad_condition_and_unknown_column_name_the_problem(store, tmp_path):
    v = import_source(store, str(write_jsonl(tmp_path / "d.jsonl", _rows(5))), "d")
    with pytest.raises(AssayError, match="unknown column nope"):
        query.select(store, v, query.Query(where="nope > 1"))
    with pytest.raises(AssayError, match="invalid filter"):
        query.select(store, v, query.Query(where="length(output) >"))
    with pytest.raises(AssayError, match="out of range"):
        query.rows_at(store, v, [5])


def test_audit_columns_filter_and_save_records_the_condition(store, tmp_path, cli, small_segments):
    rows = _rows(20) + [_rows(20)[3], _rows(20)[4]]  # two exact duplicates at the end
    v = import_source(store, str(write_jsonl(tmp_path / "d.jsonl", rows)), "d")
    run_audit(store, v.id, [ExactDuplicates()])
    assert "exact_duplicate" in query.columns(store, v)
    q = query.Query(search="count", flags={"exact_duplicate": False},
                    lengths={"output": (3, None)})
    sel = query.select(store, v, q)
    expected = [i for i in range(20) if i % 5 and i >= 2]
    assert sel.positions.tolist() == expected
    page = query.page(store, sel, 0, 50)
    assert page["exact_duplicate"].to_list() == [False] * len(expected)
    saved = query.save(store, v, q, "d-clean")
    assert saved.records == len(expected) and saved.parents == [v.id]
    assert saved.params["where"] == q.condition() and "ILIKE '%count%'" in saved.params["where"]
    # the CLI reproduces the saved version from its recorded condition
    again = cli.json("filter", v.id, "--where", saved.params["where"], "--name", "d-cli")
    assert again["records"] == saved.records
    assert store.resolve("d-cli").content_hash == saved.content_hash
    with pytest.raises(AssayError, match="nothing to save"):
        query.save(store, v, query.Query())


def test_record_view_has_provenance_cluster_and_benchmark_evidence(store, tmp_path):
    import gzip

    problems = [json.loads(line) for line in gzip.open(humaneval_path(), "rt")][:3]
    rows = [{"instruction": p["prompt"], "output": p["canonical_solution"]} for p in problems]
    rows += [{"instruction": "Write a haiku about rain.", "output": "Soft rain on the roof"}] * 2
    v = imported_version(store, "r", rows)
    run_audit(store, v.id, [ExactDuplicates(),
                            Contamination(ContaminationConfig(benchmarks=["human-eval"], semantic=False))])
    rec = query.record(store, v, 0)
    assert rec["provenance"]["generator"] == "import" and rec["provenance"]["source_row"] == 1
    assert rec["audit"]["contamination_flagged"] is True
    ev = rec["contamination"]
    assert ev is not None and ev["item"][0] == problems[0]["task_id"]
    assert problems[0]["prompt"].strip()[:40] in ev["benchmark_text"][0]
    dup = query.record(store, v, 4)
    assert dup["audit"]["exact_duplicate"] is True and dup["contamination"] is None
    members = dup["clusters"]["exact"]
    assert members["_pos"].to_list() == [3] and members["cluster_size"][0] == 2


def test_distinct_values_most_frequent_first(store, tmp_path):
    rows = [{"instruction": f"q{i}", "output": "a", "origin": "x" if i < 3 else "y"} for i in range(5)]
    v = import_source(store, str(write_jsonl(tmp_path / "d.jsonl", rows)), "d")
    assert query.distinct(store, v, "generator") == ["import"]
    assert np.array_equal(query.select(store, v, query.Query(values={"generator": ["import"]})).positions,
                          np.arange(5))


def test_columns_kept_in_the_process_never_leak_between_a_parent_and_its_child(store, tmp_path, small_segments):
    v = import_source(store, str(write_jsonl(tmp_path / "d.jsonl", _rows())), "d")
    child = store.filter(v.id, "length(output) % 2 = 0", "d")  # the same segments, other rows
    q = query.Query(where="length(output) > 10")
    assert query.select(store, v, q).count == 30  # reads `output` of the parent's parts into the cache
    sel = query.select(store, child, q)
    assert sel.count == 15
    kept = query.page(store, sel, 0, 50)["output"].to_list()
    assert kept == [o for o in store.read(child)["output"].to_list() if len(o) > 10]
    # a cache too small for any column still answers (it only keeps nothing)
    tiny = query.ColumnCache(0)
    assert tiny.get(("k",), lambda: store.read(v)["output"]).len() == 40 and not tiny.items
