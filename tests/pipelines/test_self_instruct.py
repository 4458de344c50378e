"""Self-Instruct (pipelines/self_instruct.py): the filters and parsers on known strings, a small run
against the real embedded llama.cpp server, and runs against tests/fault_server.py."""

from __future__ import annotations

import json
import shutil
from collections import Counter

import pytest
from fault_server import FaultServer
from helpers import write_jsonl

from assay.core.errors import AssayError, BadInput
from assay.core.llm import LLMConfig, ParseError
from assay.core.llm.journal import list_llm_runs, run_calls, run_failures, run_record
from assay.core.llm.server import EMBEDDED_MODEL, free_port, serve
from assay.pipelines.generate import PROMPTS_DIR, generate
from assay.pipelines.importer import import_source
from assay.pipelines.self_instruct import (
    Pool,
    SelfInstructConfig,
    check_instruction,
    load_seeds,
    parse_instance,
    parse_instance_output_first,
    parse_instructions,
    parse_yes_no,
    rouge_l,
)


# ---- ROUGE-L, the filters and the parsers (no server) ------------------------------------------
def test_rouge_l_on_known_strings():
    # LCS "the cat sat on mat" = 5 of 6 tokens each side: P = R = F = 5/6
    assert rouge_l("the cat sat on the mat", "the cat sat on a mat") == pytest.approx(5 / 6)
    assert rouge_l("The cat, sat!", "the CAT sat") == 1.0  # rouge-score tokenisation: case and punctuation
    assert rouge_l("a b c d", "e f g h") == 0.0 and rouge_l("", "a") == 0.0
    # P = 2/2, R = 2/4 -> F = 2PR/(P+R) = 2/3; symmetric
    assert rouge_l("write poem", "write a short poem") == pytest.approx(2 / 3)
    assert rouge_l("write a short poem", "write poem") == pytest.approx(2 / 3)
    # LCS respects order: "c b a" vs "a b c" share one token in order
    assert rouge_l("a b c", "c b a") == pytest.approx(1 / 3)


def test_pool_keeps_only_instructions_at_most_the_threshold():
    pool = Pool(["Write a short poem about the sea.", "Translate the sentence into French."])
    near = "Write a short poem about the ocean."
    score, who = pool.most_similar(near)
    assert score == pytest.approx(6 / 7) and who == "Write a short poem about the sea."
    assert score > SelfInstructConfig().rouge_threshold  # 0.7: the generator drops it
    far_score, _ = pool.most_similar("List three prime numbers greater than ten.")
    assert far_score <= 0.7


@pytest.mark.parametrize("text, reason", [
    ("Draw a picture of a cat.", "blacklisted:picture"),
    ("Describe the map of Europe in detail.", "blacklisted:map"),
    ("Go to the store and buy some milk.", "blacklisted:go to"),
    ("Summarise this audio clip for me.", "blacklisted:audio"),
    ("Open the file.", "too_short"),
    ("word " * 151, "too_long"),
    ("Write a program that sorts a list.", "program"),
    ("- Give three tips for sleeping better.", "starts_with_punctuation"),
    ("Éxplique la photosynthèse en trois phrases.", "non_ascii_start"),
    ("Mapping genomes: explain why it matters.", None),  # a blacklisted word only as a whole word
    ("Give three tips for staying healthy.", None),
])
def test_instruction_filters(text, reason):
    assert check_instruction(text, SelfInstructConfig()) == reason


def test_length_bounds_and_blacklist_come_from_the_config():
    cfg = SelfInstructConfig(min_words=2, max_words=5, blacklist=["poem"])
    assert check_instruction("Open the file.", cfg) is None
    assert check_instruction("Write a poem today.", cfg) == "blacklisted:poem"
    assert check_instruction("one two three four five six", cfg) == "too_long"


def test_parse_instructions_is_tolerant():
    reply = ("Summarize the article in one sentence.\n"  # continues the prompt's open "9."
             "10. Task 10: Translate the phrase\n   into Spanish.\n\n"
             "11) **Classify** the review as positive or negative.\n"
             "Task 12: Name three rivers in Africa.\n"
             "11) **Classify** the review as positive or negative.")
    assert parse_instructions(reply) == ["Summarize the article in one sentence.",
                                         "Translate the phrase into Spanish.",
                                         "Classify the review as positive or negative.",
                                         "Name three rivers in Africa."]
    assert parse_instructions('{"tasks": ["List two fruits.", "Name a planet."]}') == ["List two fruits.",
                                                                                    "Name a planet."]
    for empty in ("", "  \n ", "12.\n13."):
        with pytest.raises(ParseError):
            parse_instructions(empty)


def test_parse_instances_and_yes_no():
    assert parse_instance("Input: 2 + 2\nOutput: 4\n\nTask: next") == {"input": "2 + 2", "output": "4"}
    assert parse_instance("Input: <noinput>\nOutput: Stretch daily.") == {"input": "", "output": "Stretch daily."}
    assert parse_instance("Just an answer.") == {"input": "", "output": "Just an answer."}
    with pytest.raises(ParseError):
        parse_instance("Input: something\nOutput:   ")
    assert parse_instance_output_first("Positive\nInput: I loved it.") == {"input": "I loved it.",
                                                                          "output": "Positive"}
    assert parse_instance_output_first("Class label: spam\nInput: Win now!") == {"input": "Win now!",
                                                                                "output": "spam"}
    assert parse_yes_no("Yes.") is True and parse_yes_no("No, it is open-ended.") is False
    assert parse_yes_no("This task is not a classification task.") is False
    with pytest.raises(ParseError):
        parse_yes_no("Maybe.")


def test_seed_file_loading_and_empty_seeds(store, shared_data, tmp_path):
    label, seeds, parents = load_seeds(store, str(shared_data / "instructions" / "self_instruct_seed_tasks.jsonl"))
    assert len(seeds) == 175 and parents == []
    assert sum(s.is_classification for s in seeds) > 0 and all(s.ids for s in seeds)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(BadInput, match="empty.jsonl: empty: no seed tasks"):
        generate(store, "self-instruct", "si", {"seeds": str(empty), "n": 2},
                 LLMConfig(base_url="http://127.0.0.1:9/v1", model="m"), "si-empty")
    assert store.versions() == [] and list_llm_runs(store) == []  # nothing committed, nothing journalled


# ---- the real embedded server ------------------------------------------------------------------
@pytest.fixture(scope="module")
def server():
    with serve(n_threads=1, n_ctx=2048) as srv:
        yield srv


def test_self_instruct_against_the_real_server(server, store, shared_data):
    seeds_path = str(shared_data / "instructions" / "self_instruct_seed_tasks.jsonl")
    llm = LLMConfig(base_url=server.base_url, temperature=0, seed=1, max_tokens=64, concurrency=2, timeout_s=120)
    report = generate(store, "self-instruct", "si", {"seeds": seeds_path, "n": 2, "max_rounds": 2,
                                                     "new_per_prompt": 3}, llm, "si-real")
    rec = run_record(store, "si-real")
    assert report["requested"] == rec["requested"] == rec["ok"] + rec["failed"]
    assert report["failed"] == rec["failed"] == len(report["failures"])
    assert {f["key"] for f in report["failures"]} == {f["key"] for f in run_failures(store, "si-real")}
    assert all(f["raw"] for f in report["failures"] if f["error_kind"] in ("unparsable", "off_schema", "parse"))

    manifest = store.resolve(report["version"])
    assert manifest.ref == "si@1" and manifest.operation == "generate:self-instruct"
    assert manifest.params["run_id"] == "si-real" and manifest.params["config"]["rouge_threshold"] == 0.7
    out = store.read(manifest).to_dicts()
    assert 1 <= len(out) == report["records"] <= 2  # temperature 0 + seed: this model gives 2 here
    _, seeds, _ = load_seeds(store, seeds_path)
    seed_ids = {i for s in seeds for i in s.ids}
    seed_texts = [s.instruction for s in seeds]
    for r in out:
        assert (r["generator"], r["source"], r["model"]) == ("self-instruct", "si-real", EMBEDDED_MODEL)
        assert r["template"] in ("self_instruct_instances", "self_instruct_instances_output_first")
        assert json.loads(r["sampling_params"]) == {"temperature": 0, "top_p": 1.0, "max_tokens": 64, "seed": 1}
        assert r["parent_ids"] and set(r["parent_ids"]) <= seed_ids  # the seed tasks its prompt showed
        assert r["output"].strip()
        # the ROUGE-L filter held: no kept instruction is above 0.7 against any seed
        assert max(rouge_l(r["instruction"], t) for t in seed_texts) <= 0.7
        assert r["instruction"] in report["details"]["kept_instructions"]
        assert "is_classification" in json.loads(r["metadata"])


# ---- the fault server --------------------------------------------------------------------------
SEEDS = [
    ("Translate the sentence into French.", False),
    ("List three prime numbers greater than ten.", False),
    ("Classify the review as positive or negative.", True),
    ("Explain why the sky looks blue during the day.", False),
    ("Suggest a name for a small bakery near the sea.", False),
    ("Summarise the paragraph in one short sentence.", False),
    ("Tell me whether the number is even or odd.", True),
    ("Describe how to brew green tea properly.", False),
]


@pytest.fixture
def seed_file(tmp_path):
    return write_jsonl(tmp_path / "seeds.jsonl", [
        {"id": f"s{i}", "instruction": text, "instances": [{"input": "", "output": f"answer {i}"}],
         "is_classification": cls} for i, (text, cls) in enumerate(SEEDS)])


def prompts_dir(tmp_path, tasks_template: str):
    """The shipped prompts, with the tasks prompt replaced: the fault server echoes its prompt back,
    so a short prompt makes the echo a plausible new instruction."""
    d = tmp_path / "prompts"
    shutil.copytree(PROMPTS_DIR, d)
    (d / "self_instruct_tasks.j2").write_text(tasks_template, encoding="utf-8")
    return str(d)


def fault_llm(srv: FaultServer, **kw) -> LLMConfig:
    return LLMConfig(**{**dict(base_url=srv.base_url, model=srv.model, temperature=0, seed=1, timeout_s=0.5,
                               max_retries=0, backoff_s=0.01, concurrency=4), **kw})


def test_faults_are_counted_and_kept_with_their_raw_replies(store, seed_file, tmp_path):
    import_source(store, str(seed_file), "seeds")  # seeds from a version this time
    cfg = {"seeds": "seeds", "n": 6, "new_per_prompt": 1, "prompts_per_round": 4, "max_rounds": 3,
           "prompts_dir": prompts_dir(tmp_path, "{{ tasks[0] }} {{ tasks[1] }}")}
    with FaultServer(seed=4, fault_rate=0.5, timeout_sleep=0.8) as srv:
        report = generate(store, "self-instruct", "si", cfg, fault_llm(srv, cache=False), "si-faults")
        sent = srv.chat_requests()
    rec = run_record(store, "si-faults")
    assert rec["status"] == "done"
    assert report["requested"] == rec["requested"] == rec["ok"] + rec["failed"] == sent  # no retries
    assert report["failed"] == rec["failed"] == len(report["failures"]) > 0
    journal = {f["key"]: f for f in run_failures(store, "si-faults")}
    assert {f["key"] for f in report["failures"]} == set(journal)
    kinds = Counter(f["error_kind"] for f in report["failures"])
    assert len(kinds) >= 2, kinds  # the seeded faults hit several kinds
    for f in report["failures"]:
        assert f["error"] and (f["raw"] == journal[f["key"]]["raw"])
        if f["error_kind"] in ("http", "unparsable"):
            assert f["raw"], f  # the error body or the reply, as the server sent it
    # every stage ran (keys name the stage), and faults hit more than one of them
    assert {c["key"].split("/")[0] for c in run_calls(store, "si-faults")} == {"tasks", "classify", "instances"}
    assert len({k.split("/")[0] for k in journal}) >= 2

    manifest = store.resolve(report["version"])
    assert manifest.parents == [store.resolve("seeds").id]
    assert manifest.params["failed"] == report["failed"] and manifest.params["filtered"] == report["filtered"]
    out = store.read(manifest).to_dicts()
    kept = report["details"]["kept_instructions"]
    instance_failures = sum(1 for k in journal if k.startswith("instances/"))
    assert len(out) == report["records"] == len(kept) - instance_failures
    assert all(r["source"] == "si-faults" and r["model"] == srv.model and r["parent_ids"] for r in out)
    # the filters ran on what came back, and every drop has its reason
    assert sum(report["filtered"].values()) == len(report["dropped"])
    assert all(r["reason"] for r in report["dropped"])

    # the same run id again: every call is finished in the journal, so nothing is sent (nothing listens
    # there) and the same records come back as the next version
    again = generate(store, "self-instruct", "si", cfg,
                     fault_llm(srv, base_url=f"http://127.0.0.1:{free_port()}/v1", cache=False), "si-faults")
    assert (again["requested"], again["failed"], again["filtered"]) == (report["requested"], report["failed"],
                                                                        report["filtered"])
    assert store.resolve(again["version"]).content_hash == manifest.content_hash
    assert run_record(store, "si-faults")["http_requests"] == sent


def test_similar_instructions_are_dropped_by_rouge(store, seed_file, tmp_path):
    # the echoed prompt is "echo:" + a seed instruction: ROUGE-L L/(L+1) > 0.7 against that seed
    cfg = {"seeds": str(seed_file), "n": 2, "new_per_prompt": 1, "prompts_per_round": 2, "max_rounds": 2,
           "prompts_dir": prompts_dir(tmp_path, "{{ tasks[0] }}")}
    with FaultServer(fault_rate=0.0) as srv:
        report = generate(store, "self-instruct", "si", cfg, fault_llm(srv), "si-similar")
    assert (report["requested"], report["failed"], report["records"]) == (4, 0, 0)  # 2 rounds x 2 prompts
    assert report["filtered"] == {"similar": 4}
    seeds = [t for t, _ in SEEDS]
    for r in report["dropped"]:
        assert r["reason"] == "similar" and r["similar_to"] in seeds and r["rouge_l"] > 0.7
        assert r["instruction"] == "echo:" + r["similar_to"]
    assert store.resolve(report["version"]).records == 0  # an honest empty version: the run is recorded


def test_bad_options_fail_before_any_request(store, seed_file):
    with pytest.raises(AssayError, match=r"unknown option\(s\) nn"):
        generate(store, "self-instruct", "si", {"seeds": str(seed_file), "nn": 2})
    with pytest.raises(AssayError, match="no seeds given"):
        generate(store, "self-instruct", "si", {"n": 2})
    with pytest.raises(AssayError, match="unknown generator 'nope'"):
        generate(store, "nope", "si", {})
    assert store.versions() == [] and list_llm_runs(store) == []
