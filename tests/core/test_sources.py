"""core.sources.read_seeds: the one "version, file or hf:" reader every generator starts from."""

from __future__ import annotations

import datasets
import pytest
from helpers import write_jsonl

from assay.core.errors import AssayError, BadInput
from assay.core.records import record_id
from assay.core.sources import is_external, read_seeds
from assay.pipelines.evol_instruct import load_source
from assay.pipelines.importer import import_source
from assay.pipelines.self_instruct import load_seeds

# the column names of GSM8K: the aliases of instruction and output
ROWS = [{"question": "What is 2+2?", "answer": "4", "level": 1},
        {"question": "Name a colour.", "answer": "red", "level": 2},
        {"question": "Say hi.", "answer": "hi", "level": 3}]


def test_a_file_and_its_imported_version_give_the_same_rows_and_ids(store, tmp_path):
    path = write_jsonl(tmp_path / "s.jsonl", ROWS)
    from_file = read_seeds(store, str(path))
    assert (from_file.label, from_file.unit, from_file.parents, from_file.path) == (str(path), "line", [], str(path))
    assert [r.pos for r in from_file.rows] == [1, 2, 3]
    assert [r.fields["instruction"] for r in from_file.rows] == ["What is 2+2?", "Name a colour.", "Say hi."]
    assert from_file.rows[0].fields["level"] == 1 and from_file.rows[0].fields["question"] == "What is 2+2?"
    manifest = import_source(store, str(path), "s")
    from_version = read_seeds(store, "s")
    assert (from_version.label, from_version.parents, from_version.path) == (manifest.ref, [manifest.id], None)
    # the ids a file's rows are given are the ids `assay import` gives their records
    assert [r.record_id for r in from_file.rows] == [r.record_id for r in from_version.rows]
    assert from_version.rows[0].fields["level"] == 1  # metadata comes back as fields
    assert read_seeds(store, str(path), limit=2).rows[-1].pos == 2


def test_a_row_without_an_instruction_has_no_id_and_a_non_object_row_is_named(store, tmp_path):
    got = read_seeds(store, str(write_jsonl(tmp_path / "n.jsonl", [{"text": "x"}])))
    assert got.rows[0].record_id is None
    with pytest.raises(BadInput, match=r"l\.jsonl:2.*expected an object per row"):
        read_seeds(store, str(write_jsonl(tmp_path / "l.jsonl", [{"instruction": "a"}, [1, 2]])))


def test_hub_ids_and_saved_datasets_are_sources_for_every_generator(store, tmp_path, hub_offline):
    assert is_external("hf:owner/name") and not is_external("owner-data@2")
    # an hf: id goes to the Hub loader (offline here), not to the catalog as a version name
    for load in (lambda ref: load_seeds(store, ref), lambda ref: load_source(store, ref, None)):
        with pytest.raises(AssayError, match="hf:nobody/nothing: cannot load from the Hugging Face Hub"):
            load(ref="hf:nobody/nothing")
    folder = tmp_path / "saved"
    datasets.Dataset.from_list([{"question": "Why?", "answer": "Because."}]).save_to_disk(str(folder))
    label, items, parents = load_source(store, str(folder), None)
    assert (label, parents) == (str(folder), [])
    assert [(i.instruction, i.record_id) for i in items] == [("Why?", record_id("Why?", "", "Because.", None))]
