"""Chain-of-Task on every EcomGPT task family, read from EcomGPT's own layout: the five real task
definitions in ../shared/data/domain, every answer re-derived here from the raw JSON rows; counts add
up; a folder of tasks; Chinese templates; the two bad-input errors; the LLM sub-task of generation
against the real embedded server."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from helpers import SHARED_DATA

from assay.core.errors import AssayError
from assay.core.llm import LLMConfig, ParseError
from assay.core.llm.journal import list_llm_runs
from assay.pipelines.generate import generate

DOMAIN = SHARED_DATA / "domain"
TASKS = DOMAIN / "ecomgpt_tasks"
SPAN = TASKS / "EN-Lenovo-Condition_Extract-Condition_Extract"
SELECT = TASKS / "ZH-Multi_CPR-Extract-product_select_2"
TITLE = TASKS / "ZH-OpenBG_Align-Generate-title_generate"
# (source as a user names it, the data file, the family, the language)
DEFINITIONS = [
    (DOMAIN / "ecomgpt_EN-ABSA-CLS-review_topic_category.json", None, "cls", "en"),
    (DOMAIN / "ecomgpt_EN-Lenovo-NER-NER.json", None, "ner", "en"),
    (SPAN, SPAN / "test.json", "ner", "en"),  # a task folder
    (SELECT / "test.json", None, "extract", "zh"),  # its test.json, meta-info.json beside it
    (TITLE, TITLE / "test.json", "generate", "zh"),
]
NOBODY = LLMConfig(base_url="http://127.0.0.1:9/v1", model="m")  # nothing listens: a request would fail


@pytest.fixture(autouse=True)
def _data(shared_data):
    assert shared_data.resolve() / "domain" == DOMAIN.resolve() and SPAN.is_dir() and SELECT.is_dir()


def raw_rows(path: Path, n: int | None = None) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return rows[:n]


def read(store, ref) -> list[dict]:
    out = store.read(ref).to_dicts()
    for r in out:
        r["meta"] = json.loads(r["metadata"])
    return out


def expected(task: str, m: dict, row: dict, instruction: str, words: dict) -> str:
    """The answer of one record, from the raw row and the question the instruction asks."""
    spans = sorted(row.get("spans", []), key=lambda s: s.get("start", 0))
    terms = list(dict.fromkeys(s["term"] for s in spans))
    none = words["none"]
    if task == "entity_extraction":
        return ", ".join(dict.fromkeys(s["term"] for s in spans if s["type"] == m["entity_type"])) or none
    if task == "span_classification":
        return next(s["type"] for s in spans if s["term"] == m["term"])
    if task == "span_verification":
        assert f'"{m["term"]}"' in instruction and m["entity_type"] in instruction
        return words["yes"] if {"term": m["term"], "type": m["entity_type"]} in [
            {"term": s["term"], "type": s["type"]} for s in spans] else words["no"]
    if task == "ner":
        return ", ".join(dict.fromkeys(f"{s['term']}: {s['type']}" for s in spans)) or none
    if task in ("span_detection", "extraction"):
        return ", ".join(terms) or none
    if task == "topic_classification":
        return ", ".join(row["labels"]["default"])
    if task == "label_verification":
        return words["yes"] if m["label"] in row["labels"]["default"] else words["no"]
    if task == "answerability":
        if m["variant"] == "answer_removed":
            assert not any(t in instruction for t in terms)
            return words["no"]
        return words["yes"] if terms else words["no"]
    if task == "attribute_extraction":
        pairs = [p.split("#:#") for p in row["sentences"].split("#;#")]
        return ", ".join(dict.fromkeys(f"{k}: {v}" for k, v in pairs))
    assert task == "generation", task
    return row["spans"][0]["term"]


WORDS = {"en": {"yes": "yes", "no": "no", "none": "None"}, "zh": {"yes": "是", "no": "否", "none": "无"}}


@pytest.mark.parametrize("source,data,family,language", DEFINITIONS, ids=[d[2] + "-" + d[3] for d in DEFINITIONS])
def test_every_definition_answers_from_its_rows(store, source, data, family, language):
    report = generate(store, "chain-of-task", "cot", {"source": str(source), "limit": 6, "llm_tasks": False},
                      NOBODY)
    data = data or source
    raw = raw_rows(data, 6)
    assert report["requested"] == 0 and list_llm_runs(store) == []
    assert report["records"] > 0
    # counts add up: every planned sub-task instance is a record or a drop with a reason
    assert report["details"]["planned"] == report["records"] + len(report["dropped"])
    assert sum(report["filtered"].values()) == len(report["dropped"])
    (row_summary,) = report["details"]["tasks"]
    assert (row_summary["family"], row_summary["language"], row_summary["rows"]) == (family, language, 6)
    out = read(store, report["version"])
    assert len(out) == report["records"]
    words = WORDS[language]
    for r in out:
        m = r["meta"]
        assert (m["family"], m["language"], m["answer_from"]) == (family, language, "row")
        assert r["template"] == m["atomic_task"] + ("_zh" if language == "zh" else "")
        assert r["source"] == str(data) and r["source_row"] == m["line"]
        row = raw[m["line"] - 1]
        if m.get("variant") != "answer_removed":
            assert row["sentences"] in r["instruction"]
        assert r["output"] == expected(m["atomic_task"], m, row, r["instruction"], words), (r["instruction"], m)
        if language == "zh":  # the template's own words are Chinese: no Latin letters outside the row's text
            own = r["instruction"].replace(row["sentences"], "")
            if m.get("variant") == "answer_removed":  # the row's text, less its answer, follows the label
                own = own.split("文本：")[0]
            for s in row.get("spans", []):
                own = own.replace(s["term"], "")
            assert not re.search(r"[A-Za-z]", own), own
    # the mix of sub-tasks is in the version's params
    params = store.resolve(report["version"]).params
    (mix,) = params["sub_tasks"].values()
    assert mix["family"] == family and sum(mix["atomic_tasks"].values()) == report["records"]
    assert set(mix["templates"]) == {r["template"] for r in out}
    assert len(mix["atomic_tasks"]) >= 2  # every family decomposes into more than the end task


def test_a_folder_of_tasks_runs_every_task(store, cli):
    report = generate(store, "chain-of-task", "eco", {"source": str(DOMAIN), "limit": 3, "llm_tasks": False})
    tasks = {r["task"]: r for r in report["details"]["tasks"]}
    assert set(tasks) == {"EN-ABSA-CLS-review_topic_category", "EN-Lenovo-NER-NER", SPAN.name, SELECT.name,
                          TITLE.name}
    assert report["version"] is None and len(report["details"]["versions"]) == 5
    for task, row in tasks.items():
        m = store.resolve(row["ref"])
        assert row["ref"] == f"eco-{task}@1" and m.records == row["records"] > 0
        assert {r["meta"]["end_task"] for r in read(store, row["ref"])} == {task}
    assert report["records"] == sum(r["records"] for r in tasks.values())

    one = generate(store, "chain-of-task", "eco-all", {"source": str(TASKS), "limit": 3, "llm_tasks": False,
                                                       "one_version": True})
    out = read(store, one["version"])
    assert {r["meta"]["end_task"] for r in out} == {SPAN.name, SELECT.name, TITLE.name}
    assert one["records"] == len(out) == sum(tasks[t]["records"] for t in (SPAN.name, SELECT.name, TITLE.name))

    # the CLI: --one-version and a summary table naming every task
    proc = cli("generate", "chain-of-task", "--source", str(TASKS), "--limit", "2", "--llm-tasks", "false",
               "--name", "cli-eco")
    text = re.sub(r"[\s│|]", "", proc.stdout)  # the table may wrap a long name over several lines
    assert "recordsin3versions" in text
    for name in (SPAN.name, SELECT.name, TITLE.name):
        assert name.replace("-", "") in text.replace("-", "")


def test_chinese_label_set_and_family_override(store, tmp_path):
    # EcomGPT's definition lists the label set in two languages; label_key "cn" means Chinese templates
    task = tmp_path / "ZH-Lenovo-Condition_Extract-cn"
    task.mkdir()
    meta = json.loads((SPAN / "meta-info.json").read_text(encoding="utf-8"))
    (task / "meta-info.json").write_text(json.dumps({**meta, "label_key": "cn"}), encoding="utf-8")
    (task / "train.json").write_text("".join(json.dumps(r) + "\n" for r in raw_rows(SPAN / "test.json", 4)),
                                     encoding="utf-8")
    report = generate(store, "chain-of-task", "cn", {"source": str(task), "llm_tasks": False})
    to_cn = dict(zip(meta["label_set"]["en"], meta["label_set"]["cn"]))
    raw = raw_rows(task / "train.json")
    for r in read(store, report["version"]):
        m, row = r["meta"], raw[r["meta"]["line"] - 1]
        assert m["language"] == "zh" and r["template"].endswith("_zh")
        if m["atomic_task"] == "span_classification":
            assert r["output"] == to_cn[next(s["type"] for s in row["spans"] if s["term"] == m["term"])]
        if m["atomic_task"] == "span_verification":
            assert r["output"] in ("是", "否")

    # the family read from the name can be overridden: span detection treated as plain extraction
    report = generate(store, "chain-of-task", "ex", {"source": str(SPAN), "limit": 3, "family": "extract",
                                                     "tasks": ["extraction"]})
    raw = raw_rows(SPAN / "test.json", 3)
    out = read(store, report["version"])
    assert [r["output"] for r in out] == [", ".join(dict.fromkeys(s["term"] for s in row["spans"])) for row in raw]


def test_bad_definitions_and_rows_fail_in_one_line(store, tmp_path):
    odd = tmp_path / "EN-Shop-Rank-ranking"
    odd.mkdir()
    (odd / "meta-info.json").write_text(json.dumps({"task": "EN-Shop-Rank-ranking", "defi": "product ranking",
                                                    "label_sep": ", "}), encoding="utf-8")
    shutil.copy(SELECT / "test.json", odd / "test.json")
    with pytest.raises(AssayError) as err:
        generate(store, "chain-of-task", "x", {"source": str(odd)}, NOBODY)
    msg = str(err.value)
    assert "\n" not in msg and str(odd / "meta-info.json") in msg and "no known family" in msg
    assert all(f in msg for f in ("cls", "ner", "extract", "generate"))

    # a row without `sentences`: in a folder of tasks, caught before any task is committed
    bad = tmp_path / "tasks" / TITLE.name
    bad.mkdir(parents=True)
    shutil.copy(TITLE / "meta-info.json", bad / "meta-info.json")
    rows = raw_rows(TITLE / "test.json", 5)
    rows[3]["text"] = rows[3].pop("sentences")
    (bad / "test.json").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    shutil.copytree(SELECT, tmp_path / "tasks" / SELECT.name)
    with pytest.raises(AssayError, match=re.escape(f"{bad / 'test.json'} line 4: row lacks field 'sentences'")):
        generate(store, "chain-of-task", "x", {"source": str(tmp_path / "tasks")}, NOBODY)
    assert store.versions() == [] and list_llm_runs(store) == []


def test_attribute_extraction_against_the_real_server(store, tmp_path):
    # a generation task whose input is free text, not key#:#value: only the LLM can list its attributes
    from assay.core.llm.server import EMBEDDED_MODEL, serve

    task = tmp_path / "EN-Shop-Generate-title"
    task.mkdir()
    (task / "meta-info.json").write_text(json.dumps({"task": task.name, "defi": "product title generation",
                                                     "label_sep": ", "}), encoding="utf-8")
    row = {"sentences": "A red cotton T-shirt for men, size L, by Uniqlo.",
           "spans": [{"term": "Uniqlo Men's Red Cotton T-Shirt (L)", "start": 0, "end": 0}]}
    (task / "test.json").write_text(json.dumps(row) + "\n", encoding="utf-8")
    with serve(n_threads=1, n_ctx=1024) as srv:
        llm = LLMConfig(base_url=srv.base_url, temperature=0, seed=1, max_tokens=60, timeout_s=120)
        report = generate(store, "chain-of-task", "attr", {"source": str(task)}, llm, "cot-attr")
    assert report["requested"] == 1 and report["details"]["planned"] == report["records"] + len(report["dropped"])
    out = {r["meta"]["atomic_task"]: r for r in read(store, report["version"])}
    assert out["generation"]["output"] == row["spans"][0]["term"] and out["generation"]["meta"]["answer_from"] == "row"
    if report["failed"]:  # a reply without one "key: value" line is data, not a crash
        assert report["filtered"] == {"attribute_extraction_failed": 1} and "attribute_extraction" not in out
    else:
        rec = out["attribute_extraction"]
        assert rec["meta"]["answer_from"] == "llm" and rec["model"] == EMBEDDED_MODEL and rec["source"] == "cot-attr"
        assert row["sentences"] in rec["instruction"] and rec["meta"]["attributes"]
        for key, value in rec["meta"]["attributes"]:  # extracted from the input, not made up
            assert f"{key}: {value}" in rec["output"] and value.casefold() in row["sentences"].casefold()


def test_attribute_replies_must_come_from_the_input():
    from assay.pipelines.chain_of_task_families import parse_attributes

    text = "A red cotton T-shirt by Uniqlo."
    assert parse_attributes("1. Color: red\n- brand：Uniqlo.\nmaterial: wool", text) == [("Color", "red"),
                                                                                         ("brand", "Uniqlo")]
    with pytest.raises(ParseError):
        parse_attributes("color: blue\nmaterial: wool", text)  # the prompt's example, echoed


def test_a_version_as_the_source(store):
    # the seed rows imported first (the row text as the instruction, spans kept as metadata); what is
    # generated from a record names it as its parent, and the new version the seed version
    from assay.pipelines.importer import ImportConfig, import_source

    seed = import_source(store, str(SPAN / "test.json"), "seed", ImportConfig(mapping={"instruction": "sentences"}),
                         show_progress=False)
    report = generate(store, "chain-of-task", "from-seed", {"source": "seed", "meta": str(SPAN / "meta-info.json"),
                                                           "limit": 5, "tasks": ["span_detection", "ner"]}, NOBODY)
    seeds = {r["id"]: r for r in store.read(seed).to_dicts()}
    raw = {r["sentences"]: r for r in raw_rows(SPAN / "test.json")}
    out = read(store, report["version"])
    assert len(out) == 10 and store.resolve(report["version"]).parents == [seed.id]
    for r in out:
        (parent,) = r["parent_ids"]
        row = raw[seeds[parent]["instruction"]]  # the parent is the seed record the row came from
        assert row["sentences"] in r["instruction"]
        assert r["output"] == expected(r["meta"]["atomic_task"], r["meta"], row, r["instruction"], WORDS["en"])
    with pytest.raises(AssayError, match="needs `meta`"):
        generate(store, "chain-of-task", "x", {"source": "seed"}, NOBODY)
