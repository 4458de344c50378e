"""Chain-of-Task (pipelines/chain_of_task.py): atomic sub-tasks from the real EcomGPT domain files,
answers checked independently against the raw JSON; bad task definitions and rows fail with one line
naming file and field and commit nothing; the LLM sub-task against tests/fault_server.py."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from fault_server import FaultServer
from helpers import SHARED_DATA

from assay.core.errors import AssayError
from assay.core.llm import LLMConfig
from assay.core.llm.journal import list_llm_runs, run_failures, run_record
from assay.pipelines.chain_of_task import CLS_TASKS, NER_TASKS
from assay.pipelines.generate import generate, generator_options

DOMAIN = SHARED_DATA / "domain"
NER = DOMAIN / "ecomgpt_EN-Lenovo-NER-NER.json"
CLS = DOMAIN / "ecomgpt_EN-ABSA-CLS-review_topic_category.json"
NER_LABELS = ["Attribute", "Brand", "Component", "Product"]
CLS_LABELS = ["Food", "Service", "Price", "Ambience", "Anecdotes/Miscellaneous"]



@pytest.fixture(autouse=True)
def _data(shared_data):
    # the conftest fixture fails loudly when ../shared/data is missing; the files must be the ones read here
    assert shared_data.resolve() / "domain" == DOMAIN.resolve() and NER.is_file() and CLS.is_file()


def raw_rows(path: Path, n: int) -> list[dict]:
    """The first n rows, read here without the generator's code."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            out.append(json.loads(line))
        if len(out) == n:
            break
    return out


def sentence_of(instruction: str) -> str:
    return re.search(r"\n(?:Sentence|Review): (.*)$", instruction, re.S).group(1)


def read(store, report) -> list[dict]:
    out = store.read(report["version"]).to_dicts()
    for r in out:
        r["meta"] = json.loads(r["metadata"])
    return out


# ---- NER: every answer agrees with the spans ---------------------------------------------------
def test_ner_records_agree_with_the_spans(store):
    report = generate(store, "chain-of-task", "cot-ner", {"source": str(NER), "limit": 20})
    assert (report["requested"], report["failed"]) == (0, 0)  # every answer comes from the rows
    raw = raw_rows(NER, 20)
    by_sentence = {r["sentences"]: r for r in raw}
    assert len(by_sentence) == 20
    out = read(store, report)
    assert len(out) == report["records"] == store.resolve(report["version"]).records

    seen = {t: set() for t in NER_TASKS}
    for r in out:
        m = r["meta"]
        assert m["end_task"] == "EN-Lenovo-NER-NER" and m["atomic_task"] in NER_TASKS
        assert r["template"] == m["atomic_task"] and r["generator"] == "chain-of-task"
        row = by_sentence[sentence_of(r["instruction"])]
        assert r["source_row"] == raw.index(row) + 1  # 1-based line of the row it came from
        spans = row["spans"]
        for s in spans:  # the data itself is consistent: the offsets give the term
            assert row["sentences"][s["start"]:s["end"]] == s["term"]
        seen[m["atomic_task"]].add(row["sentences"])
        if m["atomic_task"] == "entity_extraction":
            typ = m["entity_type"]
            assert typ in NER_LABELS and f"List the {typ} entities" in r["instruction"]
            want = [s["term"] for s in sorted(spans, key=lambda s: s["start"]) if s["type"] == typ]
            got = [] if r["output"] == "None" else r["output"].split(", ")
            assert got == list(dict.fromkeys(want))
            assert m["present"] == bool(want)
        elif m["atomic_task"] == "span_classification":
            term = re.search(r'What type is "(.*?)" in', r["instruction"]).group(1)
            assert r["output"] in NER_LABELS
            assert {s["type"] for s in spans if s["term"] == term} == {r["output"]}
        elif m["atomic_task"] == "span_verification":
            term, typ = re.search(r'Is "(.*?)" an? (\w+) entity', r["instruction"]).groups()
            assert typ == m["entity_type"] and term == m["term"]
            assert r["output"] == ("yes" if any(s["term"] == term and s["type"] == typ for s in spans) else "no")
        elif m["atomic_task"] == "span_detection":
            assert set(r["output"].split(", ")) == {s["term"] for s in spans} if spans else r["output"] == "None"
        else:
            want = {f"{s['term']}: {s['type']}" for s in spans}
            assert set(r["output"].split(", ")) == want if spans else r["output"] == "None"
            assert all(lab in r["instruction"] for lab in NER_LABELS)
        assert m["answer_from"] == "row" and m["family"] == "ner" and m["language"] == "en"
    # coverage: one entity_extraction record per (row, type); one span_classification per term
    counts = report["details"]["atomic_tasks"]
    assert counts["entity_extraction"] == 20 * len(NER_LABELS) and counts["ner"] == 20
    assert counts["span_classification"] == sum(len({s["term"] for s in r["spans"]}) for r in raw) \
        - report["filtered"].get("ambiguous_span", 0)
    terms_per_row = [len({s["term"] for s in r["spans"]}) for r in raw]
    assert counts["span_verification"] == sum(terms_per_row) * len(NER_LABELS)
    assert seen["entity_extraction"] == seen["ner"] == seen["span_detection"] == set(by_sentence)
    assert report["details"]["planned"] == report["records"] + len(report["dropped"])
    present = [r for r in out if r["meta"]["atomic_task"] == "entity_extraction"]
    assert any(r["meta"]["present"] for r in present) and any(not r["meta"]["present"] for r in present)
    m = store.resolve(report["version"])
    assert m.operation == "generate:chain-of-task" and m.params["end_task"] == "EN-Lenovo-NER-NER"


def test_tasks_option_selects_atomic_tasks(store):
    report = generate(store, "chain-of-task", "cot-ner", {"source": str(NER), "limit": 5,
                                                          "tasks": ["span_classification"]})
    out = read(store, report)
    assert out and {r["meta"]["atomic_task"] for r in out} == {"span_classification"}
    with pytest.raises(AssayError, match=r"topic_classification do not serve EN-Lenovo-NER-NER"):
        generate(store, "chain-of-task", "cot-ner", {"source": str(NER), "tasks": ["topic_classification"]})


# ---- classification: labels from the label set ------------------------------------------------
def test_classification_records_use_the_label_set(store):
    report = generate(store, "chain-of-task", "cot-cls", {"source": str(CLS), "limit": 20, "llm_tasks": False})
    assert report["requested"] == 0
    raw = {r["sentences"]: r["labels"]["default"] for r in raw_rows(CLS, 20)}
    out = read(store, report)
    assert report["details"]["atomic_tasks"] == {"topic_classification": 20, "label_verification": 20 * 5}
    for r in out:
        m = r["meta"]
        assert m["end_task"] == "EN-ABSA-CLS-review_topic_category" and m["atomic_task"] in CLS_TASKS
        assert r["template"] == m["atomic_task"]
        labels = raw[sentence_of(r["instruction"])]
        if m["atomic_task"] == "topic_classification":
            got = r["output"].split(", ")
            assert got == list(dict.fromkeys(labels)) and set(got) <= set(CLS_LABELS)
            assert all(lab in r["instruction"] for lab in CLS_LABELS)
        else:
            assert m["label"] in CLS_LABELS and f'"{m["label"]}"' in r["instruction"]
            assert r["output"] == ("yes" if m["label"] in labels else "no")
    assert {r["output"] for r in out if r["meta"]["atomic_task"] == "label_verification"} == {"yes", "no"}


# ---- bad input: one line naming file and field, nothing committed ------------------------------
def test_missing_meta_or_field_fails_and_commits_nothing(store, tmp_path):
    llm = LLMConfig(base_url="http://127.0.0.1:9/v1", model="m")  # nothing listens
    lone = tmp_path / "ecomgpt_EN-Lenovo-NER-NER.json"
    shutil.copy(NER, lone)
    with pytest.raises(AssayError, match=r"ecomgpt_EN-Lenovo-NER-NER\.meta\.json not found"):
        generate(store, "chain-of-task", "cot", {"source": str(lone)}, llm)

    # a row (line 3) lacking `spans`
    shutil.copy(DOMAIN / "ecomgpt_EN-Lenovo-NER-NER.meta.json", tmp_path / "ecomgpt_EN-Lenovo-NER-NER.meta.json")
    rows = raw_rows(NER, 4)
    del rows[2]["spans"]
    lone.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    with pytest.raises(AssayError, match=r"ecomgpt_EN-Lenovo-NER-NER\.json line 3: row lacks field 'spans'"):
        generate(store, "chain-of-task", "cot", {"source": str(lone)}, llm)

    # a classification row (line 2) lacking labels.default, past the rows that would give records
    cls = tmp_path / "cls.json"
    rows = raw_rows(CLS, 3)
    rows[1]["labels"] = {"other": ["Food"]}
    cls.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    meta = json.loads((DOMAIN / "ecomgpt_EN-ABSA-CLS-review_topic_category.meta.json").read_text())
    (tmp_path / "cls.meta.json").write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(AssayError, match=r"cls\.json line 2: row lacks field 'labels\.default'"):
        generate(store, "chain-of-task", "cot", {"source": str(cls)}, llm)

    # a task definition lacking a field
    del meta["label_sep"]
    (tmp_path / "cls.meta.json").write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(AssayError, match=r"cls\.meta\.json lacks field 'label_sep'"):
        generate(store, "chain-of-task", "cot", {"source": str(cls)}, llm)
    assert store.versions() == [] and list_llm_runs(store) == []
    assert all(o["help"] for o in generator_options("chain-of-task"))


# ---- the LLM sub-task against the fault server -------------------------------------------------
def fault_llm(srv: FaultServer) -> LLMConfig:
    return LLMConfig(base_url=srv.base_url, model=srv.model, temperature=0, seed=1, timeout_s=0.5,
                     max_retries=0, backoff_s=0.01, concurrency=4, cache=False)


def test_review_generation_failures_are_data(store):
    cfg = {"source": str(CLS), "limit": 30, "tasks": ["review_generation"], "reviews_per_label": 3, "seed": 2}
    with FaultServer(seed=5, fault_rate=0.5, timeout_sleep=0.8) as srv:
        report = generate(store, "chain-of-task", "cot-gen", cfg, fault_llm(srv), "cot-faults")
        sent = srv.chat_requests()
    rec = run_record(store, "cot-faults")
    assert report["requested"] == 15 == sent == rec["requested"] == rec["ok"] + rec["failed"]
    assert report["failed"] == rec["failed"] == len(report["failures"]) > 0
    assert report["records"] == report["requested"] - report["failed"] > 0
    journal = {f["key"]: f for f in run_failures(store, "cot-faults")}
    assert {f["key"] for f in report["failures"]} == set(journal)
    for f in report["failures"]:
        assert f["error"] and f["raw"] == journal[f["key"]]["raw"]
        if f["error_kind"] in ("http", "unparsable"):
            assert f["raw"], f
    out = read(store, report)
    for r in out:
        m = r["meta"]
        assert (m["end_task"], m["atomic_task"], r["template"]) == (
            "EN-ABSA-CLS-review_topic_category", "review_generation", "review_generation")
        assert m["label"] in CLS_LABELS and f'"{m["label"]}"' in r["instruction"]
        assert r["output"].startswith("echo:") and m["label"] in r["output"]  # the echoed prompt
        assert r["model"] == srv.model and r["source"] == "cot-faults"
        # the example shown is a row carrying that label
        line = m["example_line"]
        assert m["label"] in raw_rows(CLS, line)[-1]["labels"]["default"]


def test_llm_tasks_off_sends_nothing(store):
    report = generate(store, "chain-of-task", "cot", {"source": str(CLS), "limit": 3, "llm_tasks": False},
                      LLMConfig(base_url="http://127.0.0.1:9/v1", model="m"))
    assert report["requested"] == 0 and "review_generation" not in report["details"]["atomic_tasks"]
    assert list_llm_runs(store) == []


def test_cli_generate_chain_of_task(cli, store):
    out = cli.json("generate", "chain-of-task", "--source", str(NER), "--limit", "2",
                   "--tasks", "entity_extraction,ner", "--llm-tasks", "false", "--name", "cot")
    assert out["generator"] == "chain-of-task" and out["ref"] == "cot@1" and out["requested"] == 0
    assert out["details"]["atomic_tasks"] == {"entity_extraction": 8, "ner": 2}
    assert store.resolve("cot").params["config"]["tasks"] == ["entity_extraction", "ner"]


def test_review_generation_against_the_real_server(store, tmp_path):
    # one label, one request: the embedded SmolLM2 server is slow
    from assay.core.llm.server import EMBEDDED_MODEL, serve

    src = tmp_path / "food.json"
    src.write_text(json.dumps(raw_rows(CLS, 1)[0]) + "\n", encoding="utf-8")  # "The bread is top notch as well." (Food)
    meta = json.loads((DOMAIN / "ecomgpt_EN-ABSA-CLS-review_topic_category.meta.json").read_text())
    meta["label_set"] = {"default": ["Food"]}
    (tmp_path / "food.meta.json").write_text(json.dumps(meta), encoding="utf-8")
    with serve(n_threads=1, n_ctx=1024) as srv:
        llm = LLMConfig(base_url=srv.base_url, temperature=0, seed=1, max_tokens=40, timeout_s=120)
        report = generate(store, "chain-of-task", "cot-real", {"source": str(src), "tasks": ["review_generation"]},
                          llm, "cot-real")
    assert report["requested"] == 1 == report["records"] + report["failed"]
    assert report["records"] == 1, report["failures"]
    r = read(store, report)[0]
    assert r["model"] == EMBEDDED_MODEL and r["meta"]["label"] == "Food" and r["meta"]["example_line"] == 1
    assert r["output"].strip() and r["meta"]["end_task"] == "EN-ABSA-CLS-review_topic_category"
    assert json.loads(r["sampling_params"])["max_tokens"] == 40
