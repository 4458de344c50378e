"""The contamination auditor's code tier on the project's development set (auditors/contamination_devset.py):
rephrased HumanEval programs planted among the real CodeAlpaca records are found at the documented
goal on the held-out half, clean records stay clean, coverage names the items and the records,
and the evidence shows both programs with their canonical overlap."""

import polars as pl
import pytest
from auditor_helpers import codealpaca, human_eval
from helpers import SHARED_DATA, imported_version

from assay.auditors.contamination_devset import code_devset
from assay.auditors.runner import make_auditor, run_audit
from assay.core.audits import audit_columns, audit_detail


@pytest.fixture(scope="module")
def devset_audit(tmp_path_factory):
    from assay.core.store import Store

    store = Store(tmp_path_factory.mktemp("ws"))
    records = code_devset(codealpaca(SHARED_DATA), human_eval(), seed=0)
    version = imported_version(store, "devset", [r.row() for r in records])
    auditor = make_auditor("contamination", {"benchmarks": ["human-eval"], "semantic": False})
    summary = run_audit(store, version.id, [auditor])["auditors"]["contamination"]
    return store, version, records, summary, audit_columns(store, version).sort("_pos")


def scores(records, flagged, split):
    pos = [(r.item is not None, f) for r, f in zip(records, flagged) if r.split == split]
    tp = sum(1 for label, f in pos if label and f)
    fp = sum(1 for label, f in pos if f and not label)
    fn = sum(1 for label, f in pos if label and not f)
    clean = sum(1 for label, _ in pos if not label)
    return {"precision": tp / max(tp + fp, 1), "recall": tp / max(tp + fn, 1), "f1": 2 * tp / max(2 * tp + fp + fn, 1),
            "fp_rate": fp / clean}


def test_code_tier_meets_the_documented_goal_on_the_held_out_half(devset_audit):
    _, _, records, summary, cols = devset_audit
    flagged = cols["contamination_flagged"].to_list()
    # docs/auditors/contamination.md: code F1 >= 0.95 without a judge, <= 0.5% of clean records flagged;
    # the code tier alone (the n-gram tier also catches the rephrasings that kept a 13-word run of the docstring)
    for column in ("contamination_code", "contamination_flagged"):
        held = scores(records, cols[column].to_list(), "held-out")
        assert held["f1"] >= 0.95 and held["recall"] >= 0.95, (column, held)
        assert held["fp_rate"] <= 0.005, (column, held)
    # verbatim copies: every one, by the n-gram tier as well as the code tier
    verbatim = [(r, f, n) for r, f, n in zip(records, flagged, cols["contamination_ngram"]) if r.kind == "verbatim"]
    assert verbatim and all(f and n for _, f, n in verbatim)
    # the flagged planted records name their own item (HumanEval/55 and /63 are the same recurrence, so
    # allow a handful of look-alike items)
    named = [(r.item, i) for r, f, i in zip(records, flagged, cols["contamination_item"]) if f and r.item]
    assert sum(a == b for a, b in named) >= 0.97 * len(named)
    code = summary["code"]
    assert code["records"] == int(cols["contamination_code"].sum()) and code["benchmarks"]["human-eval"]["view"] == \
        "solutions"
    # CodeAlpaca has C, Java, JS, SQL and prose that only looks like code: counted, not hidden
    assert 0 < code["parse_fallbacks"] < code["records_with_code"] <= len(records)


def test_coverage_names_the_items_and_their_records(devset_audit):
    _, _, records, summary, cols = devset_audit
    cover = summary["coverage"]["human-eval"]
    planted = {r.item for r in records if r.item}
    assert cover["items"] == 164 and len(planted) == 164
    assert cover["items_covered"] >= 0.95 * 164 and cover["text"] == f"{cover['items_covered']} of 164 human-eval items"
    # items with a verbatim passage: every verbatim copy, and rephrasings that kept a 13-word run
    assert len({r.item for r in records if r.kind == "verbatim"}) <= cover["items_verbatim"] < cover["items_covered"]
    ids = dict(zip(cols["_pos"].to_list(), cols["id"].to_list())) if "id" in cols.columns else None
    by_item = {c["item"]: c for c in cover["covered"]}
    if ids is not None:
        for pos, r in enumerate(records):
            if r.item and cols["contamination_flagged"][pos] and cols["contamination_item"][pos] == r.item:
                assert ids[pos] in by_item[r.item]["records"] or by_item[r.item]["copies"] > 10
    bins = summary["near_threshold"]["code"]["bins"]
    assert len(bins) == 8 and bins[4]["from"] == pytest.approx(summary["code"]["threshold"])


def test_near_misses_include_programs_just_below_the_code_threshold(devset_audit):
    store, version, _, summary, cols = devset_audit
    t = summary["code"]["threshold"]
    below = cols.filter(~pl.col("contamination_flagged") & (pl.col("contamination_code_similarity") >= t - 0.1))
    assert below.height > 0  # CodeAlpaca has programs close to HumanEval ones
    near = audit_detail(store, version, "contamination", "near_misses")
    code_near = near.filter(pl.col("code_similarity") >= t - 0.1)
    assert code_near.height == min(below.height, 50) and (code_near["code_similarity"] < t).all()
    assert code_near["item"].str.starts_with("HumanEval/").all()


def test_each_item_lists_its_top_records_and_the_evidence_shows_both_programs(devset_audit):
    store, version, records, _, cols = devset_audit
    candidates = audit_detail(store, version, "contamination", "item_candidates")
    top = candidates.group_by("item").agg(pl.col("row"))
    rows_of = {i: set(r) for i, r in zip(top["item"], top["row"])}
    rephrased = [(pos, r.item) for pos, r in enumerate(records) if r.kind == "rephrased"]
    assert sum(pos in rows_of.get(item, ()) for pos, item in rephrased) >= 0.95 * len(rephrased)
    assert candidates.group_by("item").len()["len"].max() <= 5
    evidence = audit_detail(store, version, "contamination", "evidence")
    code = evidence.filter(pl.col("tier").str.contains("code") & ~pl.col("tier").str.contains("ngram"))
    assert code.height >= 10
    row = code.row(0, named=True)
    assert "def " in row["benchmark_code"] and row["record_text"]
    overlap = row["code_overlap"]
    assert overlap["aligned_item_tokens"] > 0.5 and overlap["longest_shared_run"]
    assert overlap["item_canonical"].startswith(("def", "from", "import"))


def test_a_benchmark_without_solutions_runs_on_its_prompts(store, tmp_path):
    prompt = ("def running_max(numbers):\n    best = numbers[0]\n    out = []\n    for n in numbers:\n"
              "        if n > best:\n            best = n\n        out.append(best)\n    return out\n")
    bench = tmp_path / "code_bench.jsonl"
    bench.write_text(pl.DataFrame({"task_id": ["T/1"], "prompt": [prompt]}).write_ndjson(), encoding="utf-8")
    renamed = prompt.replace("running_max", "prefix_peaks").replace("numbers", "xs").replace("best", "top")
    rows = [{"instruction": "Write the prefix maximum function.", "input": "", "output": renamed},
            {"instruction": "Print hello.", "input": "", "output": "int main() {\n  printf(\"hi\");\n  return 0;\n}"},
            {"instruction": "Tell me about cats.", "input": "", "output": "Cats are small furry animals."}]
    version = imported_version(store, "small", rows)
    summary = run_audit(store, version.id, [make_auditor(
        "contamination", {"benchmarks": [f"{bench}:prompt"], "semantic": False})])["auditors"]["contamination"]
    assert summary["code"]["benchmarks"]["code_bench"]["view"] == "prompts only"
    assert summary["code"]["records_with_code"] == 2 and summary["code"]["parse_fallbacks"] == 1
    cols = audit_columns(store, version).sort("_pos")
    assert cols["contamination_code"].to_list() == [True, False, False]
    assert cols["contamination_code_similarity"][0] == pytest.approx(1.0)
    assert summary["coverage"]["code_bench"]["text"] == "1 of 1 code_bench items"


def test_the_report_card_shows_coverage_and_the_bins(devset_audit):
    from assay.auditors.report import build_report, render_html

    store, version, _, summary, _ = devset_audit
    page = render_html(build_report(store, version.id))
    cover = summary["coverage"]["human-eval"]
    assert "Benchmark coverage" in page and cover["text"] in page
    assert cover["covered"][0]["item"] in page and "Similarity near each threshold" in page


def test_embedding_tier_meets_the_nl_goal_on_rephrased_gsm8k(store, tmp_path):
    """The natural-language half of the goal, on a subset (embedding is the slow part on 2 cores): 60
    rephrased questions from the first 150 of GSM8K test, planted among 200 real CodeAlpaca records,
    against those 150 questions, at the default threshold (chosen on the tuning half: docs)."""
    from auditor_helpers import gsm8k
    from helpers import write_jsonl

    from assay.auditors.contamination_devset import gsm8k_devset

    questions = gsm8k(SHARED_DATA)[:150]
    bench = write_jsonl(tmp_path / "gsm8k_head.jsonl", questions)  # same line numbers as the real file
    records = gsm8k_devset(codealpaca(SHARED_DATA, 200), questions, seed=1, n=60, name="gsm8k_head")
    version = imported_version(store, "nl", [r.row() for r in records])
    run_audit(store, version.id, [make_auditor("contamination", {"benchmarks": [str(bench)], "code": False})])
    cols = audit_columns(store, version).sort("_pos")
    for split in ("tune", "held-out"):
        got = scores(records, cols["contamination_flagged"].to_list(), split)
        assert got["f1"] >= 0.95 and got["fp_rate"] <= 0.005, (split, got)
    # the embedding tier alone: most rephrasings keep no 13-word run
    semantic = scores(records, cols["contamination_semantic"].to_list(), "held-out")
    assert semantic["recall"] >= 0.9 and semantic["fp_rate"] <= 0.005, semantic


def test_the_judge_against_the_real_embedded_server(store, tmp_path):
    """The judge flow with the project's own small model (its verdicts are poor; the flow is real): the
    code candidate is judged with a stored raw reply, and a second audit with the server gone gets the
    same verdicts from the LLM layer's journal and cache without asking again (the model named: without
    a name the client must ask the endpoint for it, and an unreachable endpoint is an error, never "clean")."""
    from helpers import write_jsonl

    from assay.core.llm.server import EMBEDDED_MODEL, serve

    program = ("def count_vowels(word):\n    total = 0\n    for ch in word:\n        if ch in 'aeiou':\n"
               "            total += 1\n    return total\n")
    bench = write_jsonl(tmp_path / "code.jsonl", [{"task_id": "C/1", "prompt": program}])
    renamed = program.replace("count_vowels", "vowel_tally").replace("total", "n").replace("ch", "c")
    version = imported_version(store, "j", [{"instruction": "Count the vowels.", "input": "", "output": renamed}])
    with serve(n_threads=1, n_ctx=2048) as srv:
        config = {"benchmarks": [f"{bench}:prompt"], "semantic": False, "llm_judge": True,
                  "judge_base_url": srv.base_url, "judge_model": EMBEDDED_MODEL}
        first = run_audit(store, version.id, [make_auditor("contamination", config)])["auditors"]["contamination"]
    judged = audit_detail(store, version, "contamination", "judge")
    assert judged.height == 1 and judged["data_type"][0] == "code" and judged["via"][0] == "code"
    assert judged["verdict"][0] in ("same", "different", "unjudged")
    if judged["verdict"][0] != "unjudged":
        assert judged["raw_reply"][0]
    again = run_audit(store, version.id, [make_auditor("contamination", config)])["auditors"]["contamination"]
    assert again["judge"] == first["judge"]
    assert audit_detail(store, version, "contamination", "judge")["verdict"].to_list() == judged["verdict"].to_list()


def test_pairs_scored_in_chunks_equal_one_pass(monkeypatch):
    """A batch's (record, item) pairs are scored in chunks of whole records: any chunk size gives the
    same columns."""
    import assay.auditors.contamination_code as code_tier
    from assay.auditors.benchmarks import benchmark_items, load_benchmarks

    items = benchmark_items(load_benchmarks(["human-eval"]))
    records = code_devset(codealpaca(SHARED_DATA, 300), human_eval(), seed=3, verbatim=5)
    texts = pl.Series([f"{r.instruction}\n\n{r.output}" for r in records])
    index = code_tier.CodeIndex(items, 4)
    whole = index.match(texts, 0.73, 5)
    monkeypatch.setattr(code_tier, "PAIR_BUDGET", 500)
    assert whole.equals(index.match(texts, 0.73, 5)) and whole["contamination_code"].sum() > 100


def test_llm_rephrasings_go_through_the_client_and_reject_what_does_not_parse(store):
    """Against the fault server: its echo of the request carries the original program (planted, counted
    as unchanged); a request it fails is dropped, not planted."""
    from fault_server import FaultServer

    from assay.auditors.contamination_devset import llm_rephrasings, parse_program
    from assay.core.llm import LLMConfig

    problems = [dict(p) for p in human_eval()[:3]]
    problems[2]["prompt"] += "    # [[always:500]]\n"  # the server's fault tag: this one fails
    with FaultServer(seed=0, fault_rate=0.0) as srv:
        records, counts = llm_rephrasings(store, problems, LLMConfig(base_url=srv.base_url, model=srv.model,
                                                                     max_retries=0))
    assert counts == {"asked": 3, "parsed": 2, "unchanged": 2}
    assert [r.item for r in records] == ["HumanEval/0", "HumanEval/1"]
    assert all(r.kind == "llm-rephrased" and r.split == "held-out" and "```python" in r.output for r in records)
    with pytest.raises(SyntaxError):
        parse_program("```python\ndef broken(:\n```")
    with pytest.raises(ValueError, match="no function"):
        parse_program("x = 1\ny = 2\n")
