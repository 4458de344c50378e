"""Flan-style templating (pipelines/flan.py) on real data: GSM8K and the EcomGPT review-topic file."""

from __future__ import annotations

import json

import pytest

from assay.core.errors import AssayError
from assay.pipelines.flan import load_library
from assay.pipelines.generate import TemplateError, generate
from assay.pipelines.importer import ImportConfig, import_source

N = 6  # source rows: the tests read only the first few


@pytest.fixture
def gsm8k(store, shared_data):
    path = shared_data / "benchmarks" / "gsm8k_test.jsonl"
    return import_source(store, str(path), "gsm8k",
                         ImportConfig(mapping={"instruction": "question", "output": "answer"}))


@pytest.fixture
def ecom(shared_data):
    return str(shared_data / "domain" / "ecomgpt_EN-ABSA-CLS-review_topic_category.json")


def rows(store, version: str) -> list[dict]:
    out = store.read(version).to_dicts()
    for r in out:
        r["metadata"] = json.loads(r["metadata"])
    return out


def test_zero_shot_qa_every_record_keeps_its_template(store, gsm8k):
    report = generate(store, "templates", "gsm8k-flan", {"source": "gsm8k@1", "tasks": ["qa"], "limit": N})
    phrasings = [t["id"] for t in load_library()["qa"].templates]
    assert len(phrasings) >= 3  # several phrasings per task
    assert (report["records"], report["requested"], report["failed"]) == (N * len(phrasings), 0, 0)
    manifest = store.resolve(report["version"])
    assert manifest.parents == [gsm8k.id] and manifest.operation == "generate:templates"
    source = store.read(gsm8k).head(N).to_dicts()
    out = rows(store, report["version"])
    assert sorted({r["template"] for r in out}) == sorted(phrasings)
    for r in out:
        src = source[r["source_row"] - 1]
        assert r["generator"] == "templates" and r["parent_ids"] == [src["id"]]
        assert r["metadata"] == {"task": "qa", "mode": "zero-shot", "inverted": False}
        assert r["output"] == src["output"].strip()
        assert src["instruction"] in r["instruction"] + r["input"]


def test_few_shot_has_k_seeded_exemplars_from_the_same_dataset(store, gsm8k):
    cfg = {"source": "gsm8k", "tasks": ["qa"], "mode": "few-shot", "shots": 3, "phrasings": 1, "seed": 5,
           "limit": N}
    report = generate(store, "templates", "fs", cfg)
    assert report["records"] == N
    source = store.read(gsm8k).head(N).to_dicts()
    for r in rows(store, report["version"]):
        picks = r["metadata"]["exemplar_rows"]
        assert r["metadata"]["mode"] == "few-shot" and r["metadata"]["shots"] == 3
        assert len(picks) == 3 == len(set(picks)) and r["source_row"] not in picks  # never itself
        assert r["parent_ids"] == [source[r["source_row"] - 1]["id"]] + [source[p - 1]["id"] for p in picks]
        text = r["instruction"] + "\n" + r["input"]
        query = text.rfind(source[r["source_row"] - 1]["instruction"].strip())
        for p in picks:  # each exemplar is shown with its answer, before the query
            assert 0 <= text.find(source[p - 1]["output"].strip()) < query
        assert r["output"] == source[r["source_row"] - 1]["output"].strip()
    # seeded: the same seed gives the same version content, another seed other exemplars
    again = generate(store, "templates", "fs", cfg)
    assert store.resolve(again["version"]).content_hash == store.resolve(report["version"]).content_hash
    other = generate(store, "templates", "fs", {**cfg, "seed": 6})
    assert store.resolve(other["version"]).content_hash != store.resolve(report["version"]).content_hash


def test_both_modes_double_the_records(store, gsm8k):
    report = generate(store, "templates", "both", {"source": "gsm8k", "tasks": ["qa"], "mode": "both",
                                                   "phrasings": 2, "shots": 1, "limit": 4})
    modes = [r["metadata"]["mode"] for r in rows(store, report["version"])]
    assert report["records"] == 4 * 2 * 2 and modes.count("few-shot") == modes.count("zero-shot") == 8


def test_inverted_qa_swaps_the_roles(store, gsm8k):
    report = generate(store, "templates", "inv", {"source": "gsm8k", "tasks": ["qa-inverted"], "limit": N})
    source = store.read(gsm8k).head(N).to_dicts()
    out = rows(store, report["version"])
    assert len(out) == N * len(load_library()["qa-inverted"].templates)
    for r in out:
        src = source[r["source_row"] - 1]
        assert r["template"].startswith("qa-inverted/") and r["metadata"]["inverted"] is True
        assert r["output"] == src["instruction"].strip()  # the question is now the target
        assert src["output"].strip() in r["instruction"] + r["input"]  # and the answer is given


def test_classification_from_a_file_with_its_label_set(store, ecom):
    cfg = {"source": ecom, "tasks": ["classify"], "map": {"text": "sentences", "label": "labels.default"},
           "phrasings": 1, "limit": 10}
    report = generate(store, "templates", "ecom-cls", cfg)
    assert report["records"] == 10
    options = ["Food", "Service", "Price", "Ambience", "Anecdotes/Miscellaneous"]  # from the .meta.json
    raw = [json.loads(line) for line in open(ecom, encoding="utf-8").read().splitlines()[:10]]
    out = rows(store, report["version"])
    assert len({r["template"] for r in out}) >= 2  # phrasings drawn per row with the seed
    for r in out:
        src = raw[r["source_row"] - 1]
        assert r["template"].startswith("classify/") and r["source"].endswith(".json")
        assert r["output"] == ", ".join(src["labels"]["default"])
        assert all(label in options for label in r["output"].split(", "))
        assert src["sentences"] in r["instruction"] + r["input"]
        assert all(o in r["instruction"] for o in options)
    assert store.resolve(report["version"]).params["options"] == options


def test_a_missing_field_names_template_and_field_and_commits_nothing(store, ecom, shared_data, tmp_path):
    with pytest.raises(TemplateError) as err:  # no --map: the rows have `sentences`, not `text`
        generate(store, "templates", "bad", {"source": ecom, "tasks": ["classify"], "limit": 3})
    message = str(err.value)
    assert "template 'classify/" in message and "field 'text'" in message and "row 1" in message
    assert "sentences" in message  # the fields it does have
    lib = tmp_path / "mine.yaml"
    lib.write_text("tasks:\n  - id: rationale\n    templates:\n"
                   "      - id: rationale/explain\n        instruction: '{{ instruction }}'\n"
                   "        output: '{{ rationale }}'\n", encoding="utf-8")
    gsm8k_file = str(shared_data / "benchmarks" / "gsm8k_test.jsonl")  # question/answer read as instruction/output
    with pytest.raises(TemplateError, match=r"template 'rationale/explain' names field 'rationale'"):
        generate(store, "templates", "bad", {"source": gsm8k_file, "tasks": ["qa", "rationale"],
                                             "library": [str(lib)], "limit": 2})
    with pytest.raises(TemplateError, match=r"template 'qa/plain' names field 'instruction'"):
        generate(store, "templates", "bad", {"source": ecom, "tasks": ["qa"], "limit": 2})
    with pytest.raises(AssayError, match=r"--map: no field 'labels.nope'"):
        generate(store, "templates", "bad", {"source": ecom, "tasks": ["classify"],
                                             "map": {"text": "sentences", "label": "labels.nope"}})
    assert store.versions() == []  # nothing committed by any of them


def test_a_user_library_extends_and_overrides(store, gsm8k, tmp_path):
    lib = tmp_path / "mine.yaml"
    lib.write_text(
        "tasks:\n"
        "  - id: qa\n    templates:\n"
        "      - id: qa/mine\n        instruction: 'My: {{ instruction }}'\n        output: '{{ output }}'\n"
        "  - id: short-answer\n    templates:\n"
        "      - id: short-answer/last-line\n        instruction: '{{ instruction }}'\n"
        "        output: \"{{ output.split('####')[-1] | trim }}\"\n", encoding="utf-8")
    report = generate(store, "templates", "mine", {"source": "gsm8k", "tasks": ["qa", "short-answer"],
                                                   "library": [str(lib)], "limit": 3})
    out = rows(store, report["version"])
    assert sorted({r["template"] for r in out}) == ["qa/mine", "short-answer/last-line"]
    gold = [r["output"].split("####")[-1].strip() for r in store.read(gsm8k).head(3).to_dicts()]
    assert [r["output"] for r in out if r["template"] == "short-answer/last-line"] == gold
    bad = tmp_path / "bad.yaml"
    bad.write_text("tasks:\n  - id: x\n    templates:\n      - id: x/1\n        instruction: '{{ a'\n"
                   "        output: b\n", encoding="utf-8")
    with pytest.raises(TemplateError, match=r"template 'x/1': syntax error"):
        generate(store, "templates", "bad", {"source": "gsm8k", "library": [str(bad)]})
    with pytest.raises(AssayError, match=r"unknown task\(s\) nope .*tasks: qa, qa-inverted"):
        generate(store, "templates", "bad", {"source": "gsm8k", "tasks": ["nope"]})
    with pytest.raises(AssayError, match=r"unknown option\(s\) bogus"):
        generate(store, "templates", "bad", {"source": "gsm8k", "bogus": 1})


def test_every_generator_option_carries_help():
    from assay.pipelines.generate import generator_options

    for kind in ("templates", "self-instruct"):
        options = generator_options(kind)
        assert options and all(o["help"] for o in options), kind
    assert {o["name"] for o in generator_options("self-instruct")} >= {"seeds", "n", "rouge_threshold", "blacklist"}


def test_hub_dataset_source_goes_through_datasets(store, hub_offline):
    """`source=hf:ID` is read by the importer's Hub reader: offline, a clear error and nothing committed."""
    with pytest.raises(AssayError, match=r"hf:assay-test/nope: cannot load from the Hugging Face Hub"):
        generate(store, "templates", "x", {"source": "hf:assay-test/nope", "tasks": ["qa"]})
    assert store.versions() == []
