"""The columnar fast path and the row path must give identical versions."""

import json

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import write_jsonl

from assay.pipelines.importer import ImportConfig, import_source

COLUMNS = ["id", "instruction", "input", "output", "messages", "source", "source_row", "generator",
           "template", "model", "sampling_params", "parent_ids"]


def both(store, path, **kw):
    fast = store.read(import_source(store, str(path), "fast", ImportConfig(**kw)))
    slow = store.read(import_source(store, str(path), "slow", ImportConfig(fast_path=False, **kw)))
    return fast, slow


def assert_same(fast: pl.DataFrame, slow: pl.DataFrame):
    assert fast.select(COLUMNS).equals(slow.select(COLUMNS))
    assert [json.loads(m) for m in fast["metadata"]] == [json.loads(m) for m in slow["metadata"]]


def test_real_data_same_rows_both_ways(store, shared_data, tmp_path):
    gsm = shared_data / "benchmarks/gsm8k_test.jsonl"
    assert_same(*both(store, gsm))
    code = json.loads((shared_data / "instructions/codealpaca_new.json").read_text())
    jsonl = write_jsonl(tmp_path / "code.jsonl", code)
    assert_same(*both(store, jsonl))
    pq.write_table(pa.Table.from_pylist(code), tmp_path / "code.parquet")
    assert_same(*both(store, tmp_path / "code.parquet"))
    pl.DataFrame(code).write_csv(tmp_path / "code.csv")
    assert_same(*both(store, tmp_path / "code.csv"))


@pytest.mark.parametrize("rows", [
    [{"instruction": "a", "output": "b", "k": 1}, {"instruction": "c", "output": "d"}],  # a missing key stays missing
    [{"instruction": "a", "output": "b"}, {"instruction": "c", "input": None, "output": "d"}],
    [{"instruction": "ünï\u2028cödé 🙂", "input": "", "output": "\\n\"q\""},
     {"instruction": "x", "output": "y", "m": [1, {"z": None}]}],
])
def test_edge_rows_same_both_ways(store, tmp_path, rows):
    assert_same(*both(store, write_jsonl(tmp_path / "e.jsonl", rows)))


def test_blank_lines_keep_line_numbers(store, tmp_path):
    path = tmp_path / "b.jsonl"
    path.write_text('{"instruction": "a", "output": "b"}\n\n{"instruction": "c", "output": "d"}\n')
    fast, slow = both(store, path)
    assert fast["source_row"].to_list() == [1, 3]
    assert_same(fast, slow)


def test_columnar_ids_equal_record_id_for_any_text(tmp_path):
    """The vectorised JSON escaping behind the fast path's ids, against records.record_id."""
    import tempfile
    from pathlib import Path

    from hypothesis import given, settings
    from hypothesis import strategies as st

    from assay.core.records import record_id
    from assay.core.store import Store

    text = st.text(st.characters(codec="utf-8"), max_size=30)

    @settings(max_examples=25, deadline=None)
    @given(st.lists(st.tuples(text, text, text), min_size=1, max_size=20))
    def check(triples):
        with tempfile.TemporaryDirectory() as tmp:
            rows = [{"instruction": i, "input": x, "output": o} for i, x, o in triples]
            path = write_jsonl(Path(tmp) / "t.jsonl", rows)
            store = Store(Path(tmp) / "ws")
            got = store.read(import_source(store, str(path), "t"))["id"].to_list()
            assert got == [record_id(i, x, o, None) for i, x, o in triples]

    check()
