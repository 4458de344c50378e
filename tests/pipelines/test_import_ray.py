"""`assay import --engine ray` (pipelines/import_ray.py) on a real local Ray cluster: the same records
as the local import, line numbers of the whole file, the first bad line reported and nothing
committed, Parquet by row groups, and the sources Ray cannot split."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray
from auditor_helpers import codealpaca
from helpers import write_jsonl
from polars.testing import assert_frame_equal

from assay.core.errors import AssayError, BadInput
from assay.core.store import Store
from assay.pipelines.import_ray import _line_count, _range_bytes
from assay.pipelines.importer import ImportConfig, import_source

CHUNK_MB = 0.05  # 50 KB batches, 200 KB ranges: a 2 MB file is cut into 10 pieces, mid-line


@pytest.fixture(scope="module")
def local_cluster(s3_server):
    """After the S3 server: the workers inherit its AWS variables when the cluster starts."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def mixed_rows(shared_data, n: int = 4500) -> list:
    """CodeAlpaca rows, with chat rows and non-ASCII text among them (the row path's batches)."""
    rows = codealpaca(shared_data, n)
    for k in range(0, n, 700):
        rows[k] = {"messages": [{"role": "user", "content": f"Übersetze {k} ins Deutsche — bitte"},
                                {"role": "assistant", "content": "Gern: 翻译"}]}
    return rows


def both(store_dir, path, **options):
    """The version imported by each engine (two workspaces), read back whole."""
    local, on_ray = Store(store_dir / "local"), Store(store_dir / "ray")
    a = import_source(local, str(path), "d", ImportConfig(chunk_mb=CHUNK_MB, engine="local", **options))
    b = import_source(on_ray, str(path), "d", ImportConfig(chunk_mb=CHUNK_MB, engine="ray", **options))
    return (local, a), (on_ray, b)


def test_ranges_own_each_line_once_wherever_the_cuts_fall(tmp_path):
    lines = [b'{"a": 1}', b"", b'{"a": "' + b"x" * 40 + b'"}', b'{"a": 3}', b"  ", b'{"a": "\xc3\xbc"}']
    for ending in (b"\n", b""):  # with and without a line end after the last line
        path = tmp_path / "f.jsonl"
        data = b"\n".join(lines) + ending
        path.write_bytes(data)
        for step in (1, 2, 3, 7, 10, 64):
            pieces = [_range_bytes(str(path), a, min(a + step, len(data))) for a in range(0, len(data), step)]
            assert b"".join(pieces) == data, step
            assert sum(_line_count(p) for p in pieces) == len(lines), step


def test_ray_import_gives_the_local_records_and_line_numbers(local_cluster, shared_data, tmp_path, monkeypatch):
    path = write_jsonl(tmp_path / "mixed.jsonl", mixed_rows(shared_data))
    assert path.stat().st_size > 8 * CHUNK_MB * (1 << 20) * 4  # many ranges
    (local, a), (on_ray, b) = both(tmp_path, path)
    assert b.records == a.records == 4500
    assert_frame_equal(on_ray.read(b), local.read(a))  # ids, texts, metadata, provenance (line numbers)
    assert on_ray.read(b)["source_row"].to_list() == list(range(1, 4501))


def test_the_driver_writes_no_segment(local_cluster, shared_data, tmp_path, monkeypatch):
    path = write_jsonl(tmp_path / "rows.jsonl", codealpaca(shared_data, 3000))

    def no_segments_here(*args, **kwargs):
        raise AssertionError("the driver wrote a segment")

    monkeypatch.setattr(Store, "put_segment", no_segments_here)  # this process only: workers write
    version = import_source(Store(tmp_path / "ws"), str(path), "d", ImportConfig(chunk_mb=CHUNK_MB, engine="ray"))
    assert version.records == 3000 and len(version.parts) > 1


def test_the_first_bad_line_in_the_file_is_reported_and_nothing_is_committed(local_cluster, shared_data, tmp_path):
    rows = [json.dumps(r) for r in codealpaca(shared_data, 4500)]
    rows[4100] = '{"instruction": "broken", "output": '  # late in the file
    rows[4400] = "not json at all"  # a later bad line, in another range
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    with pytest.raises(BadInput) as local_error:
        import_source(Store(tmp_path / "local"), str(path), "d", ImportConfig(chunk_mb=CHUNK_MB, engine="local"))
    store = Store(tmp_path / "ray")
    with pytest.raises(BadInput) as ray_error:
        import_source(store, str(path), "d", ImportConfig(chunk_mb=CHUNK_MB, engine="ray"))
    assert ray_error.value.line == 4101 and str(ray_error.value) == str(local_error.value)
    assert store.versions() == []  # nothing committed


def test_parquet_is_split_by_row_groups(local_cluster, shared_data, tmp_path):
    rows = codealpaca(shared_data, 4500)
    path = tmp_path / "rows.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=450)  # ten row groups
    (local, a), (on_ray, b) = both(tmp_path, path)
    assert b.records == 4500
    assert_frame_equal(on_ray.read(b), local.read(a))


def test_a_source_ray_cannot_split_is_refused_when_asked_and_imported_here_by_default(local_cluster, tmp_path,
                                                                                      monkeypatch):
    path = tmp_path / "rows.csv"
    path.write_text('instruction,output\n"a\nsecond line",b\n', encoding="utf-8")
    store = Store(tmp_path / "ws")
    with pytest.raises(AssayError, match=r"rows.csv on the ray engine: csv files are not split.*--engine local"):
        import_source(store, str(path), "d", ImportConfig(engine="ray"))
    assert store.versions() == []
    monkeypatch.setenv("ASSAY_ENGINE", "ray")  # a default, not a demand
    version = import_source(store, str(path), "d")
    assert store.read(version)["instruction"].to_list() == ["a\nsecond line"]


def test_the_cli_imports_on_the_cluster_at_an_address(local_cluster, cli, shared_data, tmp_path):
    path = write_jsonl(tmp_path / "rows.jsonl", codealpaca(shared_data, 2000))
    address = ray.get_runtime_context().gcs_address  # this module's cluster, joined by the CLI's process
    result = cli.json("import", str(path), "--name", "code", "--engine", "ray", "--ray-address", address,
                      "--chunk-mb", "0.05")
    assert result["records"] == 2000
    local = cli.json("import", str(path), "--name", "code2")
    assert Store(cli.workspace).read(result["version"]).equals(Store(cli.workspace).read(local["version"]))


def test_a_file_in_object_storage_into_an_s3_workspace(local_cluster, s3_workspace, shared_data, tmp_path):
    """The workers open the source by its s3:// URL and write the segments into the bucket."""
    import fsspec

    rows = codealpaca(shared_data, 3000)
    path = write_jsonl(tmp_path / "rows.jsonl", rows)
    url = s3_workspace.url.rstrip("/") + "-sources/rows.jsonl"
    with fsspec.open(url, "wb") as fh:
        fh.write(path.read_bytes())
    on_s3 = s3_workspace.store()
    version = import_source(on_s3, url, "d", ImportConfig(chunk_mb=CHUNK_MB, engine="ray"))
    local = Store(tmp_path / "local", str(tmp_path / "local.sqlite"))  # not the S3 workspace's ASSAY_CATALOG
    expected = local.read(import_source(local, str(path), "d", ImportConfig(chunk_mb=CHUNK_MB)))
    got = on_s3.read(version)
    assert got["source"].unique().to_list() == [url]
    assert_frame_equal(got.drop("source"), expected.drop("source"))
    assert on_s3.verify()["problems"] == []  # every segment in the bucket, hashes and counts right
