import json

import numpy as np
import polars as pl
import pytest
from helpers import written_version

from assay.core import store as store_mod
from assay.core.errors import AssayError, UnknownVersion
from assay.core.records import Record
from assay.core.store import VersionWriter


def make_version(store, name, n, start=0, **kw):
    rows = [{"instruction": f"task {i}", "output": "x" * (i % 7), "metadata": {"i": i}}
            for i in range(start, start + n)]
    return written_version(store, name, rows, {"synthetic": n}, **kw)


def test_manifest_has_the_promised_fields(store):
    m = make_version(store, "ds", 10)
    data = json.loads((store.manifest_path(m.id) and open(store.manifest_path(m.id)).read()))
    for key in ("dataset", "parents", "operation", "params", "code_version", "created_at", "records", "content_hash"):
        assert key in data
    assert data["records"] == 10 and data["dataset"] == "ds" and data["number"] == 1
    assert m.body_hash() == m.id


def test_references_by_id_prefix_name_and_number(store):
    v1 = make_version(store, "ds", 3)
    v2 = make_version(store, "ds", 4)
    assert store.resolve("ds").id == v2.id
    assert store.resolve("ds@1").id == v1.id
    assert store.resolve(v1.id).id == v1.id
    assert store.resolve(v1.id[:8]).id == v1.id
    with pytest.raises(UnknownVersion, match="ds@3"):
        store.resolve("ds@3")
    with pytest.raises(UnknownVersion, match="nope"):
        store.resolve("nope")


def test_ambiguous_prefix_is_refused(store, monkeypatch):
    versions = [make_version(store, f"d{i}", 1, start=i) for i in range(40)]
    # with 40 random hex ids, some pair shares its first character
    firsts = [v.id[0] for v in versions]
    shared = next(c for c in firsts if firsts.count(c) > 1)
    # a 1-character prefix is too short to be taken as an id prefix at all
    with pytest.raises(UnknownVersion):
        store.resolve(shared)
    two = [v.id for v in versions if v.id[0] == shared]
    common = 0
    while two[0][common] == two[1][common]:
        common += 1
    if common >= 4:
        with pytest.raises(UnknownVersion, match="ambiguous"):
            store.resolve(two[0][:common])


def test_filter_child_keeps_a_bitmap_not_a_copy(store, workspace):
    parent = make_version(store, "ds", 1000)
    segments_before = set((workspace / "objects" / "segments").iterdir())
    child = store.filter(parent.ref, "length(output) > 3", "ds")
    assert set((workspace / "objects" / "segments").iterdir()) == segments_before
    assert child.parents == [parent.id] and child.operation == "filter"
    assert child.params["where"] == "length(output) > 3"
    got = store.read(child)
    want = store.read(parent).filter(pl.col("output").str.len_chars() > 3)
    assert got["id"].to_list() == want["id"].to_list()
    assert child.records == want.height and 0 < child.records < 1000
    # the parent is untouched
    assert store.read(parent).height == 1000 and store.resolve(parent.id).content_hash == parent.content_hash


def test_filter_of_a_filter_composes(store):
    parent = make_version(store, "ds", 500)
    a = store.filter(parent.id, "length(output) > 2", "ds")
    b = store.filter(a.id, "instruction LIKE '%1%'", "ds")
    want = store.read(parent).filter((pl.col("output").str.len_chars() > 2) & pl.col("instruction").str.contains("1"))
    assert store.read(b)["id"].to_list() == want["id"].to_list()
    assert [x["ref"] for x in store.lineage(b.id)] == ["ds@3", "ds@2", "ds@1"]


def test_filter_keeping_everything_writes_no_selection(store, workspace):
    parent = make_version(store, "ds", 50)
    child = store.filter(parent.id, "length(instruction) > 0")
    assert all(p.selection is None for p in child.parts)
    assert child.content_hash == parent.content_hash


def test_bad_where_is_a_clear_error(store):
    parent = make_version(store, "ds", 5)
    with pytest.raises(AssayError, match="invalid --where"):
        store.filter(parent.id, "length(output >", "x")
    with pytest.raises(AssayError, match="columns are: .*instruction"):
        store.filter(parent.id, "no_such_column = 1", "x")
    assert [v["dataset"] for v in store.versions()] == ["ds"]


def test_filter_can_use_extra_columns(store):
    parent = make_version(store, "ds", 20)
    ids = store.read(parent)["id"]
    audit = pl.DataFrame({"id": ids, "score": np.arange(20)})
    child = store.filter(parent.id, "score >= 15", "ds", extra=audit)
    assert child.records == 5


def test_page_matches_read_across_segments_and_selections(store, monkeypatch):
    monkeypatch.setattr(store_mod, "SEGMENT_ROWS", 300)
    monkeypatch.setattr(store_mod, "ROW_GROUP_ROWS", 64)
    parent = make_version(store, "ds", 1000)
    assert len(parent.parts) == 4
    child = store.filter(parent.id, "length(output) != 3", "ds")
    for version in (parent, child):
        whole = store.read(version)
        for page in (0, 3, 7, version.records // 50):
            got = store.page(version, page, 50)
            assert got["id"].to_list() == whole["id"].slice(page * 50, 50).to_list()
    assert store.page(child, 10_000, 50).height == 0


def test_diff_counts_added_removed_unchanged(store):
    a = make_version(store, "ds", 100)
    b = make_version(store, "ds", 100, start=60)
    d = store.diff(a.id, b.id, sample=3)
    assert (d["added"], d["removed"], d["unchanged"]) == (60, 60, 40)
    assert len(d["added_records"]) == 3
    assert all(int(r["instruction"].split()[1]) >= 100 for r in d["added_records"])


def test_verify_reports_corruption(store, workspace):
    m = make_version(store, "ds", 100)
    child = store.filter(m.id, "length(output) > 3")
    assert store.verify()["ok"]
    seg = workspace / "objects" / "segments" / f"{m.parts[0].segment}.parquet"
    data = bytearray(seg.read_bytes())
    data[len(data) // 2] ^= 0xFF
    seg.write_bytes(bytes(data))
    report = store.verify()
    assert not report["ok"] and any(m.parts[0].segment in p for p in report["problems"])
    sel = workspace / "objects" / "selections" / f"{child.parts[0].selection}.bits"
    sel.unlink()
    assert any("missing" in p for p in store.verify()["problems"])


def test_verify_reports_an_edited_manifest(store):
    m = make_version(store, "ds", 10)
    path = store.manifest_path(m.id)
    text = open(path).read().replace('"records": 10', '"records": 11')
    open(path, "w").write(text)
    report = store.verify()
    assert not report["ok"] and "does not match its id" in report["problems"][0]


def test_a_failed_writer_commits_nothing(store):
    from assay.core.records import rows_to_table

    with pytest.raises(RuntimeError):
        with VersionWriter(store, "ds", "import", {}) as w:
            w.add_table(rows_to_table([Record(instruction="a").to_row()]))
            raise RuntimeError("boom")
    assert store.versions() == []


def test_dataset_names_are_checked(store):
    with pytest.raises(AssayError, match="invalid dataset name"):
        make_version(store, "bad name/..", 1)
