import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import write_jsonl

from assay.core.errors import AssayError, BadInput
from assay.pipelines.importer import ImportConfig, import_source, parse_mapping

ALPACA = [
    {"instruction": "Add the numbers.", "input": "2, 3", "output": "5", "category": "math"},
    {"instruction": "Say hi.", "input": "", "output": "Hi!", "category": "chat"},
]


def records(store, ref):
    return store.read(ref).to_dicts()


def test_jsonl_alpaca_with_unknown_columns_as_metadata(store, tmp_path):
    m = import_source(store, str(write_jsonl(tmp_path / "a.jsonl", ALPACA)), "a")
    rows = records(store, m.id)
    assert [r["instruction"] for r in rows] == ["Add the numbers.", "Say hi."]
    assert json.loads(rows[0]["metadata"]) == {"category": "math"}
    assert rows[0]["source"] == str(tmp_path / "a.jsonl") and rows[0]["source_row"] == 1
    assert rows[0]["generator"] == "import" and m.operation == "import"


def test_json_array_csv_tsv_and_parquet_give_the_same_records(store, tmp_path):
    (tmp_path / "a.json").write_text(json.dumps(ALPACA, indent=2))
    (tmp_path / "a.csv").write_text("instruction,input,output,category\n" + "\n".join(
        f'"{r["instruction"]}","{r["input"]}","{r["output"]}",{r["category"]}' for r in ALPACA) + "\n")
    (tmp_path / "a.tsv").write_text("instruction\tinput\toutput\tcategory\n" + "\n".join(
        "\t".join([r["instruction"], r["input"], r["output"], r["category"]]) for r in ALPACA) + "\n")
    pq.write_table(pa.Table.from_pylist(ALPACA), tmp_path / "a.parquet")
    ref = import_source(store, str(write_jsonl(tmp_path / "a.jsonl", ALPACA)), "ref")
    want = store.read(ref)["id"].to_list()
    for name in ("a.json", "a.csv", "a.tsv", "a.parquet"):
        m = import_source(store, str(tmp_path / name), name.replace(".", "-"))
        assert store.read(m)["id"].to_list() == want, name
        assert [json.loads(x) for x in store.read(m)["metadata"]] == [{"category": "math"}, {"category": "chat"}]


def test_hf_dataset_saved_to_disk_and_dataset_dict_splits(store, tmp_path):
    import datasets

    datasets.Dataset.from_list(ALPACA).save_to_disk(str(tmp_path / "plain"))
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ALPACA[:1]),
                          "test": datasets.Dataset.from_list(ALPACA[1:])}).save_to_disk(str(tmp_path / "dd"))
    assert store.read(import_source(store, str(tmp_path / "plain"), "p")).height == 2
    train = store.read(import_source(store, str(tmp_path / "dd"), "dd"))
    assert train["instruction"].to_list() == ["Add the numbers."]
    test = store.read(import_source(store, str(tmp_path / "dd"), "dd", ImportConfig(split="test")))
    assert test["instruction"].to_list() == ["Say hi."]
    with pytest.raises(AssayError, match="choose a split.*train, test|choose a split"):
        import_source(store, str(tmp_path / "dd"), "dd", ImportConfig(split="validation"))


def test_openai_messages_and_sharegpt_conversations(store, tmp_path):
    openai = [{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                            {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye"},
                            {"role": "assistant", "content": "Bye."}]}]
    sharegpt = [{"id": "c1", "conversations": [
        {"from": "system", "value": "Be brief."}, {"from": "human", "value": "Hi"},
        {"from": "gpt", "value": "Hello."}, {"from": "human", "value": "Bye"}, {"from": "gpt", "value": "Bye."}]}]
    a = store.read(import_source(store, str(write_jsonl(tmp_path / "o.jsonl", openai)), "o")).to_dicts()
    b = store.read(import_source(store, str(write_jsonl(tmp_path / "s.jsonl", sharegpt)), "s")).to_dicts()
    assert a[0]["messages"] == openai[0]["messages"]
    assert b[0]["messages"] == openai[0]["messages"]  # roles mapped human->user, gpt->assistant
    assert a[0]["id"] == b[0]["id"]
    assert json.loads(b[0]["metadata"]) == {"id": "c1"}


def test_self_instruct_seed_tasks_give_one_record_per_instance(store, tmp_path):
    seeds = [{"id": "seed_task_0", "name": "antonyms", "instruction": "Give an antonym.", "is_classification": False,
              "instances": [{"input": "hot", "output": "cold"}, {"input": "up", "output": "down"}]}]
    rows = store.read(import_source(store, str(write_jsonl(tmp_path / "seed.jsonl", seeds)), "s")).to_dicts()
    assert [(r["input"], r["output"]) for r in rows] == [("hot", "cold"), ("up", "down")]
    assert json.loads(rows[1]["metadata"]) == {"id": "seed_task_0", "name": "antonyms", "is_classification": False,
                                               "instance": 1}


def test_column_mapping_and_aliases(store, tmp_path):
    qa = [{"question": "What is 2+2?", "answer": "4", "q": "x", "a": "y"}]
    path = str(write_jsonl(tmp_path / "qa.jsonl", qa))
    alias = store.read(import_source(store, path, "qa")).to_dicts()[0]
    assert (alias["instruction"], alias["output"]) == ("What is 2+2?", "4")
    mapped = import_source(store, path, "qa", ImportConfig(mapping=parse_mapping("instruction=q,output=a")))
    row = store.read(mapped).to_dicts()[0]
    assert (row["instruction"], row["output"]) == ("x", "y")
    assert json.loads(row["metadata"]) == {"question": "What is 2+2?", "answer": "4"}
    assert mapped.params["mapping"] == {"instruction": "q", "output": "a"}


@pytest.mark.parametrize("text", ["instruction=", "foo=bar", "instruction"])
def test_bad_mapping_is_refused(text):
    with pytest.raises(AssayError, match="--map"):
        parse_mapping(text)


def test_mapping_to_a_missing_column_names_the_columns(store, tmp_path):
    path = str(write_jsonl(tmp_path / "a.jsonl", ALPACA))
    with pytest.raises(BadInput, match="no column 'question'.*instruction, input, output, category"):
        import_source(store, path, "a", ImportConfig(mapping={"instruction": "question"}))


# ---- bad input: one clear line naming file and line, nothing committed -----------------------

def assert_nothing_committed(store, workspace):
    assert store.versions() == []
    assert list((workspace / "manifests").iterdir()) == []


def test_malformed_jsonl_line_names_file_and_line(store, workspace, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(ALPACA[0]) + "\n\n" + json.dumps(ALPACA[1]) + "\n{\"instruction\": oops}\n")
    with pytest.raises(BadInput) as exc:
        import_source(store, str(path), "bad")
    assert str(exc.value).startswith(f"{path}:4: not valid JSON")
    assert_nothing_committed(store, workspace)


def test_missing_required_field_names_line_and_field(store, workspace, tmp_path):
    rows = [dict(r) for r in ALPACA] * 3
    rows[4] = {"instruction": "No answer here", "input": ""}
    with pytest.raises(BadInput, match=r"bad\.jsonl:5: field 'output': missing"):
        import_source(store, str(write_jsonl(tmp_path / "bad.jsonl", rows)), "bad")
    rows[4] = {"instruction": None, "output": "x"}
    with pytest.raises(BadInput, match=r"bad\.jsonl:5: field 'instruction': is null"):
        import_source(store, str(write_jsonl(tmp_path / "bad.jsonl", rows)), "bad")
    rows[4] = {"instruction": ["a", "list"], "output": "x"}
    with pytest.raises(BadInput, match=r"bad\.jsonl:5: field 'instruction': must be text, got list"):
        import_source(store, str(write_jsonl(tmp_path / "bad.jsonl", rows)), "bad")
    assert_nothing_committed(store, workspace)


def test_json_array_errors_name_the_line(store, workspace, tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('[\n  {"instruction": "a", "output": "b"},\n  {"instruction": "c"},\n'
                    '  {"instruction": "d", "output": "e"}\n]\n')
    with pytest.raises(BadInput, match=r"bad\.json:3: field 'output': missing"):
        import_source(store, str(path), "bad")
    path.write_text('[\n  {"instruction": "a", "output": "b"},\n  {"instruction": "c", "output": }\n]\n')
    with pytest.raises(BadInput, match=r"bad\.json:3: not valid JSON"):
        import_source(store, str(path), "bad")
    assert_nothing_committed(store, workspace)


def test_files_that_are_not_what_their_extension_says(store, workspace, tmp_path):
    pq.write_table(pa.Table.from_pylist(ALPACA), tmp_path / "real.parquet")
    (tmp_path / "fake.jsonl").write_bytes((tmp_path / "real.parquet").read_bytes())
    (tmp_path / "fake.parquet").write_text(json.dumps(ALPACA[0]) + "\n")
    (tmp_path / "fake.csv").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe")
    (tmp_path / "fake.jsonl.gz").write_text("not gzip at all")
    with pytest.raises(BadInput, match=r"fake\.jsonl:1: not (valid JSON|UTF-8)"):
        import_source(store, str(tmp_path / "fake.jsonl"), "x")
    with pytest.raises(BadInput, match=r"fake\.parquet: not a Parquet file"):
        import_source(store, str(tmp_path / "fake.parquet"), "x")
    with pytest.raises(BadInput, match=r"fake\.csv"):
        import_source(store, str(tmp_path / "fake.csv"), "x")
    with pytest.raises(BadInput, match=r"fake\.jsonl\.gz"):
        import_source(store, str(tmp_path / "fake.jsonl.gz"), "x")
    assert_nothing_committed(store, workspace)


def test_empty_files(store, workspace, tmp_path):
    empties = (("e.jsonl", ""), ("blank.jsonl", "\n\n  \n"), ("e.json", "[]"), ("e.csv", "instruction,output\n"))
    for name, text in empties:
        (tmp_path / name).write_text(text)
        with pytest.raises(BadInput, match=rf"{name}.*empty"):
            import_source(store, str(tmp_path / name), "x")
    assert_nothing_committed(store, workspace)


def test_unknown_layout_and_missing_file(store, tmp_path):
    with pytest.raises(BadInput, match="no instruction or messages column.*--map"):
        import_source(store, str(write_jsonl(tmp_path / "x.jsonl", [{"text": "a"}])), "x")
    with pytest.raises(AssayError, match="no such file"):
        import_source(store, str(tmp_path / "missing.jsonl"), "x")
    with pytest.raises(AssayError, match="hf:owner/name"):
        import_source(store, "owner/name", "x", ImportConfig(format="jsonl"))


def test_hub_id_without_network_is_a_clear_error(store, hub_offline):
    with pytest.raises(AssayError, match=r"hf:assay-test/does-not-exist: cannot load from the Hugging Face Hub"):
        import_source(store, "hf:assay-test/does-not-exist", "x")


def test_unicode_empty_strings_and_1mb_fields_round_trip_exactly(store, tmp_path):
    big = "ß∑🙂\u200b" * 262_144  # 1 MiB of characters, many multi-byte
    rows = [{"instruction": big, "input": "", "output": "é\x00\n\t\"\\ 中文"},
            {"instruction": "", "input": "x", "output": ""}]
    got = store.read(import_source(store, str(write_jsonl(tmp_path / "u.jsonl", rows)), "u")).to_dicts()
    def triple(r):
        return r["instruction"], r["input"], r["output"]
    assert [triple(r) for r in got] == [triple(r) for r in rows]


@pytest.mark.parametrize("fast_path", [True, False])
def test_source_label_replaces_the_path_in_provenance(store, tmp_path, fast_path):
    # the app imports uploads from a temp file that is deleted afterwards: provenance names the upload
    path = write_jsonl(tmp_path / "fruit.jsonl", [{"instruction": "Name a fruit", "output": "apple", "x": 1}])
    m = import_source(store, str(path), "fruit", ImportConfig(fast_path=fast_path), source_label="upload:fruit.jsonl")
    assert store.read(m)["source"].to_list() == ["upload:fruit.jsonl"]
    assert m.params["source"] == "upload:fruit.jsonl"
