"""The streaming import (pipelines/columnar.py): a file read in batches gives the same records as the
row path, writes segments before it reaches the file's end, and still commits nothing on a bad row."""

import json
from pathlib import Path

import pytest
from helpers import write_jsonl

from assay.core.errors import AssayError, BadInput
from assay.pipelines.importer import ImportConfig, import_source

COLUMNS = ["id", "instruction", "input", "output", "messages", "source", "source_row", "generator",
           "template", "model", "sampling_params", "parent_ids"]
TINY = 4 / 1024  # MB: a 4 KB chunk is a few dozen lines, so a file of a few hundred is many batches


def mixed_rows(n: int) -> list:
    """Rows that need every path of the importer: plain Alpaca rows (columnar), chat rows (with and
    without the other layout's columns as nulls), a null input, unicode and escapes, numbers as text,
    metadata of several types."""
    rows = []
    for i in range(n):
        kind = i % 50
        if kind == 17:
            rows.append({"messages": [{"role": "user", "content": f"hi {i}"}, {"role": "assistant", "content": "yo"}]})
        elif kind == 31:
            rows.append({"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": f"q {i}"}],
                         "instruction": None, "output": None})
        elif kind == 40:
            rows.append({"instruction": f"task {i}", "input": None, "output": "x"})
        else:
            rows.append({"instruction": f"tâche {i} \"q\" \\ 🙂", "input": "" if i % 3 else f"in\n{i}",
                         "output": 7 if i % 11 == 0 else f"out {i}", "k": i, "flag": i % 2 == 0})
    return rows


def read(store, manifest):
    return store.read(manifest).select(COLUMNS + ["metadata"])


def assert_same(a, b):
    assert a.select(COLUMNS).equals(b.select(COLUMNS))
    assert [json.loads(m) for m in a["metadata"]] == [json.loads(m) for m in b["metadata"]]


def test_a_file_of_many_batches_gives_the_row_paths_records(store, tmp_path):
    path = write_jsonl(tmp_path / "mixed.jsonl", mixed_rows(2000))
    assert path.stat().st_size > 20 * TINY * (1 << 20)  # many batches
    streamed = read(store, import_source(store, str(path), "s", ImportConfig(chunk_mb=TINY)))
    rows = read(store, import_source(store, str(path), "r", ImportConfig(fast_path=False)))
    whole = read(store, import_source(store, str(path), "w"))
    assert streamed.height == 2000
    assert_same(streamed, rows)
    assert_same(whole, rows)


def test_blank_lines_and_a_line_longer_than_a_chunk_keep_their_numbers(store, tmp_path):
    path = tmp_path / "b.jsonl"
    long = json.dumps({"instruction": "L" * 10_000, "output": "o"})
    lines = [json.dumps({"instruction": f"a{i}", "output": "b"}) for i in range(300)]
    lines[100] = ""
    lines[200] = long
    path.write_text("\n".join(lines) + "\n")
    frame = store.read(import_source(store, str(path), "b", ImportConfig(chunk_mb=TINY)))
    assert frame.height == 299
    assert frame["source_row"].to_list() == [n for n in range(1, 301) if n != 101]
    assert frame.filter(frame["source_row"] == 201)["instruction"].item() == "L" * 10_000


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_csv_and_parquet_in_batches_match_the_row_path(store, tmp_path, fmt):
    import polars as pl

    rows = [{"instruction": f"t{i}", "input": "" if i % 2 else "x", "output": f"o{i}", "n": str(i)}
            for i in range(3000)]
    path = tmp_path / f"d.{fmt}"
    getattr(pl.DataFrame(rows), f"write_{fmt}")(path)
    streamed = read(store, import_source(store, str(path), "s", ImportConfig(chunk_mb=TINY)))
    slow = read(store, import_source(store, str(path), "r", ImportConfig(fast_path=False)))
    assert streamed.height == 3000
    assert_same(streamed, slow)


def test_a_bad_row_late_in_the_file_commits_nothing_after_segments_were_written(store, tmp_path, monkeypatch):
    import assay.core.store as store_module

    monkeypatch.setattr(store_module, "SEGMENT_ROWS", 100)  # a segment every 100 records
    # past the importer's first 1000 rows (its layout sample, read before any batch)
    lines = [json.dumps({"instruction": f"t{i}", "output": "o"}) for i in range(2000)]
    lines[1799] = '{"instruction": "broken", "output": '
    path = tmp_path / "late.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(BadInput) as err:
        import_source(store, str(path), "late", ImportConfig(chunk_mb=TINY))
    assert str(err.value).endswith("late.jsonl:1800: not valid JSON (Expecting value at column 37)")
    segments = list((Path(store.root) / "objects" / "segments").glob("*.parquet"))
    # the rows before line 1800 were written as they streamed (at least the first 1000; how many more
    # depends on which of the two batches parsed at once hit the bad line first)...
    assert len(segments) >= 10
    assert store.versions() == []  # ...and none of them is visible
    with pytest.raises(BadInput) as row_path:
        import_source(store, str(path), "late", ImportConfig(fast_path=False))
    assert str(row_path.value) == str(err.value)


def test_a_memory_cap_that_cannot_be_met_fails_clearly_and_commits_nothing(store, tmp_path):
    path = write_jsonl(tmp_path / "m.jsonl", mixed_rows(400))
    with pytest.raises(AssayError, match="over max_memory_mb=50; lower chunk_mb"):
        import_source(store, str(path), "m", ImportConfig(chunk_mb=32, max_memory_mb=50))  # the estimate says no
    with pytest.raises(AssayError, match="MB in use, over max_memory_mb=1"):
        import_source(store, str(path), "m", ImportConfig(chunk_mb=TINY, max_memory_mb=1))  # the process is bigger
    assert store.versions() == []


def test_the_chunk_size_does_not_change_the_version_content(store, tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", mixed_rows(500))
    small = import_source(store, str(path), "a", ImportConfig(chunk_mb=TINY))
    large = import_source(store, str(path), "b")
    assert small.content_hash == large.content_hash and small.records == large.records == 500
