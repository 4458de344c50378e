import json

import pytest
from helpers import imported_version, write_jsonl

from assay.auditors.exact import ExactConfig, ExactDuplicates
from assay.auditors.runner import run_audit
from assay.core.audits import audit_columns, filter_version
from assay.pipelines.importer import import_source


def test_planted_duplicates_in_real_data_are_found(store, shared_data, tmp_path):
    rows = [json.loads(line) for line in (shared_data / "benchmarks/gsm8k_test.jsonl").read_text().splitlines()][:300]
    planted = [dict(rows[3]), dict(rows[10]), dict(rows[10])]
    planted[0]["question"] = "  " + rows[3]["question"].upper() + " "  # case and whitespace
    planted[1]["question"] = rows[10]["question"].replace(".", " .").replace("?", "")  # punctuation
    version = imported_version(store, "g", rows + planted)
    result = run_audit(store, version.id, [ExactDuplicates()])
    summary = result["auditors"]["exact"]
    assert summary["duplicate_records"] == 3
    cols = audit_columns(store, version)
    dups = cols.filter(cols["exact_duplicate"])
    assert dups["_pos"].to_list() == [300, 301, 302]
    assert dups["exact_cluster"].to_list() == [3, 10, 10]  # the first occurrence is the representative


def test_normalisation_is_configurable(store, tmp_path):
    rows = [{"instruction": "Hello, World", "output": "x"}, {"instruction": "hello world", "output": "x"}]
    version = import_source(store, str(write_jsonl(tmp_path / "a.jsonl", rows)), "a")
    strict = ExactDuplicates(ExactConfig(lowercase=False, strip_punctuation=False))
    assert run_audit(store, version.id, [strict])["auditors"]["exact"]["duplicate_records"] == 0
    assert run_audit(store, version.id, [ExactDuplicates()])["auditors"]["exact"]["duplicate_records"] == 1


def test_filter_on_audit_columns_drops_duplicates_and_keeps_content_hash(store, tmp_path):
    rows = [{"instruction": f"q{i % 7}", "output": "a"} for i in range(30)]
    version = import_source(store, str(write_jsonl(tmp_path / "a.jsonl", rows)), "a")
    run_audit(store, version.id, [ExactDuplicates()])
    assert store.resolve(version.id).content_hash == version.content_hash  # auditing changes nothing
    child = filter_version(store, version.id, "NOT exact_duplicate", "a")
    kept = store.read(child)
    assert kept.height == 7 and kept["instruction"].to_list() == [f"q{i}" for i in range(7)]
    # the same record twice in one version: only the second row is dropped
    assert kept["id"].n_unique() == 7


def test_empty_version_is_refused(store, tmp_path):
    from assay.core.errors import AssayError

    version = import_source(store, str(write_jsonl(tmp_path / "a.jsonl", [{"instruction": "x", "output": "y"}])), "a")
    empty = store.filter(version.id, "instruction = 'nope'", "a")
    with pytest.raises(AssayError, match="empty: nothing to audit"):
        run_audit(store, empty.id, [ExactDuplicates()])
