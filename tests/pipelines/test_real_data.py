"""Every file in ../shared/data/instructions and ../shared/data/benchmarks imports as it is."""

import json

import pytest

from assay.pipelines.importer import import_source

EXPECTED = {
    # file: (records, what the first record's instruction starts with)
    "instructions/self_instruct_seed_tasks.jsonl": (None, "Is there anything I can eat for a breakfast"),
    "instructions/self_instruct_user_oriented.jsonl": (None, "The sentence you are given might be too wordy"),
    "instructions/codealpaca_new.json": (4535, "Write a C++ program that calculates the area"),
    "benchmarks/gsm8k_test.jsonl": (1319, "Janet\u2019s ducks lay 16 eggs per day"),
}


def instance_count(path):
    return sum(len(json.loads(line)["instances"]) for line in path.read_text().splitlines() if line.strip())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shared_file_imports(store, shared_data, name):
    path = shared_data / name
    records, first = EXPECTED[name]
    if records is None:  # Self-Instruct files: one record per instance
        records = instance_count(path)
    m = import_source(store, str(path), "real")
    rows = store.read(m)
    assert m.records == rows.height == records
    assert rows["instruction"][0].startswith(first)
    assert rows["output"].str.len_chars().min() >= 0 and rows["output"].str.len_chars().max() > 0
    assert store.verify()["ok"]


def test_every_shared_instruction_and_benchmark_file_is_covered(shared_data):
    files = {str(p.relative_to(shared_data))
             for d in ("instructions", "benchmarks") for p in (shared_data / d).iterdir()}
    assert files == set(EXPECTED)


def test_gsm8k_maps_question_answer_and_codealpaca_keeps_response_as_metadata(store, shared_data):
    gsm = import_source(store, str(shared_data / "benchmarks/gsm8k_test.jsonl"), "gsm8k")
    assert gsm.params["mapping"] == {"instruction": "question", "output": "answer"}
    code = import_source(store, str(shared_data / "instructions/codealpaca_new.json"), "code")
    row = store.read(code).row(0, named=True)
    assert code.params["mapping"] == {"instruction": "instruction", "input": "input", "output": "output"}
    assert "response" in json.loads(row["metadata"])
    assert row["source_row"] == 2  # the first element starts on line 2 of the JSON array
