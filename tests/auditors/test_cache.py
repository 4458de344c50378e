"""The record cache across versions: a filtered child is audited from its parent's cached results
(found by segment row, no recomputation) and gets exactly the columns a cold audit of the same rows
in a fresh workspace gets, clusters included; records stored in another segment are found by id."""

import random

import polars as pl
from auditor_helpers import codealpaca
from helpers import imported_version, write_jsonl
from polars.testing import assert_frame_equal

from assay.auditors.runner import make_auditor, run_audit
from assay.core.audits import audit_columns, filter_version
from assay.core.store import Store
from assay.pipelines.exporter import export_version
from assay.pipelines.importer import import_source

AUDITORS = ["exact", "minhash", "quality"]


def edited(row: dict, k: int, rng: random.Random) -> dict:
    """A near-copy: k words of the output replaced, so its Jaccard lands around the threshold."""
    words = row["output"].split(" ")
    for _ in range(k):
        words[rng.randrange(len(words))] = "qz" + "".join(rng.choice("bcdfgjkvwx") for _ in range(5))
    return {**row, "output": " ".join(words)}


def audit(store: Store, ref: str) -> tuple[dict, pl.DataFrame]:
    summary = run_audit(store, ref, [make_auditor(n) for n in AUDITORS])["auditors"]
    return summary, audit_columns(store, ref).drop("_pos")


def test_filtered_child_reuses_everything_and_matches_a_cold_audit(tmp_path, shared_data):
    rng = random.Random(5)
    rows = codealpaca(shared_data, 1500)
    long_rows = [r for r in rows if len(r["output"].split(" ")) >= 40]
    # chains of near-copies (1 to 4 edits: some above the 0.8 threshold, some below) and exact copies
    planted = [edited(r, 1 + k % 4, rng) for k, r in enumerate(rng.sample(long_rows, 120))]
    planted += [dict(r) for r in rng.sample(rows, 30)]
    store = Store(tmp_path / "ws")
    parent = import_source(store, str(write_jsonl(tmp_path / "p.jsonl", rows + planted)), "p")
    first, parent_cols = audit(store, parent.id)
    assert first["minhash"]["duplicate_records"] >= 60 and first["exact"]["duplicate_records"] >= 30

    # drop 10% of the rows, among them the representatives of some clusters, so the child's
    # clusters have other representatives (and some of its pairs other members) than the parent's
    child = filter_version(store, parent.id, "source_row % 10 <> 0 AND NOT (minhash_cluster_size > 1 AND NOT "
                                             "minhash_duplicate AND source_row % 3 = 0)", "p")
    assert 0.85 * parent.records < child.records < 0.9 * parent.records
    warm, warm_cols = audit(store, child.id)
    assert warm["minhash"]["signatures_computed"] == 0 and warm["minhash"]["signatures_reused"] == child.records
    assert warm["quality"]["cache"]["misses"] == 0

    # the same rows audited cold: exported, imported into a fresh workspace, audited there
    export_version(store, child.id, str(tmp_path / "child.jsonl"))
    fresh = Store(tmp_path / "fresh")
    copy = import_source(fresh, str(tmp_path / "child.jsonl"), "c")
    cold, cold_cols = audit(fresh, copy.id)
    assert cold["minhash"]["signatures_computed"] > 0
    assert_frame_equal(warm_cols, cold_cols)
    for name in AUDITORS:
        for key in ("duplicate_records", "clusters", "flagged_records", "candidate_pairs", "accepted_pairs"):
            assert warm[name].get(key) == cold[name].get(key), (name, key)
    # and the clusters really changed: restricting the parent's flags to the kept rows would not give
    # the child's (a dropped representative hands its cluster to a former duplicate)
    kept = store.read(parent, ["source_row"])["source_row"].is_in(
        store.read(child, ["source_row"])["source_row"].implode())
    restricted = parent_cols.filter(kept)
    assert (restricted["minhash_duplicate"] != warm_cols["minhash_duplicate"]).any()
    assert (restricted["exact_duplicate"] != warm_cols["exact_duplicate"]).any()


def test_records_in_another_segment_are_found_by_id(tmp_path, shared_data):
    rows = codealpaca(shared_data, 600)
    store = Store(tmp_path / "ws")
    a = imported_version(store, "a", rows)
    audit(store, a.id)
    # the same records in another order: new segments, same record ids
    b = imported_version(store, "b", rows[::-1])
    assert {p.segment for p in b.parts}.isdisjoint({p.segment for p in a.parts})
    summary, cols = audit(store, b.id)
    assert summary["minhash"]["signatures_computed"] == 0 and summary["minhash"]["signatures_reused"] == 600
    assert summary["quality"]["cache"]["misses"] == 0
    # found by id once, then kept under b's segments: the next audit reads them by segment row
    again, cols_again = audit(store, b.id)
    assert again["minhash"]["signatures_computed"] == 0
    assert_frame_equal(cols, cols_again)


def test_a_parent_audited_after_its_child_computes_only_the_rest(tmp_path, shared_data):
    rows = codealpaca(shared_data, 900)
    rows += [dict(r) for r in rows[:40]]  # exact copies, so the cache sees one record in two rows
    source = write_jsonl(tmp_path / "p.jsonl", rows)
    store = Store(tmp_path / "ws")
    parent = import_source(store, str(source), "p")
    child = filter_version(store, parent.id, "source_row % 3 <> 0 AND source_row <= 900", "p")  # no copies
    audit(store, child.id)
    # the parent's segment rows are partly cached (the child's), partly not: found and computed
    # rows are put back in version order
    summary, cols = audit(store, parent.id)
    new_records = set(store.ids(parent).to_list()) - set(store.ids(child).to_list())
    assert 0 < summary["minhash"]["signatures_computed"] == len(new_records) < parent.records - child.records
    # the child's rows by segment row, plus the dropped copies of records the child keeps, by id
    assert summary["minhash"]["signatures_reused"] > child.records
    fresh = Store(tmp_path / "fresh")
    _, cold_cols = audit(fresh, import_source(fresh, str(source), "p").id)
    assert_frame_equal(cols, cold_cols)


def test_a_fully_cached_audit_reads_no_text(tmp_path, shared_data, monkeypatch):
    """A re-audit whose every result is cached reads only record ids (texts are most of a version's
    bytes); a part with one uncached record reads its texts again."""
    import assay.auditors.runner as runner

    store = Store(tmp_path / "ws")
    rows = codealpaca(shared_data)[:600]
    parent = imported_version(store, "p", rows)
    first_summary, first_columns = audit(store, parent.id)
    text_reads = []
    real_with_text = runner.with_text
    monkeypatch.setattr(runner, "with_text", lambda frame: text_reads.append(frame.height) or real_with_text(frame))
    again_summary, again_columns = audit(store, parent.id)
    assert text_reads == []
    assert_frame_equal(again_columns, first_columns)
    assert again_summary["minhash"]["signatures_reused"] == 600
    grown = imported_version(store, "g", rows + [{**rows[0], "output": "a new answer"}])
    audit(store, grown.id)
    assert sum(text_reads) >= 1  # the new record's part was read with its texts
