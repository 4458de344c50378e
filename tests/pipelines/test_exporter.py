import json

import pytest
from helpers import write_jsonl

from assay.core.errors import AssayError
from assay.pipelines.exporter import ExportConfig, export_version
from assay.pipelines.importer import import_source

ROWS = [
    {"instruction": "Add.", "input": "2, 3", "output": "5", "topic": "math"},
    {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}], "topic": "chat"},
]


@pytest.fixture
def version(store, tmp_path):
    return import_source(store, str(write_jsonl(tmp_path / "in.jsonl", ROWS)), "mixed")


def test_jsonl_and_json_give_back_the_source_rows(store, version, tmp_path):
    export_version(store, version.id, str(tmp_path / "out.jsonl"))
    assert [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()] == ROWS
    export_version(store, version.id, str(tmp_path / "out.json"))
    assert json.loads((tmp_path / "out.json").read_text()) == ROWS


@pytest.mark.parametrize("name", ["out.parquet", "out_hf", "out.jsonl.gz"])
def test_other_formats_reimport_to_the_same_records(store, version, tmp_path, name):
    result = export_version(store, version.id, str(tmp_path / name))
    assert result["records"] == 2
    again = import_source(store, str(tmp_path / name), "again")
    assert store.read(again)["id"].to_list() == store.read(version)["id"].to_list()
    assert [json.loads(m) for m in store.read(again)["metadata"]] == [{"topic": "math"}, {"topic": "chat"}]


def test_hf_disk_export_is_a_loadable_dataset(store, version, tmp_path):
    import datasets

    export_version(store, version.id, str(tmp_path / "ds"))
    ds = datasets.load_from_disk(str(tmp_path / "ds"))
    assert ds.num_rows == 2 and ds[0]["instruction"] == "Add." and ds[1]["messages"][1]["content"] == "Hello!"


def test_provenance_columns_on_request(store, version, tmp_path):
    export_version(store, version.id, str(tmp_path / "p.jsonl"), ExportConfig(provenance=True))
    first = json.loads((tmp_path / "p.jsonl").read_text().splitlines()[0])
    assert first["_id"] == store.read(version)["id"][0]
    assert first["_provenance"]["source"].endswith("in.jsonl") and first["_provenance"]["source_row"] == 1


def test_failed_export_leaves_no_file(store, tmp_path):
    rows = [{"instruction": "a", "output": "b", "meta": 1}, {"instruction": "c", "output": "d", "meta": {"x": [1]}}]
    v = import_source(store, str(write_jsonl(tmp_path / "in.jsonl", rows)), "m")
    (tmp_path / "out").mkdir()
    with pytest.raises(AssayError, match="mix types.*JSONL"):
        export_version(store, v.id, str(tmp_path / "out" / "out.parquet"))
    assert list((tmp_path / "out").iterdir()) == []
    with pytest.raises(AssayError, match="cannot tell the export format"):
        export_version(store, v.id, str(tmp_path / "out.xlsx"))
    with pytest.raises(AssayError, match="unknown version"):
        export_version(store, "nope", str(tmp_path / "out.jsonl"))


def test_push_without_the_hub_is_a_clear_error(store, version, hub_offline):
    with pytest.raises(AssayError, match="hf:assay-test/x: cannot push to the Hugging Face Hub"):
        export_version(store, version.id, "hf:assay-test/x")


@pytest.mark.parametrize("name", ["out.parquet", "out_hf"])
def test_an_export_in_many_batches_holds_every_batchs_columns(store, tmp_path, monkeypatch, name):
    import assay.pipelines.exporter as exporter

    monkeypatch.setattr(exporter, "EXPORT_BATCH_ROWS", 7)  # a metadata key that appears only in a later batch
    rows = [{"instruction": f"t{i}", "input": "", "output": "o", **({"late": i} if i >= 40 else {})} for i in range(50)]
    rows[45] = {"messages": [{"role": "user", "content": "hi"}]}
    v = import_source(store, str(write_jsonl(tmp_path / "b.jsonl", rows)), "b")
    export_version(store, v.id, str(tmp_path / name))
    again = store.read(import_source(store, str(tmp_path / name), "again"))
    assert again["id"].to_list() == store.read(v)["id"].to_list()
    meta = [json.loads(m) for m in again["metadata"]]
    # a table has the column in every row: where a row had no such key it comes back as null
    assert meta[:40] == [{"late": None}] * 40 and meta[41] == {"late": 41}
