"""Evol-Instruct (pipelines/evol_instruct.py): the elimination rules and parsers on known strings, a
small run against the real embedded llama.cpp server, runs against tests/fault_server.py, bad input."""

from __future__ import annotations

import json
import shutil
from collections import Counter

import pytest
from fault_server import FaultServer
from helpers import write_jsonl

from assay.core.errors import AssayError, BadInput, UnknownVersion
from assay.core.llm import LLMConfig, ParseError
from assay.core.llm.journal import list_llm_runs, run_calls, run_failures, run_record
from assay.core.llm.server import EMBEDDED_MODEL, free_port, serve
from assay.pipelines.evol_instruct import (
    OPERATIONS,
    EvolInstructConfig,
    check_answer,
    check_evolution,
    parse_answer,
    parse_evolved,
)
from assay.pipelines.generate import PROMPTS_DIR, generate, generator_options, load_prompt, render
from assay.pipelines.importer import import_source

CFG = EvolInstructConfig()
ORIGINAL = "Give three tips for staying healthy."


# ---- elimination rules and parsers (no server) -------------------------------------------------
@pytest.mark.parametrize("evolved, reason", [
    # no information gain: the same text (case and punctuation aside), or a near copy (ROUGE-L > 0.9)
    ("Give three tips for staying healthy.", "no_gain"),
    ("give THREE tips for staying healthy!", "no_gain"),
    # the evolving prompt's words copied into the evolved instruction
    ("#Rewritten Prompt#: Give three tips for staying healthy in winter.", "copied_prompt"),
    ("Give three tips for staying healthy, as in #The Given Prompt#.", "copied_prompt"),
    ("Rewrite the given   prompt so that it asks for five tips.", "copied_prompt"),
    ("#Created Prompt#\nList five rare herbs used in Tibetan cooking.", "copied_prompt"),
    # refusals
    ("Sorry, I cannot make this prompt more complex.", "refusal"),
    ("As an AI language model, I do not give health advice.", "refusal"),
    ("I can\u2019t rewrite that.", "refusal"),
    # too short, or only stop words and punctuation
    ("Be healthy.", "too_short"),
    ("What is it that they do, and how?", "too_short"),
    ("... --- !!!", "too_short"),
    # kept: real evolutions
    ("Give three tips for staying healthy while working night shifts, each backed by a study.", None),
    ("List five rare herbs used in Tibetan cooking and what each one tastes like.", None),
    ("Sorrynesses aside, describe the Krebs cycle step by step.", None),  # 'sorry' only as a whole word
])
def test_elimination_rules_on_known_strings(evolved, reason):
    assert check_evolution(evolved, ORIGINAL, CFG)[0] == reason


def test_no_gain_threshold_and_word_lists_come_from_the_config():
    near = "Give three tips for staying healthy in winter."  # 6 of 8 tokens shared: F = 12/14 = 0.857
    reason, score = check_evolution(near, ORIGINAL, CFG)
    assert reason is None and score == pytest.approx(12 / 14)
    assert check_evolution(near, ORIGINAL, EvolInstructConfig(similarity_threshold=0.8))[0] == "no_gain"
    assert check_evolution("Be healthy.", ORIGINAL, EvolInstructConfig(min_words=2))[0] is None
    custom = EvolInstructConfig(refusal_phrases=["unfortunately"], leak_markers=["#prompt#"])
    assert check_evolution("Unfortunately this cannot be made harder, friend.", ORIGINAL, custom)[0] == "refusal"
    assert check_evolution("Sorry to ask: list five rare herbs from Tibet.", ORIGINAL, custom)[0] is None
    assert check_evolution("#Prompt# list five rare herbs from Tibet.", ORIGINAL, custom)[0] == "copied_prompt"


def test_answer_refusal_is_the_papers_rule():
    assert check_answer("Sorry, I do not know.", CFG) == "answer_refusal"
    assert check_answer("Sorry " + "word " * 80, CFG) is None  # long answers that apologise are kept
    assert check_answer("Drink water, sleep eight hours, walk daily.", CFG) is None
    assert check_answer("Sorry, no.", EvolInstructConfig(answer_refusal_max_words=0)) is None


def test_parsers():
    assert parse_evolved("#Rewritten Prompt#:\nList five herbs.") == "List five herbs."
    assert parse_evolved("**Created Prompt:** List five herbs.") == "List five herbs."
    assert parse_evolved('  "List five herbs."  ') == "List five herbs."
    # a header anywhere but the start stays, for the copied_prompt rule to see
    assert parse_evolved("List five herbs.\n#Rewritten Prompt#: x") == "List five herbs.\n#Rewritten Prompt#: x"
    assert parse_evolved('{"answer": "List five herbs."}') == "List five herbs."  # a JSON reply
    assert parse_answer("[1, 2, 3]") == "[1, 2, 3]"  # JSON without a string: the text itself
    for bad in ("", "   ", "#Rewritten Prompt#:", '{"answer": "List fi'):
        with pytest.raises(ParseError):
            parse_evolved(bad)
    with pytest.raises(ParseError):
        parse_answer(" \n")


def test_every_operation_has_a_template_naming_only_instruction():
    for op in OPERATIONS:
        text = render(load_prompt(f"evol_{op}"), {"instruction": "Name a fruit."})
        assert "Name a fruit." in text
        assert text.rstrip().endswith(("#Rewritten Prompt#:", "#Created Prompt#:"))
    assert render(load_prompt("evol_answer"), {"instruction": "Name a fruit."}).strip() == "Name a fruit."
    assert {o["name"] for o in generator_options("evol-instruct")} >= {"source", "rounds", "operations",
                                                                       "similarity_threshold"}
    assert all(o["help"] for o in generator_options("evol-instruct"))


# ---- bad input: clear errors, nothing sent, nothing committed ----------------------------------
def test_bad_input_fails_before_any_request(store, tmp_path):
    llm = LLMConfig(base_url="http://127.0.0.1:9/v1", model="m")  # nothing listens: a request would fail
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(BadInput, match="empty.jsonl: empty: no instructions to evolve"):
        generate(store, "evol-instruct", "evo", {"source": str(empty)}, llm, "evo-empty")
    chat_only = write_jsonl(tmp_path / "chat.jsonl", [{"messages": [{"role": "user", "content": "hi"}]}])
    import_source(store, str(chat_only), "chat")
    with pytest.raises(BadInput, match="chat@1: empty"):
        generate(store, "evol-instruct", "evo", {"source": "chat"}, llm, "evo-chat")
    with pytest.raises(AssayError, match="no source given"):
        generate(store, "evol-instruct", "evo", {}, llm)
    with pytest.raises(UnknownVersion):
        generate(store, "evol-instruct", "evo", {"source": "nope"}, llm)
    with pytest.raises(AssayError, match=r"unknown operation\(s\) widen"):
        generate(store, "evol-instruct", "evo", {"source": "chat", "operations": ["deepen", "widen"]}, llm)
    with pytest.raises(AssayError, match="rounds must be >= 1"):
        generate(store, "evol-instruct", "evo", {"source": "chat", "rounds": 0}, llm)
    with pytest.raises(AssayError, match=r"unknown option\(s\) round\b"):
        generate(store, "evol-instruct", "evo", {"source": "chat", "round": 1}, llm)
    assert [v["dataset"] for v in store.versions()] == ["chat"] and list_llm_runs(store) == []


# ---- the real embedded server ------------------------------------------------------------------
SEEDS = [
    ("Give three tips for staying healthy.", ""),
    ("Translate the sentence into French.", "The cat is on the table."),
    ("Explain why the sky looks blue during the day.", ""),
    ("List three prime numbers greater than ten.", ""),
    ("Suggest a name for a small bakery near the sea.", ""),
    ("Summarise the paragraph in one short sentence.", "Rain fell all day, so the match was moved to Sunday."),
    ("Tell me whether the number is even or odd.", "17"),
    ("Describe how to brew green tea properly.", ""),
]


@pytest.fixture
def seeds(store, tmp_path):
    path = write_jsonl(tmp_path / "seeds.jsonl", [{"instruction": i, "input": x, "output": f"answer {k}"}
                                                  for k, (i, x) in enumerate(SEEDS)])
    import_source(store, str(path), "seeds")
    return store.resolve("seeds")


def seed_ids(store) -> set[str]:
    return set(store.read("seeds")["id"].to_list())


def check_accounting(store, report: dict, run_id: str) -> None:
    """records + eliminated == attempted; requested == ok + failed; every failure kept with its reply."""
    d = report["details"]
    assert report["records"] + sum(report["filtered"].values()) == d["attempted"]
    assert len(report["dropped"]) == sum(report["filtered"].values())
    assert Counter(e["reason"] for e in report["dropped"]) == report["filtered"]
    rec = run_record(store, run_id)
    assert report["requested"] == rec["requested"] == rec["ok"] + rec["failed"]
    assert report["failed"] == rec["failed"] == len(report["failures"])
    assert report["failed"] == report["filtered"].get("evolve_failed", 0) + report["filtered"].get("answer_failed", 0)
    journal = {f["key"]: f for f in run_failures(store, run_id)}
    assert {f["key"] for f in report["failures"]} == set(journal)
    for f in report["failures"]:
        assert f["error"] and f["raw"] == journal[f["key"]]["raw"]
        if f["error_kind"] in ("http", "unparsable"):
            assert f["raw"], f
    manifest = store.resolve(report["version"])
    assert manifest.operation == "generate:evol-instruct"
    assert manifest.params["filtered"] == report["filtered"] and manifest.params["attempted"] == d["attempted"]
    # each elimination by a text rule is reproducible from what was recorded
    for e in report["dropped"]:
        if e["reason"] in ("copied_prompt", "refusal", "too_short", "no_gain"):
            assert check_evolution(e["evolved"], e["parent"], EvolInstructConfig())[0] == e["reason"]


@pytest.fixture(scope="module")
def server():
    with serve(n_threads=1, n_ctx=2048) as srv:
        yield srv


def test_evol_instruct_against_the_real_server(server, store, seeds):
    llm = LLMConfig(base_url=server.base_url, temperature=0, seed=1, max_tokens=48, concurrency=2, timeout_s=120)
    report = generate(store, "evol-instruct", "evo", {"source": "seeds", "rounds": 1, "limit": 3}, llm, "evo-real")
    assert report["details"]["attempted"] == 3  # 3 seeds x 1 operation x 1 round
    check_accounting(store, report, "evo-real")
    manifest = store.resolve(report["version"])
    assert manifest.ref == "evo@1" and manifest.parents == [seeds.id]
    assert manifest.params["config"]["rounds"] == 1 and manifest.params["run_id"] == "evo-real"
    out = store.read(manifest).to_dicts()
    assert len(out) == report["records"] >= 1  # temperature 0 + seed: this model keeps 1 of 3 here
    parents = seed_ids(store)
    for r in out:
        meta = json.loads(r["metadata"])
        assert (r["generator"], r["source"], r["model"]) == ("evol-instruct", "evo-real", EMBEDDED_MODEL)
        assert r["template"] == f"evol_{meta['operation']}" and meta["operation"] in OPERATIONS
        assert json.loads(r["sampling_params"]) == {"temperature": 0, "top_p": 1.0, "max_tokens": 48, "seed": 1}
        assert len(r["parent_ids"]) == 1 and r["parent_ids"][0] in parents and meta["root_id"] == r["parent_ids"][0]
        assert meta["parent_instruction"] in [i for i, x in SEEDS[:3] if not x] + [f"{SEEDS[1][0]}\n\n{SEEDS[1][1]}"]
        assert r["output"].strip() and r["instruction"] != meta["parent_instruction"]
        assert check_evolution(r["instruction"], meta["parent_instruction"], EvolInstructConfig())[0] is None


# ---- the fault server --------------------------------------------------------------------------
def short_prompts(tmp_path) -> str:
    """The shipped prompts with short evolving templates: the fault server echoes its prompt back, so
    an echo of "instruction + extra words" is a plausible evolution (and not a copy of the long prompt)."""
    d = tmp_path / "prompts"
    shutil.copytree(PROMPTS_DIR, d)
    for op in OPERATIONS:
        (d / f"evol_{op}.j2").write_text(
            "{{ instruction }} Also " + op.replace("_", " ") + " with careful detailed justified reasoning "
            "about every single step please", encoding="utf-8")
    return str(d)


def fault_llm(srv: FaultServer, **kw) -> LLMConfig:
    return LLMConfig(**{**dict(base_url=srv.base_url, model=srv.model, temperature=0, seed=1, timeout_s=0.5,
                               max_retries=0, backoff_s=0.01, concurrency=4, cache=False), **kw})


def test_faults_are_counted_and_kept_with_their_raw_replies(store, seeds, tmp_path):
    cfg = {"source": "seeds", "rounds": 2, "ops_per_instruction": 2, "prompts_dir": short_prompts(tmp_path)}
    with FaultServer(seed=3, fault_rate=0.4, timeout_sleep=0.8) as srv:
        report = generate(store, "evol-instruct", "evo", cfg, fault_llm(srv), "evo-faults")
        sent = srv.chat_requests()
    assert run_record(store, "evo-faults")["status"] == "done"
    check_accounting(store, report, "evo-faults")
    assert report["requested"] == sent  # no retries: one request a call
    assert report["failed"] > 0 and len(Counter(f["error_kind"] for f in report["failures"])) >= 2
    assert {c["key"].split("/")[0] for c in run_calls(store, "evo-faults")} == {"evolve", "answer"}
    failed_stages = {f["key"].split("/")[0] for f in report["failures"]}
    assert failed_stages == {"evolve", "answer"}, failed_stages
    assert report["filtered"]["evolve_failed"] > 0 and report["filtered"]["answer_failed"] > 0

    out = store.read(report["version"]).to_dicts()
    metas = [json.loads(r["metadata"]) for r in out]
    assert {m["round"] for m in metas} == {1, 2} and report["records"] > 0
    # provenance: round 1 derives from seed records, round 2 from round-1 records (or a seed whose
    # round-1 evolutions were all eliminated, tried again)
    round1 = {r["id"] for r, m in zip(out, metas) if m["round"] == 1}
    for r, m in zip(out, metas):
        allowed = seed_ids(store) | (round1 if m["round"] == 2 else set())
        assert r["parent_ids"][0] in allowed and m["root_id"] in seed_ids(store)
        assert r["template"] == f"evol_{m['operation']}" and r["model"] == srv.model
        assert r["instruction"].startswith("echo:") and r["output"].startswith("echo:")
        assert (m["depth"] == 2) == (r["parent_ids"][0] in round1)

    # the same run id again: every call is finished in the journal, so nothing is sent (nothing
    # listens there) and the same records come back as the next version
    again = generate(store, "evol-instruct", "evo", cfg,
                     fault_llm(srv, base_url=f"http://127.0.0.1:{free_port()}/v1"), "evo-faults")
    assert (again["requested"], again["failed"], again["filtered"]) == (report["requested"], report["failed"],
                                                                        report["filtered"])
    assert store.resolve(again["version"]).content_hash == store.resolve(report["version"]).content_hash
    assert run_record(store, "evo-faults")["http_requests"] == sent


def test_echoes_of_the_shipped_prompts_are_eliminated_as_copies(store, seeds):
    # with the real prompts, the echo is the whole evolving prompt: "#The Given Prompt#" and all
    with FaultServer(fault_rate=0.0) as srv:
        report = generate(store, "evol-instruct", "evo", {"source": "seeds", "limit": 4}, fault_llm(srv), "evo-copy")
    assert (report["requested"], report["failed"], report["records"]) == (4, 0, 0)
    assert report["filtered"] == {"copied_prompt": 4}
    assert store.resolve(report["version"]).records == 0  # an honest empty version: the run is recorded


def test_cli_generate_evol_instruct(cli, store, seeds):
    with FaultServer(fault_rate=0.0) as srv:
        out = cli.json("generate", "evol-instruct", "--source", "seeds", "--rounds", "1", "--limit", "2",
                       "--operations", "breadth,deepen", "--name", "evo", "--base-url", srv.base_url,
                       "--model", srv.model)
    assert out["generator"] == "evol-instruct" and out["ref"] == "evo@1" and out["details"]["attempted"] == 2
    assert store.resolve("evo").params["config"]["operations"] == ["breadth", "deepen"]
